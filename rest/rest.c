/* REST routes of issue 3: chats and messages. The same role rules as the
 * socket: a customer sees only its own chats, an agent only its org's; a chat
 * of anyone else is 404 (never reveal that it exists). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "gateway/http.h"
#include "gateway/chat_hooks.h"
#include "gateway/sio_packet.h"
#include "rest/rest.h"
#include "store/history.h"
#include "store/messages.h"

/* One REST call in flight. Holds a reference on the request. */
typedef struct rest_call {
    chat_app *app;
    http_req *req;
    auth_principal p;
    char *chat_id;
    int64_t limit;
    bool after;
    cJSON *body;
} rest_call;

static void call_free(rest_call *c)
{
    http_req_unref(c->req);
    auth_principal_free(&c->p);
    free(c->chat_id);
    cJSON_Delete(c->body);
    free(c);
}

static bool is_customer(const rest_call *c)
{
    return c->p.role == AUTH_ROLE_CUSTOMER;
}

static void fail_pg(rest_call *c, const PGresult *res, const char *err)
{
    if (pg_classify(res, err) == PG_OUTCOME_UNAVAILABLE) {
        http_respond_error(c->req, 503, "unavailable", "database unavailable, try again");
    } else {
        log_warn("rest: query failed: %s", err ? err : "?");
        http_respond_error(c->req, 500, "internal", "internal error");
    }
}

/* Parses "?name=" as an integer >= 0; returns 0 ok, 1 absent, -1 malformed. */
static int query_int(const http_req *req, const char *name, int64_t *out)
{
    char v[32];
    if (!http_query_get(req->query, name, v, sizeof v))
        return 1;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || n < 0)
        return -1;
    *out = n;
    return 0;
}

/* ---- GET /chat/chats ------------------------------------------------------------------- */

static const char LIST_SQL[] =
    "SELECT chat_object(c)::text, chatd_iso(c.created_at), c.id FROM chats c"
    " WHERE c.org_id = $1 AND ($2::text IS NULL OR c.customer_key = $2)"
    " AND ($3::text IS NULL OR c.status = $3)"
    " AND ($4::text IS NULL OR (c.created_at, c.id) < ($4::timestamptz, $5::text))"
    " ORDER BY c.created_at DESC, c.id DESC LIMIT $6::int";

static void on_list(void *ctx, const PGresult *res, const char *err)
{
    rest_call *c = ctx;
    if (err) {
        fail_pg(c, res, err);
        call_free(c);
        return;
    }
    int n = PQntuples(res);
    bool more = n > c->limit;
    if (more)
        n = (int)c->limit;
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{\"chats\":[");
    for (int r = 0; r < n; r++) {
        if (r)
            buf_putc(&b, ',');
        buf_puts(&b, PQgetvalue(res, r, 0));
    }
    buf_puts(&b, "],\"nextCursor\":");
    if (more) {
        char cur[512];
        snprintf(cur, sizeof cur, "%s~%s", PQgetvalue(res, n - 1, 1), PQgetvalue(res, n - 1, 2));
        buf_json_str(&b, cur, strlen(cur));
    } else {
        buf_puts(&b, "null");
    }
    buf_putc(&b, '}');
    http_respond(c->req, 200, "application/json", b.data, b.len);
    buf_free(&b);
    call_free(c);
}

/* A cursor is "<ISO-8601 ms UTC>~<chat id>" as written by on_list. Anything else is refused
 * here (400), not by PostgreSQL (a 500): a date that does not exist (month 13, 31 February),
 * an id that is not text. */
