/* Dispatch of the /chat core's hooks to presence, timers and queue. */
#include <string.h>

#include "gateway/chat_hooks.h"

void chat_hooks_start(chat_app *app)
{
    presence_start(app);
    timers_start(app);
    queue_start(app);
}

void chat_hooks_stop(chat_app *app)
{
    presence_stop(app);
    timers_stop(app);
    queue_stop(app);
}

void chat_hook_connected(chat_sock *cs)
{
    presence_on_connect(cs);
    queue_on_connect(cs);
}

void chat_hook_disconnected(chat_sock *cs)
{
    presence_on_disconnect(cs);
}

void chat_hook_opened(chat_app *app, chat_sock *cs, const PGresult *row)
{
    queue_on_opened(app, cs, row);
}

void chat_hook_message(chat_app *app, const char *org, const char *chat_id,
                       const char *chat_status, const char *sender_type)
{
    timers_on_message(app, org, chat_id, chat_status, sender_type);
    queue_on_message(app, org, chat_id, chat_status, sender_type);
}

void chat_hook_closed(chat_app *app, const char *org, const char *chat_id,
                      const char *prev_status, const char *agent_id)
{
    queue_on_closed(app, org, chat_id, prev_status, agent_id);
    timers_on_closed(app, org, chat_id);
}

void chat_hook_expired(chat_app *app, const char *key, size_t len)
{
    if (presence_on_expired(app, key, len))
        return;
    if (timers_on_expired(app, key, len))
        return;
    queue_on_expired(app, key, len);
}
