/* /chat events about messages: chat-message, typing, read, history.
 * Every handler checks the role and the resource before touching anything:
 * a chat of another org or another customer is not_found (SPEC §2). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "gateway/chat.h"
#include "gateway/chat_hooks.h"
#include "gateway/sio_packet.h"
#include "store/history.h"
#include "store/messages.h"

#define MAX_TEXT_BYTES 65536
#define MAX_CLIENT_ID 200
#define MAX_ATTACHMENTS 10

static bool is_customer(const chat_sock *cs)
{
    return cs->p.role == AUTH_ROLE_CUSTOMER;
}

static bool in_chat_room(chat_sock *cs, const char *chat_id)
{
    char *room = chat_room(cs->p.org, chat_id);
    bool in = sio_in_room(cs->s, room);
    free(room);
    return in;
}

/* ---- chat-message ------------------------------------------------------------------ */

static void on_append(void *ctx, pg_append_status st, const pg_message *msg,
                      const pg_chat_state *chat, const char *err)
{
    chat_op *op = ctx;
    chat_app *app = op->app;
    switch (st) {
    case PG_APPEND_OK:
    case PG_APPEND_REPLAY: {
        buf_t b;
        buf_init(&b);
        pg_message_to_json(msg, &b);
        char *fields = xmalloc(b.len + 16);
        snprintf(fields, b.len + 16, "\"message\":%s", b.data);
        chat_ack_ok(op->s, op->ack_id, fields); /* the ack answers first (SPEC 12.3) */
        free(fields);
        /* published even when the sender left before the commit: it is stored */
        if (st == PG_APPEND_OK) {
            chat_emit_message(app, chat->org_id, msg->chat_id, msg->seq, b.data);
            app->stats.messages++;
            chat_hook_message(app, chat->org_id, msg->chat_id, chat->status, msg->sender_type);
        }
        buf_free(&b);
        break;
    }
    case PG_APPEND_NOT_FOUND:
        chat_ack_err(op->s, op->ack_id, "not_found", "no such chat");
        break;
    case PG_APPEND_CLOSED:
        chat_ack_err(op->s, op->ack_id, "conflict", "the chat is closed");
        break;
    case PG_APPEND_STALE:
        chat_ack_err(op->s, op->ack_id, "conflict", "the chat changed hands");
        break;
    case PG_APPEND_BAD_ATTACHMENT:
        chat_ack_err(op->s, op->ack_id, "bad_request", "attachments must be your own uploads");
        break;
    case PG_APPEND_UNAVAILABLE:
        chat_ack_err(op->s, op->ack_id, "unavailable", "database unavailable, message not sent");
        break;
    default:
        log_warn("chat: append failed: %s", err ? err : "?");
        chat_ack_err(op->s, op->ack_id, "internal", "internal error");
    }
    chat_op_free(op);
}

/* op->json holds the validated payload {clientId, text, attachments?}. */
static void append(chat_sock *cs, chat_op *op, const char *chat_id)
{
    const cJSON *pl = op->json;
    const char *upload_ids[MAX_ATTACHMENTS];
    size_t nup = 0;
    const cJSON *att = cJSON_GetObjectItemCaseSensitive(pl, "attachments");
    for (const cJSON *a = cJSON_IsArray(att) ? att->child : NULL; a; a = a->next)
        upload_ids[nup++] = a->valuestring;
    pg_append_req req = {
        .chat_id = chat_id,
        .org_id = cs->p.org,
        .client_id = chat_json_str(pl, "clientId"),
        .sender_type = cs->role,
        .sender_id = is_customer(cs) ? cs->p.key : cs->p.sub,
        .sender_name = cs->p.name,
        .text = chat_json_str(pl, "text"),
        .upload_ids = nup ? upload_ids : NULL,
        .nupload_ids = nup,
        .owner_version = -1,
    };
    pg_append_message(cs->app->pg, &req, on_append, op);
}

