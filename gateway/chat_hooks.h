/* Where the /chat core hands over to presence, inactivity timers and routing
 * (issues 4 and 5). The core calls these at fixed points; each module keeps
 * its own state in Redis (layout: store/keys.h).
 *
 *   gateway/chat_presence.c  presence_*   (sockets, identities, online/away/offline)
 *   gateway/chat_timers.c    timers_*     (inactivity warn/close on keyspace expiry)
 *   gateway/chat_queue.c     queue_*      (skill-routed queue, capacity, positions)
 *   gateway/chat_agent.c     agent event handlers (pick-next, transfer-chat, ...)
 */
#ifndef CHATD_CHAT_HOOKS_H
#define CHATD_CHAT_HOOKS_H
#include "gateway/chat.h"

/* ---- called by the core ---------------------------------------------------------- */

/* Once at start, after Redis is attached: subscriptions, periodic timers. */
void chat_hooks_start(chat_app *app);
/* Once at shutdown, before the loop drains: stop timers, close handles. */
void chat_hooks_stop(chat_app *app);
/* A socket was accepted (rooms joined, `session` sent) / left (cs still valid). */
void chat_hook_connected(chat_sock *cs);
void chat_hook_disconnected(chat_sock *cs);
/* A chat was created by a customer's first message. row: the chat_open() result
 * (columns id, status, config_id, skills, priority, created_at, customer_name ...).
 * Must emit the chat's first `chat-state` (ai, or queued with its queue position). */
void chat_hook_opened(chat_app *app, chat_sock *cs, const PGresult *row);
/* A message was persisted (and broadcast). chat_status is the chat's status then. */
void chat_hook_message(chat_app *app, const char *org, const char *chat_id,
                       const char *chat_status, const char *sender_type);
/* A chat was closed (any reason): dequeue it, free the agent's capacity, stop
 * its timers. prev_status is the status before the close; agent_id may be NULL. */
void chat_hook_closed(chat_app *app, const char *org, const char *chat_id,
                      const char *prev_status, const char *agent_id);
/* A Redis key expired (keyspace notification `expired`). */
void chat_hook_expired(chat_app *app, const char *key, size_t len);

/* Announce a closed chat (system message, chat-state, chat-closed, hooks);
 * res is a chat_close() result row. */
void chat_announce_closed(chat_app *app, const char *org, const char *chat_id,
                          const PGresult *res, const char *reason);

/* ---- implemented by the modules ------------------------------------------------- */

void presence_start(chat_app *app);
void presence_stop(chat_app *app);
void presence_on_connect(chat_sock *cs);
void presence_on_disconnect(chat_sock *cs);
/* Returns true when the key was a presence key (handled). */
bool presence_on_expired(chat_app *app, const char *key, size_t len);

void timers_start(chat_app *app);
void timers_stop(chat_app *app);
void timers_on_message(chat_app *app, const char *org, const char *chat_id, const char *status,
                       const char *sender_type);
void timers_on_closed(chat_app *app, const char *org, const char *chat_id);
bool timers_on_expired(chat_app *app, const char *key, size_t len);
/* Inactivity timers of an assigned chat (SPEC 12.14), for the routing code:
 * arm (or reset) at assignment (pick-next, takeover, transfer to an agent);
 * disarm when the chat leaves `assigned` (transfer to the queue, resume-ai).
 * Fire and forget: Redis failures are logged. */
void timers_arm(chat_app *app, const char *org, const char *chat_id);
void timers_disarm(chat_app *app, const char *org, const char *chat_id);

void queue_start(chat_app *app);
void queue_stop(chat_app *app);
void queue_on_opened(chat_app *app, chat_sock *cs, const PGresult *row);
/* An agent socket connected: remembers its display name for transfers from other nodes. */
void queue_on_connect(chat_sock *cs);
void queue_on_message(chat_app *app, const char *org, const char *chat_id, const char *status,
                      const char *sender_type);
void queue_on_closed(chat_app *app, const char *org, const char *chat_id,
                     const char *prev_status, const char *agent_id);
bool queue_on_expired(chat_app *app, const char *key, size_t len);

#endif
