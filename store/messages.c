/* Typed message operations (see messages.h). */
#include "store/messages.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/xalloc.h"
#include "store/msgid.h"

#define APPEND_BATCH_SQL "SELECT * FROM chat_append_items($1::jsonb)"
#define APPEND_BATCH_STMT "chatd_append_items"
/* One item with nothing beside it (sql/026). */
#define APPEND_ONE_STMT "chatd_append_one"
#define APPEND_ONE_SQL                                                                        \
    "SELECT * FROM chat_append_one($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10::int)"
#define APPEND_STMT "chatd_append_message"
#define APPEND_SQL                                                                            \
    "SELECT * FROM chat_append_message($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9::int, "     \
    "$10::text[])"

const char *pg_append_status_str(pg_append_status st)
{
    switch (st) {
    case PG_APPEND_OK: return "ok";
    case PG_APPEND_REPLAY: return "replay";
    case PG_APPEND_NOT_FOUND: return "not_found";
    case PG_APPEND_CLOSED: return "closed";
    case PG_APPEND_STALE: return "stale";
    case PG_APPEND_BAD_ATTACHMENT: return "bad_attachment";
    case PG_APPEND_UNAVAILABLE: return "unavailable";
    case PG_APPEND_INTERNAL: return "internal";
    }
    return "internal";
}

static const char *col(const PGresult *res, int row, int c)
{
    if (c < 0 || PQgetisnull(res, row, c))
        return NULL;
    return PQgetvalue(res, row, c);
}

static int64_t col_i64(const PGresult *res, int row, int c)
{
    const char *v = col(res, row, c);
    return v ? strtoll(v, NULL, 10) : 0;
}

/* Column number of `name` (lower case, unquoted), looked for first at `guess`: the append
 * functions all return the same columns in the same order, so this is one strcmp per column
 * and row, where PQfnumber copies, downcases and searches the name on every call (about 4 %
 * of chatd's CPU at 9,500 msgs/s). Other layouts fall back to PQfnumber. */
static int colno(const PGresult *res, const char *name, int guess)
{
    if (guess >= 0 && guess < PQnfields(res) && strcmp(PQfname(res, guess), name) == 0)
        return guess;
    return PQfnumber(res, name);
}

/* Reads the message columns of `row`. id_guess: where "id" usually is, the other message
 * columns following it in the order of the append functions; -1: every name is looked up with
 * PQfnumber (results that may repeat a name, such as joins, keep its first match). */
static int message_from_row(const PGresult *res, int row, pg_message *out, int id_guess)
{
    int cid = id_guess >= 0 ? colno(res, "id", id_guess) : PQfnumber(res, "id");
    int g = id_guess >= 0 ? cid : -1000; /* guesses below are g + offset; -1000: none */
    int cseq = colno(res, "seq", g + 2);
    if (cid < 0 || cseq < 0 || row < 0 || row >= PQntuples(res))
        return -1;
    memset(out, 0, sizeof *out);
    out->id = col(res, row, cid);
    out->chat_id = col(res, row, colno(res, "chat_id", g + 1));
    out->seq = col_i64(res, row, cseq);
    out->client_id = col(res, row, colno(res, "client_id", g + 3));
    out->sender_type = col(res, row, colno(res, "sender_type", g + 4));
    out->sender_id = col(res, row, colno(res, "sender_id", g + 5));
    out->sender_name = col(res, row, colno(res, "sender_name", g + 6));
    out->text = col(res, row, colno(res, "text", g + 7));
    out->attachments_json = col(res, row, colno(res, "attachments", g + 8));
    if (!out->attachments_json)
        out->attachments_json = "[]";
    out->created_at = col(res, row, colno(res, "created_at", g + 9));
    out->edited_at = col(res, row, colno(res, "edited_at", g + 10));
    out->deleted_at = col(res, row, colno(res, "deleted_at", g + 11));
    return 0;
}

int pg_message_from_row(const PGresult *res, int row, pg_message *out)
{
    return message_from_row(res, row, out, -1);
}

static void json_kv_str(buf_t *b, const char *k, const char *v, bool comma)
{
    if (comma)
        buf_putc(b, ',');
    buf_json_str(b, k, strlen(k));
    buf_putc(b, ':');
    if (v)
        buf_json_str(b, v, strlen(v));
    else
        buf_puts(b, "null");
}