static bool cursor_split(char *cur, char **ts, char **id)
{
    char *t = strchr(cur, '~');
    if (!t || t - cur != 24 || !sio_text_valid(t + 1, strlen(t + 1)))
        return false;
    int y, mo, d, h, mi, sec, ms, used = 0;
    if (sscanf(cur, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &y, &mo, &d, &h, &mi, &sec, &ms, &used) != 7 ||
        used != 24)
        return false;
    for (int i = 0; i < 23; i++) /* sscanf also takes signs and spaces */
        if (!strchr("0123456789-T:.", cur[i]))
            return false;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                    .tm_hour = h, .tm_min = mi, .tm_sec = sec};
    time_t when = timegm(&tm); /* normalises: 31 February comes back as 3 March */
    struct tm back;
    if (y < 1970 || y > 9999 || when == (time_t)-1 || !gmtime_r(&when, &back) ||
        back.tm_year != y - 1900 || back.tm_mon != mo - 1 || back.tm_mday != d ||
        back.tm_hour != h || back.tm_min != mi || back.tm_sec != sec)
        return false;
    *t = '\0';
    *ts = cur;
    *id = t + 1;
    return true;
}

static void list_chats(rest_call *c)
{
    char status[32], cursor[300], lim[16];
    const char *st = http_query_get(c->req->query, "status", status, sizeof status);
    if (st && strcmp(st, "ai") && strcmp(st, "queued") && strcmp(st, "assigned") &&
        strcmp(st, "closed")) {
        http_respond_error(c->req, 400, "bad_request", "status must be ai|queued|assigned|closed");
        call_free(c);
        return;
    }
    c->limit = 50;
    if (query_int(c->req, "limit", &c->limit) < 0) {
        http_respond_error(c->req, 400, "bad_request", "limit must be a number");
        call_free(c);
        return;
    }
    if (c->limit < 1)
        c->limit = 1;
    if (c->limit > 100)
        c->limit = 100;
    char *ts = NULL, *id = NULL;
    if (http_query_get(c->req->query, "cursor", cursor, sizeof cursor) &&
        !cursor_split(cursor, &ts, &id)) {
        http_respond_error(c->req, 400, "bad_request", "malformed cursor");
        call_free(c);
        return;
    }
    snprintf(lim, sizeof lim, "%d", (int)c->limit + 1);
    const char *params[6] = {c->p.org, is_customer(c) ? c->p.key : NULL, st, ts, id, lim};
    pg_query(c->app->pg, LIST_SQL, 6, params, on_list, c);
}

/* ---- GET /chat/chats/{id} -------------------------------------------------------------- */

static void on_one(void *ctx, const PGresult *res, const char *err)
{
    rest_call *c = ctx;
    if (err) {
        fail_pg(c, res, err);
    } else if (PQntuples(res) == 0) {
        http_respond_error(c->req, 404, "not_found", "no such chat");
    } else {
        buf_t b;
        buf_init(&b);
        buf_puts(&b, "{\"chat\":");
        buf_puts(&b, PQgetvalue(res, 0, 0));
        buf_putc(&b, '}');
        http_respond(c->req, 200, "application/json", b.data, b.len);
        buf_free(&b);
    }
    call_free(c);
}

static void get_chat(rest_call *c)
{
    const char *params[3] = {c->chat_id, c->p.org, is_customer(c) ? c->p.key : NULL};
    pg_query(c->app->pg,
             "SELECT chat_object(c)::text FROM chats c WHERE c.id = $1 AND c.org_id = $2"
             " AND ($3::text IS NULL OR c.customer_key = $3)",
             3, params, on_one, c);
}

/* ---- GET /chat/chats/{id}/messages ------------------------------------------------------ */

static void on_messages(void *ctx, const PGresult *res, const char *err)
{
    rest_call *c = ctx;
    if (err) {
        fail_pg(c, res, err);
        call_free(c);
        return;
    }
    buf_t b;
    buf_init(&b);
    buf_putc(&b, '{');
    if (!history_render(res, c->limit, c->after, &b)) {
        buf_free(&b);
        http_respond_error(c->req, 404, "not_found", "no such chat");
        call_free(c);
        return;
    }
    buf_putc(&b, '}');
    http_respond(c->req, 200, "application/json", b.data, b.len);
    buf_free(&b);
    call_free(c);
}

