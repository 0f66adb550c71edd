/* /chat lifecycle events of issue 3: close-chat, observe-chat, unobserve-chat.
 * (Agent routing operations live in gateway/chat_agent.c.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "gateway/chat.h"
#include "gateway/chat_hooks.h"

/* ---- close-chat ---------------------------------------------------------------------- */

/* Announces a closed chat: system message, chat-state, chat-closed, then the
 * routing side (queue, capacity, timers). Shared with inactivity closes. */
void chat_announce_closed(chat_app *app, const char *org, const char *chat_id, const PGresult *res,
                          const char *reason)
{
    int c_id = PQfnumber(res, "msg_id"), c_seq = PQfnumber(res, "msg_seq"),
        c_at = PQfnumber(res, "msg_created_at");
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{\"id\":");
    buf_json_str(&b, PQgetvalue(res, 0, c_id), strlen(PQgetvalue(res, 0, c_id)));
    buf_puts(&b, ",\"chatId\":");
    buf_json_str(&b, chat_id, strlen(chat_id));
    buf_printf(&b, ",\"seq\":%s,\"sender\":{\"type\":\"system\"},\"text\":",
               PQgetvalue(res, 0, c_seq));
    const char *text = !strcmp(reason, "customer")   ? "The customer closed the chat"
                       : !strcmp(reason, "agent")    ? "The agent closed the chat"
                       : !strcmp(reason, "inactivity") ? "The chat was closed for inactivity"
                                                       : "The chat was closed";
    buf_json_str(&b, text, strlen(text));
    buf_puts(&b, ",\"attachments\":[],\"createdAt\":");
    buf_json_str(&b, PQgetvalue(res, 0, c_at), strlen(PQgetvalue(res, 0, c_at)));
    buf_putc(&b, '}');
    chat_emit_message(app, org, chat_id, atoll(PQgetvalue(res, 0, c_seq)), b.data);
    chat_emit_state(app, org, chat_id, "closed", NULL, NULL);
    buf_reset(&b);
    buf_puts(&b, "{\"chatId\":");
    buf_json_str(&b, chat_id, strlen(chat_id));
    buf_printf(&b, ",\"reason\":\"%s\"}", reason);
    char *room = chat_room(org, chat_id);
    chat_emit_room(app, room, "chat-closed", b.data, NULL, false);
    free(room);
    buf_free(&b);
    int c_prev = PQfnumber(res, "prev_status"), c_agent = PQfnumber(res, "agent_id");
    chat_hook_closed(app, org, chat_id, PQgetvalue(res, 0, c_prev),
                     PQgetisnull(res, 0, c_agent) ? NULL : PQgetvalue(res, 0, c_agent));
}

static void on_close(void *ctx, const PGresult *res, const char *err)
{
    chat_op *op = ctx;
    if (err) {
        chat_op_fail(op, err, res);
        chat_op_free(op);
        return;
    }
    const char *result = PQntuples(res) ? PQgetvalue(res, 0, 0) : "not_found";
    if (!strcmp(result, "ok")) {
        chat_ack_ok(op->s, op->ack_id, NULL);
        chat_announce_closed(op->app, op->str, op->chat_id, res, op->json->valuestring);
    } else if (!strcmp(result, "forbidden")) {
        chat_ack_err(op->s, op->ack_id, "forbidden", "only the assigned agent may close it");
    } else if (!strcmp(result, "conflict")) {
        chat_ack_err(op->s, op->ack_id, "conflict", "the chat is already closed");
    } else {
        chat_ack_err(op->s, op->ack_id, "not_found", "no such chat");
    }
    chat_op_free(op);
}

void chat_on_close(chat_sock *cs, const sio_event *ev)
{
    const char *chat_id = chat_json_str(ev->args, "chatId");
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(ev->args, "reason");
    if (!chat_id || (reason && !cJSON_IsString(reason) && !cJSON_IsNull(reason))) {
        chat_ack_err(cs->s, ev->ack_id, "bad_request", "need {chatId, reason?}");
        return;
    }
    bool customer = cs->p.role == AUTH_ROLE_CUSTOMER;
    chat_op *op = chat_op_new(cs->s, ev->ack_id, chat_id);
    op->str = xstrdup(cs->p.org);
    op->json = cJSON_CreateString(customer ? "customer" : "agent"); /* close_reason */
    const char *text = customer ? "The customer closed the chat" : "The agent closed the chat";
    const char *params[6] = {chat_id, cs->p.org, customer ? cs->p.key : NULL,
                             customer ? NULL : cs->p.sub, op->json->valuestring, text};
    pg_query_opts q = {.sql = "SELECT * FROM chat_close($1, $2, $3, $4, $5, $6)",
                       .nparams = 6, .params = params, .route_key = chat_id};
    pg_query_ex(cs->app->pg, &q, on_close, op);
}

/* ---- observe / unobserve ------------------------------------------------------------- */

static void on_observe(void *ctx, const PGresult *res, const char *err)
{
    chat_op *op = ctx;
    chat_sock *cs = chat_op_sock(op);
    if (err) {
        chat_op_fail(op, err, res);
    } else if (PQntuples(res) == 0) {
        chat_ack_err(op->s, op->ack_id, "not_found", "no such chat");
    } else if (cs) {
        char *room = chat_room(cs->p.org, op->chat_id);
        bool observe = op->num == 1;
        bool assigned_to_me = !PQgetisnull(res, 0, 1) && !strcmp(PQgetvalue(res, 0, 1), cs->p.sub) &&
                              !strcmp(PQgetvalue(res, 0, 2), "assigned");
        if (!observe && assigned_to_me) {
            chat_ack_err(op->s, op->ack_id, "conflict", "you are assigned to this chat");
        } else {
            if (observe) {
                chat_identity_join_at(cs->app, cs->identity_room, room, op->chat_id,
                                      atoll(PQgetvalue(res, 0, 3)));
            } else {
                chat_identity_leave(cs->app, cs->identity_room, room);
            }
            char *fields = xmalloc(strlen(PQgetvalue(res, 0, 0)) + 16);
            sprintf(fields, "\"chat\":%s", PQgetvalue(res, 0, 0));
            chat_ack_ok(op->s, op->ack_id, observe ? fields : NULL);
            free(fields);
        }
        free(room);
    }
    chat_op_free(op);
}

static void observe(chat_sock *cs, const sio_event *ev, bool on)
{
    const char *chat_id = chat_json_str(ev->args, "chatId");
    if (!chat_id) {
        chat_ack_err(cs->s, ev->ack_id, "bad_request", "need {chatId}");
        return;
    }
    chat_op *op = chat_op_new(cs->s, ev->ack_id, chat_id);
    op->num = on;
    const char *params[2] = {chat_id, cs->p.org};
    pg_query(cs->app->pg,
             "SELECT chat_object(c)::text, c.agent_id, c.status, c.last_seq FROM chats c"
             " WHERE c.id = $1 AND c.org_id = $2",
             2, params, on_observe, op);
}

void chat_on_observe(chat_sock *cs, const sio_event *ev)
{
    observe(cs, ev, true);
}

void chat_on_unobserve(chat_sock *cs, const sio_event *ev)
{
    observe(cs, ev, false);
}