static void on_open_chat(void *ctx, const PGresult *res, const char *err)
{
    chat_op *op = ctx;
    chat_sock *cs = chat_op_sock(op);
    if (err) {
        chat_op_fail(op, err, res);
        chat_op_free(op);
        return;
    }
    if (PQntuples(res) == 0) {
        chat_ack_err(op->s, op->ack_id, "not_found", "no such chat config");
        chat_op_free(op);
        return;
    }
    if (!cs) {
        chat_op_free(op);
        return;
    }
    chat_app *app = cs->app;
    const char *chat_id = PQgetvalue(res, 0, PQfnumber(res, "id"));
    bool created = PQgetvalue(res, 0, PQfnumber(res, "created"))[0] == 't';
    bool ai = PQgetvalue(res, 0, PQfnumber(res, "ai_enabled"))[0] == 't';
    int gcol = PQfnumber(res, "greeting");
    const char *greeting = PQgetisnull(res, 0, gcol) ? NULL : PQgetvalue(res, 0, gcol);
    char *room = chat_room(cs->p.org, chat_id);
    chat_identity_join_at(app, cs->identity_room, room, chat_id,
                          atoll(PQgetvalue(res, 0, PQfnumber(res, "last_seq"))));
    free(room);
    if (created) {
        /* a config without an assistant greets with a system message first (SPEC 12.12);
         * same chat id = same connection, so it gets seq 1 before the customer's */
        if (!ai && greeting && *greeting) {
            pg_append_req g = {.chat_id = chat_id, .org_id = cs->p.org, .sender_type = "system",
                               .text = greeting, .owner_version = -1};
            chat_op *gop = chat_op_new(op->s, -1, chat_id);
            pg_append_message(app->pg, &g, on_append, gop);
        }
        chat_hook_opened(app, cs, res);
    }
    append(cs, op, chat_id);
}

static const char OPEN_SQL[] = "SELECT * FROM chat_open($1, $2, $3, $4, $5, $6)";

static void on_owner_check(void *ctx, const PGresult *res, const char *err)
{
    chat_op *op = ctx;
    chat_sock *cs = chat_op_sock(op);
    if (err) {
        chat_op_fail(op, err, res);
    } else if (cs) {
        switch (chat_write_access(res, &cs->p)) {
        case CHAT_ACCESS_OK:
            op->next(cs, op); /* allowed: continue with what the op was for */
            return;
        case CHAT_ACCESS_NOT_FOUND:
            chat_ack_err(op->s, op->ack_id, "not_found", "no such chat");
            break;
        case CHAT_ACCESS_CLOSED:
            chat_ack_err(op->s, op->ack_id, "conflict", "the chat is closed");
            break;
        case CHAT_ACCESS_FORBIDDEN:
            chat_ack_err(op->s, op->ack_id, "forbidden", "only the assigned agent may do this");
            break;
        }
    }
    chat_op_free(op);
}

/* Runs next(cs, op) once the caller may write to op->chat_id: the owning
 * customer or the assigned agent (SPEC 12.8). A customer socket that is in
 * the chat room is the owner already (customers only join their own chats). */
static void with_write_access(chat_sock *cs, chat_op *op, void (*next)(chat_sock *, chat_op *))
{
    if (is_customer(cs) && in_chat_room(cs, op->chat_id)) {
        next(cs, op);
        return;
    }
    op->next = next;
    const char *params[2] = {op->chat_id, cs->p.org};
    pg_query(cs->app->pg, CHAT_OWNER_SQL, 2, params, on_owner_check, op);
}

const char *chat_message_invalid(const cJSON *pl, const char *raw, size_t rawlen)
{
    const char *client_id = chat_json_str(pl, "clientId");
    const char *text = chat_json_str(pl, "text");
    const cJSON *att = cJSON_GetObjectItemCaseSensitive(pl, "attachments");
    if (!cJSON_IsObject(pl))
        return "the payload must be an object {chatId?, clientId, text, attachments?}";
    if (!client_id || !*client_id || strlen(client_id) > MAX_CLIENT_ID)
        return "clientId must be a non-empty string of at most 200 bytes";
    if (!text || strlen(text) > MAX_TEXT_BYTES)
        return "text must be a string of at most 65536 bytes";
    /* a NUL cannot be stored in PostgreSQL text (and would be cut by the parser) */
    if (sio_json_has_nul(raw, rawlen))
        return "text may not contain NUL characters";
    if (att && !cJSON_IsNull(att)) {
        int n = 0;
        bool ok = cJSON_IsArray(att);
        for (const cJSON *a = ok ? att->child : NULL; a; a = a->next, n++)
            ok = ok && cJSON_IsString(a) && n < MAX_ATTACHMENTS;
        if (!ok)
            return "attachments must be at most 10 upload ids";
    }
    return NULL;
}

static void append_next(chat_sock *cs, chat_op *op)
{
    append(cs, op, op->chat_id);
}

