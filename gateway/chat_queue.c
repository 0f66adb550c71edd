/* The skill-routed queue of waiting chats (issue 5). Not built yet: a new chat
 * only announces its status. */
#include <string.h>

#include "gateway/chat_hooks.h"

void queue_start(chat_app *app) { (void)app; }
void queue_stop(chat_app *app) { (void)app; }

void queue_on_opened(chat_app *app, chat_sock *cs, const PGresult *row)
{
    const char *chat_id = PQgetvalue(row, 0, PQfnumber(row, "id"));
    const char *status = PQgetvalue(row, 0, PQfnumber(row, "status"));
    chat_emit_state(app, cs->p.org, chat_id, status, NULL, NULL);
}

void queue_on_message(chat_app *app, const char *org, const char *chat_id, const char *status,
                      const char *sender_type)
{
    (void)app, (void)org, (void)chat_id, (void)status, (void)sender_type;
}

void queue_on_closed(chat_app *app, const char *org, const char *chat_id,
                     const char *prev_status, const char *agent_id)
{
    (void)app, (void)org, (void)chat_id, (void)prev_status, (void)agent_id;
}

bool queue_on_expired(chat_app *app, const char *key, size_t len)
{
    (void)app, (void)key, (void)len;
    return false;
}
