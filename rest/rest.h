/* REST API under /chat/... (SPEC §9): bearer JWT, JSON in and out, errors
 * {"error":{"code","message"}} with the matching status, CORS by the shell. */
#ifndef CHATD_REST_H
#define CHATD_REST_H
#include "gateway/chat.h"

/* Registers the /chat/ routes with the HTTP shell. */
void rest_setup(chat_app *app);

#endif