void pg_message_to_json(const pg_message *m, buf_t *b)
{
    buf_putc(b, '{');
    json_kv_str(b, "id", m->id, false);
    json_kv_str(b, "chatId", m->chat_id, true);
    buf_printf(b, ",\"seq\":%lld", (long long)m->seq);
    if (m->client_id)
        json_kv_str(b, "clientId", m->client_id, true);
    buf_puts(b, ",\"sender\":{");
    json_kv_str(b, "type", m->sender_type ? m->sender_type : "system", false);
    if (m->sender_id)
        json_kv_str(b, "id", m->sender_id, true);
    if (m->sender_name)
        json_kv_str(b, "name", m->sender_name, true);
    buf_putc(b, '}');
    json_kv_str(b, "text", m->text ? m->text : "", true);
    /* attachments is JSON produced by PostgreSQL (jsonb::text), embedded as is. */
    buf_puts(b, ",\"attachments\":");
    buf_puts(b, m->attachments_json && *m->attachments_json ? m->attachments_json : "[]");
    json_kv_str(b, "createdAt", m->created_at, true);
    if (m->edited_at)
        json_kv_str(b, "editedAt", m->edited_at, true);
    if (m->deleted_at)
        json_kv_str(b, "deletedAt", m->deleted_at, true);
    buf_putc(b, '}');
}

typedef struct append_ctx {
    pg_append_cb cb;
    void *ctx;
} append_ctx;

static void append_cancelled(void *p)
{
    free(p);
}

static pg_append_status status_of(const char *s)
{
    if (!s)
        return PG_APPEND_INTERNAL;
    if (strcmp(s, "ok") == 0) return PG_APPEND_OK;
    if (strcmp(s, "replay") == 0) return PG_APPEND_REPLAY;
    if (strcmp(s, "not_found") == 0) return PG_APPEND_NOT_FOUND;
    if (strcmp(s, "closed") == 0) return PG_APPEND_CLOSED;
    if (strcmp(s, "stale") == 0) return PG_APPEND_STALE;
    if (strcmp(s, "bad_attachment") == 0) return PG_APPEND_BAD_ATTACHMENT;
    return PG_APPEND_INTERNAL;
}

static void append_done_row(void *p, const PGresult *res, int row, const char *err)
{
    append_ctx *a = p;
    pg_append_cb cb = a->cb;
    void *ctx = a->ctx;
    free(a);
    if (err) {
        pg_outcome o = pg_classify(res, err);
        cb(ctx, o == PG_OUTCOME_UNAVAILABLE ? PG_APPEND_UNAVAILABLE : PG_APPEND_INTERNAL, NULL,
           NULL, err);
        return;
    }
    if (!res || row < 0 || row >= PQntuples(res)) {
        cb(ctx, PG_APPEND_INTERNAL, NULL, NULL, "append: unexpected result");
        return;
    }
    /* guesses: the columns of 003/024/026 (002 has no idx column: found by name) */
    pg_append_status st = status_of(col(res, row, colno(res, "status", 1)));
    pg_message m;
    pg_chat_state chat = {0};
    bool has_msg = (st == PG_APPEND_OK || st == PG_APPEND_REPLAY) &&
                   message_from_row(res, row, &m, 2) == 0;
    chat.status = col(res, row, colno(res, "chat_status", 14));
    bool has_chat = chat.status != NULL;
    if (has_chat) {
        chat.owner_version = (int)col_i64(res, row, colno(res, "owner_version", 15));
        chat.last_seq = col_i64(res, row, colno(res, "last_seq", 16));
        chat.org_id = col(res, row, colno(res, "org_id", 17));
        chat.customer_key = col(res, row, colno(res, "customer_key", 18));
        chat.agent_id = col(res, row, colno(res, "agent_id", 19));
    }
    if ((st == PG_APPEND_OK || st == PG_APPEND_REPLAY) && !has_msg) {
        cb(ctx, PG_APPEND_INTERNAL, NULL, NULL, "append: bad row");
        return;
    }
    cb(ctx, st, has_msg ? &m : NULL, has_chat ? &chat : NULL, NULL);
}

/* Builds a PostgreSQL text[] literal {"a","b"} (quotes and backslashes escaped). */
static char *array_literal(const char *const *items, size_t n)
{
    buf_t b;
    buf_init(&b);
    buf_putc(&b, '{');
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_putc(&b, ',');
        buf_putc(&b, '"');
        for (const char *s = items[i] ? items[i] : ""; *s; s++) {
            if (*s == '"' || *s == '\\')
                buf_putc(&b, '\\');
            buf_putc(&b, *s);
        }
        buf_putc(&b, '"');
    }
    buf_putc(&b, '}');
    return buf_steal(&b, NULL);
}