static void list_messages(rest_call *c)
{
    int64_t before = 0, after = 0;
    int rb = query_int(c->req, "beforeSeq", &before), ra = query_int(c->req, "afterSeq", &after);
    c->limit = 50;
    int rl = query_int(c->req, "limit", &c->limit);
    if (rb < 0 || ra < 0 || rl < 0 || (ra == 0 && rb == 0)) {
        http_respond_error(c->req, 400, "bad_request", "afterSeq | beforeSeq, limit: numbers");
        call_free(c);
        return;
    }
    if (c->limit < 1)
        c->limit = 1;
    if (c->limit > 100)
        c->limit = 100;
    c->after = ra == 0;
    char cur[32], lim[32];
    snprintf(cur, sizeof cur, "%lld",
             ra == 0 ? (long long)after : rb == 0 ? (long long)before : 9007199254740991LL);
    snprintf(lim, sizeof lim, "%lld", (long long)c->limit + 1);
    const char *params[5] = {c->chat_id, c->p.org, is_customer(c) ? c->p.key : NULL, cur, lim};
    pg_query(c->app->pg, history_sql(c->after), 5, params, on_messages, c);
}

/* ---- POST /chat/chats/{id}/messages ----------------------------------------------------- */

static void on_post_append(void *ctx, pg_append_status st, const pg_message *msg,
                           const pg_chat_state *chat, const char *err)
{
    rest_call *c = ctx;
    switch (st) {
    case PG_APPEND_OK:
    case PG_APPEND_REPLAY: {
        buf_t b, m;
        buf_init(&b);
        buf_init(&m);
        pg_message_to_json(msg, &m);
        buf_puts(&b, "{\"message\":");
        buf_append(&b, m.data, m.len);
        buf_putc(&b, '}');
        http_respond(c->req, st == PG_APPEND_OK ? 201 : 200, "application/json", b.data, b.len);
        if (st == PG_APPEND_OK) { /* same pushes as the socket event */
            chat_emit_message(c->app, chat->org_id, msg->chat_id, msg->seq, m.data);
            chat_hook_message(c->app, chat->org_id, msg->chat_id, chat->status, msg->sender_type);
        }
        buf_free(&b);
        buf_free(&m);
        break;
    }
    case PG_APPEND_NOT_FOUND:
        http_respond_error(c->req, 404, "not_found", "no such chat");
        break;
    case PG_APPEND_CLOSED:
    case PG_APPEND_STALE:
        http_respond_error(c->req, 409, "conflict", "the chat is closed");
        break;
    case PG_APPEND_BAD_ATTACHMENT:
        http_respond_error(c->req, 400, "bad_request", "attachments must be your own uploads");
        break;
    case PG_APPEND_UNAVAILABLE:
        http_respond_error(c->req, 503, "unavailable", "database unavailable, message not sent");
        break;
    default:
        log_warn("rest: append failed: %s", err ? err : "?");
        http_respond_error(c->req, 500, "internal", "internal error");
    }
    call_free(c);
}

static void do_append(rest_call *c)
{
    const char *ids[10]; /* chat_message_invalid allowed at most 10 */
    size_t n = 0;
    const cJSON *att = cJSON_GetObjectItemCaseSensitive(c->body, "attachments");
    for (const cJSON *a = cJSON_IsArray(att) ? att->child : NULL; a && n < 10; a = a->next)
        ids[n++] = a->valuestring;
    pg_append_req r = {
        .chat_id = c->chat_id,
        .org_id = c->p.org,
        .client_id = chat_json_str(c->body, "clientId"),
        .sender_type = is_customer(c) ? "customer" : "agent",
        .sender_id = is_customer(c) ? c->p.key : c->p.sub,
        .sender_name = c->p.name,
        .text = chat_json_str(c->body, "text"),
        .upload_ids = n ? ids : NULL,
        .nupload_ids = n,
        .owner_version = -1,
    };
    pg_append_message(c->app->pg, &r, on_post_append, c);
}

