/* Agent console operations and the customer's request-agent (issue 5). Not
 * built yet: each answers `unavailable` so a client is never left waiting. */
#include "gateway/chat_hooks.h"

static void not_yet(chat_sock *cs, const sio_event *ev)
{
    chat_ack_err(cs->s, ev->ack_id, "unavailable", "routing is not implemented yet");
}

void chat_on_pick_next(chat_sock *cs, const sio_event *ev) { not_yet(cs, ev); }
void chat_on_transfer(chat_sock *cs, const sio_event *ev) { not_yet(cs, ev); }
void chat_on_request_agent(chat_sock *cs, const sio_event *ev) { not_yet(cs, ev); }