static void json_field(buf_t *b, const char *k, const char *v)
{
    if (b->len > 1)
        buf_putc(b, ',');
    buf_json_str(b, k, strlen(k));
    buf_putc(b, ':');
    if (v)
        buf_json_str(b, v, strlen(v));
    else
        buf_puts(b, "null");
}

/* A new message's id, time-ordered (see msgid.h). One generator per process, seeded once. */
static void next_message_id(char out[MSGID_LEN + 1])
{
    static msgid_gen gen;
    static bool seeded;
    if (!seeded) {
        uint64_t seed;
        if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
            seed = (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)&seed << 16);
        msgid_init(&gen, seed);
        seeded = true;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    msgid_next(&gen, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000, out);
}

/* The common case (no upload ids): one JSON item of a combined chat_append_items() call, so
 * the appends of one loop iteration that go to the same connection become one multi-row
 * write; an append with nothing beside it goes as chat_append_one() with the same values as
 * parameters. The attachments JSON is checked to be an array before it is used. */
static pg_req_id append_combined(pg_client *pg, const pg_append_req *req, append_ctx *a)
{
    pg_prepare(pg, APPEND_BATCH_STMT, APPEND_BATCH_SQL);
    pg_prepare(pg, APPEND_ONE_STMT, APPEND_ONE_SQL);
    char msg_id[MSGID_LEN + 1];
    next_message_id(msg_id);
    const char *text = req->text ? req->text : "";
    const char *att = NULL;
    if (req->attachments_json) {
        cJSON *parsed = cJSON_Parse(req->attachments_json);
        if (cJSON_IsArray(parsed))
            att = req->attachments_json;
        cJSON_Delete(parsed);
    }
    char ver[16];
    snprintf(ver, sizeof ver, "%d", req->owner_version);
    buf_t b;
    buf_init(&b);
    buf_putc(&b, '{');
    json_field(&b, "id", msg_id);
    json_field(&b, "chat", req->chat_id);
    json_field(&b, "cid", req->client_id);
    json_field(&b, "st", req->sender_type);
    json_field(&b, "sid", req->sender_id);
    json_field(&b, "sn", req->sender_name);
    json_field(&b, "text", text);
    json_field(&b, "org", req->org_id);
    if (req->owner_version >= 0)
        buf_printf(&b, ",\"ov\":%s", ver);
    if (att) {
        buf_puts(&b, ",\"att\":");
        buf_puts(&b, att);
    }
    buf_putc(&b, '}');
    const char *params[10] = {
        msg_id,          req->chat_id,     req->client_id, req->sender_type,
        req->sender_id,  req->sender_name, text,           att,
        req->org_id,     req->owner_version >= 0 ? ver : NULL,
    };
    pg_query_opts q = {
        .stmt = APPEND_ONE_STMT,
        .nparams = 10,
        .params = params,
        .route_key = req->chat_id,
        .row_cb = append_done_row,
        .on_cancel = append_cancelled,
        .combine_sql = APPEND_BATCH_SQL,
        .combine_stmt = APPEND_BATCH_STMT,
        .combine_item = b.data,
    };
    pg_req_id id = pg_query_ex(pg, &q, NULL, a);
    buf_free(&b);
    return id;
}

pg_req_id pg_append_message(pg_client *pg, const pg_append_req *req, pg_append_cb cb, void *ctx)
{
    append_ctx *a = xmalloc(sizeof *a);
    a->cb = cb;
    a->ctx = ctx;
    if (!req->nupload_ids)
        return append_combined(pg, req, a);
    pg_prepare(pg, APPEND_STMT, APPEND_SQL);
    char ver[16];
    snprintf(ver, sizeof ver, "%d", req->owner_version);
    char *uploads = req->nupload_ids ? array_literal(req->upload_ids, req->nupload_ids) : NULL;
    const char *params[10] = {
        req->chat_id,     req->client_id,        req->sender_type,
        req->sender_id,   req->sender_name,      req->text ? req->text : "",
        req->attachments_json, req->org_id, req->owner_version >= 0 ? ver : NULL,
        uploads,
    };
    pg_query_opts q = {
        .stmt = APPEND_STMT,
        .nparams = 10,
        .params = params,
        .route_key = req->chat_id,
        .flags = PG_Q_BATCH,
        .on_cancel = append_cancelled,
        .row_cb = append_done_row,
    };
    pg_req_id id = pg_query_ex(pg, &q, NULL, a);
    free(uploads);
    return id;
}
