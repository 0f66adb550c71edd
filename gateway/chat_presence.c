/* Presence of /chat sockets and identities in Redis (issue 4). Not built yet:
 * these entry points do nothing, so nothing is tracked. */
#include "gateway/chat_hooks.h"

void presence_start(chat_app *app) { (void)app; }
void presence_stop(chat_app *app) { (void)app; }
void presence_on_connect(chat_sock *cs) { (void)cs; }
void presence_on_disconnect(chat_sock *cs) { (void)cs; }
bool presence_on_expired(chat_app *app, const char *key, size_t len)
{
    (void)app, (void)key, (void)len;
    return false;
}

void chat_on_set_status(chat_sock *cs, const sio_event *ev)
{
    chat_ack_err(cs->s, ev->ack_id, "unavailable", "presence is not implemented yet");
}
