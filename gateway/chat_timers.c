/* Inactivity timers of assigned chats on Redis key expiry (issue 4). Not built
 * yet: no timer is armed. */
#include "gateway/chat_hooks.h"

void timers_start(chat_app *app) { (void)app; }
void timers_stop(chat_app *app) { (void)app; }
void timers_on_message(chat_app *app, const char *org, const char *chat_id, const char *status,
                       const char *sender_type)
{
    (void)app, (void)org, (void)chat_id, (void)status, (void)sender_type;
}
void timers_on_closed(chat_app *app, const char *org, const char *chat_id)
{
    (void)app, (void)org, (void)chat_id;
}
bool timers_on_expired(chat_app *app, const char *key, size_t len)
{
    (void)app, (void)key, (void)len;
    return false;
}