void chat_on_message(chat_sock *cs, const sio_event *ev)
{
    const cJSON *pl = ev->args;
    const cJSON *chat_id_j = cJSON_GetObjectItemCaseSensitive(pl, "chatId");
    const char *why = chat_message_invalid(pl, ev->data, ev->len);
    if (why) {
        chat_ack_err(cs->s, ev->ack_id, "bad_request", why);
        return;
    }
    if (chat_id_j && !cJSON_IsNull(chat_id_j) && !cJSON_IsString(chat_id_j)) {
        chat_ack_err(cs->s, ev->ack_id, "bad_request", "chatId must be a string");
        return;
    }
    const char *chat_id = cJSON_IsString(chat_id_j) ? chat_id_j->valuestring : NULL;
    if (!chat_id && !is_customer(cs)) {
        chat_ack_err(cs->s, ev->ack_id, "bad_request", "chatId is required");
        return;
    }
    chat_op *op = chat_op_new(cs->s, ev->ack_id, chat_id);
    op->json = cJSON_Duplicate(pl, 1);
    if (!chat_id) {
        const char *params[6] = {cs->p.org, cs->config_id, cs->p.key, cs->p.sub, cs->p.name,
                                 cs->p.email};
        pg_query(cs->app->pg, OPEN_SQL, 6, params, on_open_chat, op);
        return;
    }
    with_write_access(cs, op, append_next);
}

/* ---- typing ------------------------------------------------------------------------ */

/* A customer's typing start: its own closed chat is conflict; everything else as for any write. */
static void on_typing_check(void *ctx, const PGresult *res, const char *err)
{
    chat_op *op = ctx;
    chat_sock *cs = err ? NULL : chat_op_sock(op);
    if (cs && chat_write_access(res, &cs->p) == CHAT_ACCESS_OK &&
        !strcmp(PQgetvalue(res, 0, 2), "closed")) {
        chat_ack_err(op->s, op->ack_id, "conflict", "the chat is closed");
        chat_op_free(op);
        return;
    }
    on_owner_check(ctx, res, err);
}

static void typing_next(chat_sock *cs, chat_op *op)
{
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{\"chatId\":");
    buf_json_str(&b, op->chat_id, strlen(op->chat_id));
    buf_printf(&b, ",\"from\":{\"type\":\"%s\",\"id\":", cs->role);
    const char *id = is_customer(cs) ? cs->p.key : cs->p.sub;
    buf_json_str(&b, id, strlen(id));
    buf_puts(&b, ",\"name\":");
    if (cs->p.name)
        buf_json_str(&b, cs->p.name, strlen(cs->p.name));
    else
        buf_puts(&b, "null");
    buf_printf(&b, "},\"isTyping\":%s}", op->num ? "true" : "false");
    char *room = chat_room(cs->p.org, op->chat_id);
    chat_emit_room(cs->app, room, "typing", b.data, cs->s, true);
    free(room);
    buf_free(&b);
    chat_ack_ok(op->s, op->ack_id, NULL);
    chat_op_free(op);
}

void chat_on_typing(chat_sock *cs, const sio_event *ev)
{
    const char *chat_id = chat_json_str(ev->args, "chatId");
    const cJSON *is = cJSON_GetObjectItemCaseSensitive(ev->args, "isTyping");
    if (!chat_id || !cJSON_IsBool(is)) {
        chat_ack_err(cs->s, ev->ack_id, "bad_request", "need {chatId, isTyping}");
        return;
    }
    chat_op *op = chat_op_new(cs->s, ev->ack_id, chat_id);
    op->num = cJSON_IsTrue(is);
    if (!op->num || !is_customer(cs)) {
        with_write_access(cs, op, typing_next); /* an agent's check sees a closed chat */
        return;
    }
    /* A customer starting to type: its own chat must still be open (SPEC 12.8: writing into a
     * closed chat is conflict). The room shortcut of with_write_access cannot tell, a customer's
     * sockets stay in a closed chat's room; a typing start is rare enough to ask PostgreSQL. */
    op->next = typing_next;
    const char *params[2] = {op->chat_id, cs->p.org};
    pg_query(cs->app->pg, CHAT_OWNER_SQL, 2, params, on_typing_check, op);
}

/* ---- read -------------------------------------------------------------------------- */

