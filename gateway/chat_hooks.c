/* Routing hooks of the /chat core. Until the queue and presence land (issues
 * 4 and 5) a closed chat needs no routing work beyond what chat_close() did in
 * PostgreSQL. */
#include "gateway/chat_hooks.h"

void chat_hook_closed(chat_app *app, const char *org, const char *chat_id,
                      const char *prev_status, const char *agent_id)
{
    (void)app;
    (void)org;
    (void)chat_id;
    (void)prev_status;
    (void)agent_id;
}
