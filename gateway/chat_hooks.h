/* Where the /chat core hands over to routing (queue, capacity, presence,
 * inactivity timers). Implemented in gateway/chat_hooks.c. */
#ifndef CHATD_CHAT_HOOKS_H
#define CHATD_CHAT_HOOKS_H
#include "gateway/chat.h"

/* A chat was closed (any reason): dequeue it, free the agent's capacity, stop
 * its timers. prev_status is the status before the close; agent_id may be NULL. */
void chat_hook_closed(chat_app *app, const char *org, const char *chat_id,
                      const char *prev_status, const char *agent_id);
/* Announce a closed chat (system message, chat-state, chat-closed, hooks);
 * res is a chat_close() result row. */
void chat_announce_closed(chat_app *app, const char *org, const char *chat_id,
                          const PGresult *res, const char *reason);

#endif