static void on_read(void *ctx, const PGresult *res, const char *err)
{
    chat_op *op = ctx;
    chat_sock *cs = chat_op_sock(op);
    if (err) {
        chat_op_fail(op, err, res);
    } else if (PQntuples(res) != 1 || PQgetvalue(res, 0, 0)[0] != 't') {
        chat_ack_err(op->s, op->ack_id, "not_found", "no such chat");
    } else {
        const char *seq = PQgetvalue(res, 0, 2);
        char fields[64];
        snprintf(fields, sizeof fields, "\"seq\":%s", seq);
        chat_ack_ok(op->s, op->ack_id, fields);
        if (PQgetvalue(res, 0, 1)[0] == 't' && cs) {
            buf_t b;
            buf_init(&b);
            buf_puts(&b, "{\"chatId\":");
            buf_json_str(&b, op->chat_id, strlen(op->chat_id));
            buf_printf(&b, ",\"by\":{\"type\":\"%s\",\"id\":", cs->role);
            const char *id = is_customer(cs) ? cs->p.key : cs->p.sub;
            buf_json_str(&b, id, strlen(id));
            buf_printf(&b, "},\"seq\":%s}", seq);
            char *room = chat_room(cs->p.org, op->chat_id);
            chat_emit_room(cs->app, room, "read", b.data, NULL, false);
            free(room);
            buf_free(&b);
        }
    }
    chat_op_free(op);
}

void chat_on_read(chat_sock *cs, const sio_event *ev)
{
    const char *chat_id = chat_json_str(ev->args, "chatId");
    int64_t seq;
    if (!chat_id || chat_json_int(ev->args, "seq", &seq) != 0) {
        chat_ack_err(cs->s, ev->ack_id, "bad_request", "need {chatId, seq}");
        return;
    }
    chat_op *op = chat_op_new(cs->s, ev->ack_id, chat_id);
    char seqs[32];
    snprintf(seqs, sizeof seqs, "%lld", (long long)seq);
    const char *params[6] = {chat_id, cs->p.org, is_customer(cs) ? cs->p.key : NULL, cs->role,
                             is_customer(cs) ? cs->p.key : cs->p.sub, seqs};
    pg_query(cs->app->pg, "SELECT * FROM chat_read($1, $2, $3, $4, $5, $6::bigint)", 6, params,
             on_read, op);
}

/* ---- history ----------------------------------------------------------------------- */

/* op->num = limit; op->str = "after" or "before". */
static void on_history(void *ctx, const PGresult *res, const char *err)
{
    chat_op *op = ctx;
    if (err) {
        chat_op_fail(op, err, res);
        chat_op_free(op);
        return;
    }
    bool after = !strcmp(op->str, "after");
    buf_t b;
    buf_init(&b);
    if (history_render(res, op->num, after, &b))
        chat_ack_ok(op->s, op->ack_id, b.data);
    else
        chat_ack_err(op->s, op->ack_id, "not_found", "no such chat");
    buf_free(&b);
    chat_op_free(op);
}

void chat_on_history(chat_sock *cs, const sio_event *ev)
{
    const char *chat_id = chat_json_str(ev->args, "chatId");
    int64_t before = 0, after = 0, limit = 50;
    int rb = chat_json_int(ev->args, "beforeSeq", &before);
    int ra = chat_json_int(ev->args, "afterSeq", &after);
    int rl = chat_json_int(ev->args, "limit", &limit);
    if (!chat_id || rb < 0 || ra < 0 || rl < 0 || (rb == 0 && ra == 0)) {
        chat_ack_err(cs->s, ev->ack_id, "bad_request",
                     "need {chatId, beforeSeq? | afterSeq?, limit?}");
        return;
    }
    if (limit < 1)
        limit = 1;
    if (limit > 100)
        limit = 100;
    chat_op *op = chat_op_new(cs->s, ev->ack_id, chat_id);
    op->num = limit;
    op->str = xstrdup(ra == 0 ? "after" : "before");
    char cursor[32], lim[32];
    snprintf(cursor, sizeof cursor, "%lld",
             ra == 0 ? (long long)after : rb == 0 ? (long long)before : 9007199254740991LL);
    snprintf(lim, sizeof lim, "%lld", (long long)limit + 1);
    const char *params[5] = {chat_id, cs->p.org, is_customer(cs) ? cs->p.key : NULL, cursor, lim};
    pg_query(cs->app->pg, history_sql(ra == 0), 5, params, on_history, op);
}