static void on_post_owner(void *ctx, const PGresult *res, const char *err)
{
    rest_call *c = ctx;
    if (err) {
        fail_pg(c, res, err);
    } else {
        switch (chat_write_access(res, &c->p)) {
        case CHAT_ACCESS_OK:
            do_append(c);
            return;
        case CHAT_ACCESS_NOT_FOUND:
            http_respond_error(c->req, 404, "not_found", "no such chat");
            break;
        case CHAT_ACCESS_CLOSED:
            http_respond_error(c->req, 409, "conflict", "the chat is closed");
            break;
        case CHAT_ACCESS_FORBIDDEN:
            http_respond_error(c->req, 403, "forbidden", "only the assigned agent may write");
            break;
        }
    }
    call_free(c);
}

static void on_post_body(http_req *req)
{
    rest_call *c = req->user;
    req->user = NULL;
    if (req->body_too_large) {
        http_respond_error(req, 413, "payload_too_large", "body too large");
        call_free(c);
        return;
    }
    /* the socket's rules: strict JSON (no raw control characters, valid UTF-8), then the same
     * checks as the chat-message event */
    const char *raw = req->body.data ? req->body.data : "";
    const char *why = "the body must be JSON {clientId, text, attachments?}";
    if (sio_json_valid(raw, req->body.len)) {
        c->body = cJSON_ParseWithLength(raw, req->body.len);
        why = chat_message_invalid(c->body, raw, req->body.len);
    }
    if (why) {
        http_respond_error(req, 400, "bad_request", why);
        call_free(c);
        return;
    }
    const char *params[2] = {c->chat_id, c->p.org};
    pg_query(c->app->pg, CHAT_OWNER_SQL, 2, params, on_post_owner, c);
}

static void on_post_abort(http_req *req)
{
    rest_call *c = req->user;
    req->user = NULL;
    if (c)
        call_free(c);
}

/* ---- routing ------------------------------------------------------------------------ */

/* Splits the path after "/chat/" into at most 4 segments (URL-decoding is not
 * needed: ids are opaque tokens; anything odd simply matches no row). */
static int segments(const char *path, char seg[4][256])
{
    int n = 0;
    const char *p = path + strlen("/chat/");
    while (*p && n < 4) {
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l >= 256)
            return -1;
        memcpy(seg[n], p, l);
        seg[n][l] = '\0';
        n++;
        if (!e)
            break;
        p = e + 1;
    }
    if (*p && n == 4)
        return -1;
    return n;
}

static void on_request(void *ctx, http_req *req)
{
    chat_app *app = ctx;
    char seg[4][256];
    int n = segments(req->path, seg);
    bool chats = n >= 1 && !strcmp(seg[0], "chats");
    bool known = chats && (n == 1 || n == 2 || (n == 3 && !strcmp(seg[2], "messages")));
    if (!known) {
        http_respond_error(req, 404, "not_found", "no such endpoint");
        return;
    }
    const char *auth = req->authorization;
    const char *token = !strncasecmp(auth, "Bearer ", 7) ? auth + 7 : NULL;
    rest_call *c = xcalloc(1, sizeof *c);
    auth_err ae = auth_verify(&app->keys, token, NULL, (int64_t)time(NULL), &c->p);
    if (ae != AUTH_OK) {
        free(c);
        http_respond_error(req, 401, "unauthorized", auth_strerror(ae));
        return;
    }
    c->app = app;
    c->req = req;
    http_req_ref(req);
    if (n >= 2 && !sio_text_valid(seg[1], strlen(seg[1]))) {
        /* not an id any chat can have (bytes that are not text): like an unknown chat */
        http_respond_error(req, 404, "not_found", "no such chat");
        call_free(c);
        return;
    }
    if (n >= 2)
        c->chat_id = xstrdup(seg[1]);
    if (n == 1 && req->method == HTTP_GET)
        list_chats(c);
    else if (n == 2 && req->method == HTTP_GET)
        get_chat(c);
    else if (n == 3 && req->method == HTTP_GET)
        list_messages(c);
    else if (n == 3 && req->method == HTTP_POST) {
        req->user = c;
        req->max_body = app->cfg->max_payload;
        req->on_body = on_post_body;
        req->on_abort = on_post_abort;
    } else {
        http_respond_error(req, 405, "bad_request", "method not allowed");
        call_free(c);
    }
}

void rest_setup(chat_app *app)
{
    http_route_add("/chat/", on_request, app);
}
