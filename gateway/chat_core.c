/* /chat namespace core: connect (JWT, session, catch-up), the event table,
 * acks, and room delivery on this node and across nodes (Redis pub/sub).
 *
 * Fan-out messages on CHAT_FANOUT_CHANNEL are text, fields split by '\n':
 *   M <node> <room> <chatId> <seq> <json>   a persisted chat-message
 *   E <node> <room> <flags> <json>          any other room event
 *   J <node> <identityRoom> <room>          identity-wide join
 *   L <node> <identityRoom> <room>          identity-wide leave
 * A node ignores its own publications: it delivered them locally already. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "gateway/chat.h"
#include "gateway/chat_hooks.h"
#include "gateway/sio_packet.h"
#include "store/messages.h"

/* ---- small helpers ------------------------------------------------------------ */

char *chat_room(const char *org, const char *chat_id)
{
    buf_t b;
    buf_init(&b);
    buf_printf(&b, "chat:%s:%s", org, chat_id);
    return buf_steal(&b, NULL);
}

const char *chat_json_str(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int chat_json_int(const cJSON *obj, const char *name, int64_t *out)
{
    const cJSON *v = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
    if (!v || cJSON_IsNull(v))
        return 1;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740991.0 ||
        floor(v->valuedouble) != v->valuedouble)
        return -1;
    *out = (int64_t)v->valuedouble;
    return 0;
}

void chat_ack_ok(sio_socket *s, int64_t ack_id, const char *fields)
{
    if (ack_id < 0)
        return;
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "[{\"ok\":true");
    if (fields && *fields) {
        buf_putc(&b, ',');
        buf_puts(&b, fields);
    }
    buf_puts(&b, "}]");
    sio_ack(s, ack_id, b.data, b.len, NULL, 0);
    buf_free(&b);
}

void chat_ack_err(sio_socket *s, int64_t ack_id, const char *code, const char *message)
{
    if (ack_id < 0)
        return;
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "[{\"ok\":false,\"error\":{\"code\":");
    buf_json_str(&b, code, strlen(code));
    buf_puts(&b, ",\"message\":");
    buf_json_str(&b, message, strlen(message));
    buf_puts(&b, "}}]");
    sio_ack(s, ack_id, b.data, b.len, NULL, 0);
    buf_free(&b);
}

const char CHAT_OWNER_SQL[] =
    "SELECT customer_key, agent_id, status FROM chats WHERE id = $1 AND org_id = $2";

enum chat_access chat_write_access(const PGresult *res, const auth_principal *p)
{
    if (PQntuples(res) == 0)
        return CHAT_ACCESS_NOT_FOUND;
    if (p->role == AUTH_ROLE_CUSTOMER)
        return strcmp(PQgetvalue(res, 0, 0), p->key) ? CHAT_ACCESS_NOT_FOUND : CHAT_ACCESS_OK;
    const char *status = PQgetvalue(res, 0, 2);
    if (!strcmp(status, "closed"))
        return CHAT_ACCESS_CLOSED;
    if (PQgetisnull(res, 0, 1) || strcmp(PQgetvalue(res, 0, 1), p->sub) != 0 ||
        strcmp(status, "assigned") != 0)
        return CHAT_ACCESS_FORBIDDEN;
    return CHAT_ACCESS_OK;
}

chat_op *chat_op_new(sio_socket *s, int64_t ack_id, const char *chat_id)
{
    chat_op *op = xcalloc(1, sizeof *op);
    chat_sock *cs = sio_get_user(s);
    op->app = cs ? cs->app : NULL;
    op->s = s;
    sio_socket_ref(s);
    op->ack_id = ack_id;
    op->chat_id = chat_id ? xstrdup(chat_id) : NULL;
    return op;
}

chat_sock *chat_op_sock(chat_op *op)
{
    return sio_connected(op->s) ? sio_get_user(op->s) : NULL;
}

void chat_op_free(chat_op *op)
{
    if (!op)
        return;
    sio_socket_unref(op->s);
    free(op->chat_id);
    free(op->str);
    cJSON_Delete(op->json);
    free(op);
}

void chat_op_fail(chat_op *op, const char *err, const PGresult *res)
{
    if (pg_classify(res, err) == PG_OUTCOME_UNAVAILABLE) {
        chat_ack_err(op->s, op->ack_id, "unavailable", "database unavailable, try again");
    } else {
        log_warn("chat: query failed: %s", err ? err : "?");
        chat_ack_err(op->s, op->ack_id, "internal", "internal error");
    }
}

/* ---- delivery ------------------------------------------------------------------ */

static void publish(chat_app *app, const buf_t *msg)
{
    if (!app->redis || !redis_is_ready(app->redis))
        return; /* single-node delivery still happened; other nodes catch up by seq */
    redis_publish(app->redis, CHAT_FANOUT_CHANNEL, msg->data, msg->len, NULL, NULL);
    app->stats.fanout_out++;
}

struct deliver_ctx {
    gw_frame *frame;
    const sio_socket *except;
    unsigned flags;
    const char *chat_id; /* NULL: not a seq-tagged message */
    int64_t seq;
};

static void hold(chat_sock *cs, const char *chat_id, int64_t seq, gw_frame *f)
{
    if (cs->nheld == cs->capheld) {
        cs->capheld = cs->capheld ? cs->capheld * 2 : 8;
        cs->held = xrealloc(cs->held, cs->capheld * sizeof *cs->held);
    }
    cs->held[cs->nheld++] = (struct held_msg){xstrdup(chat_id), seq, frame_ref(f)};
}

static void deliver_one(void *vctx, sio_socket *s)
{
    struct deliver_ctx *d = vctx;
    if (s == d->except)
        return;
    chat_sock *cs = sio_get_user(s);
    if (d->chat_id && cs && cs->catching_up) {
        hold(cs, d->chat_id, d->seq, d->frame);
        return;
    }
    /* Once per socket: what it has of a chat (sent, caught up, or where it
     * joined) is in its log. A node may offer a socket older messages than it
     * joined at (another socket of the node joined earlier), or offer again
     * what catch-up delivered. */
    if (d->chat_id && cs && d->seq <= csr_log_last(&cs->csr, d->chat_id))
        return;
    if (sio_send_frames(s, &d->frame, 1, d->flags) == 0 && d->chat_id && cs)
        csr_log_note(&cs->csr, d->chat_id, d->seq);
}

void chat_deliver_frame(chat_app *app, const char *room, const char *chat_id, int64_t seq,
                        gw_frame *f)
{
    struct deliver_ctx d = {f, NULL, 0, chat_id, seq};
    sio_room_foreach(app->nsp, room, deliver_one, &d);
    app->stats.broadcasts++;
}

/* Room delivery on this node. A persisted message (chat_id set) goes through
 * the per-chat order keeper first. */
static void deliver_local(chat_app *app, const char *room, const char *args, size_t len,
                          const sio_socket *except, unsigned flags, const char *chat_id,
                          int64_t seq)
{
    gw_frame *f;
    if (sio_event_frames(app->nsp, args, len, NULL, 0, &f, 1) != 1)
        return;
    if (chat_id && app->order) {
        chat_order_deliver(app, room, chat_id, seq, f);
    } else {
        struct deliver_ctx d = {f, except, flags, chat_id, seq};
        sio_room_foreach(app->nsp, room, deliver_one, &d);
        app->stats.broadcasts++;
    }
    frame_unref(f);
}

static void event_args(buf_t *b, const char *event, const char *payload)
{
    buf_puts(b, "[\"");
    buf_puts(b, event);
    buf_puts(b, "\",");
    buf_puts(b, payload);
    buf_putc(b, ']');
}

void chat_emit_room(chat_app *app, const char *room, const char *event, const char *payload,
                    const sio_socket *except, bool is_volatile)
{
    buf_t args, msg;
    buf_init(&args);
    buf_init(&msg);
    event_args(&args, event, payload);
    unsigned flags = is_volatile ? EIO_SEND_VOLATILE : 0;
    deliver_local(app, room, args.data, args.len, except, flags, NULL, 0);
    buf_printf(&msg, "E\n%s\n%s\n%u\n", app->node_id, room, flags);
    buf_append(&msg, args.data, args.len);
    publish(app, &msg);
    buf_free(&args);
    buf_free(&msg);
}

void chat_message_args(buf_t *b, const char *chat_id, int64_t seq, const char *message_json,
                       size_t message_len)
{
    buf_puts(b, "[\"chat-message\",");
    buf_append(b, message_json, message_len);
    buf_putc(b, ',');
    csr_offset_json(b, chat_id, seq);
    buf_putc(b, ']');
}

void chat_message_args_row(buf_t *b, const pg_message *m)
{
    buf_puts(b, "[\"chat-message\",");
    pg_message_to_json(m, b);
    buf_putc(b, ',');
    csr_offset_json(b, m->chat_id, m->seq);
    buf_putc(b, ']');
}

void chat_emit_message(chat_app *app, const char *org, const char *chat_id, int64_t seq,
                       const char *message_json)
{
    char *room = chat_room(org, chat_id);
    buf_t args, msg;
    buf_init(&args);
    buf_init(&msg);
    chat_message_args(&args, chat_id, seq, message_json, strlen(message_json));
    deliver_local(app, room, args.data, args.len, NULL, 0, chat_id, seq);
    buf_printf(&msg, "M\n%s\n%s\n%s\n%lld\n", app->node_id, room, chat_id, (long long)seq);
    buf_append(&msg, args.data, args.len);
    publish(app, &msg);
    buf_free(&args);
    buf_free(&msg);
    free(room);
}

static void catchup_add(chat_sock *cs, const char *chat_id, int64_t have);

struct join_ctx {
    const char *room;
    bool join;
    const char *chat_id; /* with last_seq: where a joining socket starts (or NULL) */
    int64_t last_seq;
};

static void join_one(void *vctx, sio_socket *s)
{
    struct join_ctx *j = vctx;
    if (!j->join) {
        sio_leave(s, j->room);
        return;
    }
    chat_sock *cs = sio_get_user(s);
    if (cs && j->chat_id) {
        csr_log_join(&cs->csr, j->chat_id, j->last_seq);
        /* this node delivered messages after that point before the socket
         * was in the room: they come from the database */
        if (chat_order_passed(cs->app, j->chat_id, j->last_seq))
            catchup_add(cs, j->chat_id, j->last_seq);
    }
    sio_join(s, j->room);
}

/* chat_id/last_seq (optional): the chat's last seq when the join was decided,
 * so a node that had no reader of that chat yet starts its order there. */
static void identity_op(chat_app *app, const char *identity, const char *room, bool join,
                        bool pub, const char *chat_id, int64_t last_seq)
{
    if (join && chat_id && last_seq >= 0)
        chat_order_seen(app, room, chat_id, last_seq);
    struct join_ctx j = {room, join, last_seq >= 0 ? chat_id : NULL, last_seq};
    sio_room_foreach(app->nsp, identity, join_one, &j);
    if (!pub)
        return;
    buf_t msg;
    buf_init(&msg);
    buf_printf(&msg, "%c\n%s\n%s\n%s", join ? 'J' : 'L', app->node_id, identity, room);
    if (join && chat_id && last_seq >= 0)
        buf_printf(&msg, "\n%s\n%lld", chat_id, (long long)last_seq);
    publish(app, &msg);
    buf_free(&msg);
}

void chat_identity_join(chat_app *app, const char *identity, const char *room)
{
    identity_op(app, identity, room, true, true, NULL, -1);
}

void chat_identity_join_at(chat_app *app, const char *identity, const char *room,
                           const char *chat_id, int64_t last_seq)
{
    identity_op(app, identity, room, true, true, chat_id, last_seq);
}

void chat_identity_leave(chat_app *app, const char *identity, const char *room)
{
    identity_op(app, identity, room, false, true, NULL, -1);
}

void chat_emit_state(chat_app *app, const char *org, const char *chat_id, const char *status,
                     const char *agent_json, const char *queue_json)
{
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{\"chatId\":");
    buf_json_str(&b, chat_id, strlen(chat_id));
    buf_puts(&b, ",\"status\":");
    buf_json_str(&b, status, strlen(status));
    if (agent_json) {
        buf_puts(&b, ",\"agent\":");
        buf_puts(&b, agent_json);
    }
    if (queue_json) {
        buf_puts(&b, ",\"queue\":");
        buf_puts(&b, queue_json);
    }
    buf_putc(&b, '}');
    char *room = chat_room(org, chat_id);
    chat_emit_room(app, room, "chat-state", b.data, NULL, false);
    free(room);
    buf_free(&b);
}

/* Splits the next '\n'-terminated field off *p (within end); NULL when missing. */
static char *field(char **p, char *end)
{
    char *start = *p;
    char *nl = memchr(start, '\n', (size_t)(end - start));
    if (!nl)
        return NULL;
    *nl = '\0';
    *p = nl + 1;
    return start;
}

void chat_on_fanout(void *ctx, const char *pattern, const char *channel, size_t channel_len,
                    const char *data, size_t len)
{
    chat_app *app = ctx;
    static const char expired[] = ":expired";
    if (channel_len > sizeof expired && !memcmp(channel + channel_len - (sizeof expired - 1),
                                                expired, sizeof expired - 1)) {
        chat_hook_expired(app, data, len); /* __keyevent@N__:expired */
        return;
    }
    if (channel_len != strlen(CHAT_FANOUT_CHANNEL) ||
        memcmp(channel, CHAT_FANOUT_CHANNEL, channel_len) != 0 || len < 4)
        return;
    /* Redis echoes our own publications: they were delivered locally already. Checked
     * before copying, as this is every message this node sends. */
    size_t nlen = strlen(app->node_id);
    if (len > nlen + 2 && !memcmp(data + 2, app->node_id, nlen) && data[2 + nlen] == '\n')
        return;
    char *copy = xstrndup(data, len), *p = copy + 2, *end = copy + len;
    char kind = copy[0];
    char *node = field(&p, end);
    if (!node || !strcmp(node, app->node_id))
        goto out; /* ours: delivered locally already */
    app->stats.fanout_in++;
    if (kind == 'M') {
        char *room = field(&p, end), *chat_id = field(&p, end), *seq = field(&p, end);
        if (room && chat_id && seq)
            deliver_local(app, room, p, (size_t)(end - p), NULL, 0, chat_id, atoll(seq));
    } else if (kind == 'E') {
        char *room = field(&p, end), *flags = field(&p, end);
        if (room && flags)
            deliver_local(app, room, p, (size_t)(end - p), NULL, (unsigned)atoi(flags), NULL, 0);
    } else if (kind == 'J' || kind == 'L') {
        char *identity = field(&p, end);
        char *room = identity ? field(&p, end) : NULL;
        if (room) { /* J ... room chatId lastSeq */
            char *chat_id = field(&p, end);
            if (chat_id)
                identity_op(app, identity, room, kind == 'J', false, chat_id, atoll(p));
        } else if (identity) {
            identity_op(app, identity, p, kind == 'J', false, NULL, -1);
        }
    }
out:
    free(copy);
}

/* ---- connect ------------------------------------------------------------------- */

static void chat_sock_free(chat_sock *cs)
{
    if (!cs)
        return;
    auth_principal_free(&cs->p);
    free(cs->identity_room);
    free(cs->config_id);
    cJSON_Delete(cs->recover_have);
    cJSON_Delete(cs->catchup_next);
    csr_log_free(&cs->csr);
    for (size_t i = 0; i < cs->nheld; i++) {
        free(cs->held[i].chat_id);
        frame_unref(cs->held[i].frame);
    }
    free(cs->held);
    free(cs);
}

static void reject(sio_socket *s, const char *code)
{
    buf_t b;
    buf_init(&b);
    const char *msg = strcmp(code, "unavailable") == 0 ? "unavailable" : "unauthorized";
    buf_printf(&b, "{\"message\":\"%s\",\"data\":{\"code\":\"%s\"}}", msg, code);
    sio_reject(s, b.data);
    buf_free(&b);
}

/* Ends a sending section (see chat_sock.busy); frees cs if the socket died meanwhile. */
static void chat_sock_unbusy(chat_sock *cs)
{
    if (--cs->busy == 0 && cs->dead)
        chat_sock_free(cs);
}

/* Releases held live messages: those newer than what the socket has now. Runs inside
 * on_catchup's busy section: a send that closes the socket marks cs dead, and the rest is only
 * freed. */
static void release_held(chat_sock *cs)
{
    for (size_t i = 0; i < cs->nheld; i++) {
        struct held_msg *h = &cs->held[i];
        if (!cs->dead && h->seq > csr_log_last(&cs->csr, h->chat_id) &&
            sio_send_frames(cs->s, &h->frame, 1, 0) == 0 && !cs->dead)
            csr_log_note(&cs->csr, h->chat_id, h->seq);
        free(h->chat_id);
        frame_unref(h->frame);
    }
    cs->nheld = 0;
    cs->catching_up = false;
}

/* ---- catch-up -------------------------------------------------------------------------
 * Messages a socket missed are read from PostgreSQL and sent before anything
 * live of it: while a read is in flight, live chat messages for the socket are
 * held. Chats added meanwhile are read next; the held messages go out (those
 * the socket does not have yet) when nothing is left to read. */

static const char CATCHUP_SQL[] =
    "SELECT " PG_MESSAGE_COLUMNS " FROM messages"
    " WHERE (chat_id, seq) IN (SELECT m.chat_id, m.seq FROM jsonb_each_text($1::jsonb) AS l(chat_id, seq)"
    "   JOIN chats c ON c.id = l.chat_id AND c.org_id = $2 AND ($3::text IS NULL OR c.customer_key = $3)"
    "   JOIN messages m ON m.chat_id = l.chat_id AND m.seq > l.seq::bigint)"
    " ORDER BY chat_id, seq";

static void catchup_run(chat_sock *cs);

static void on_catchup(void *ctx, const PGresult *res, const char *err)
{
    chat_op *op = ctx;
    chat_sock *cs = chat_op_sock(op);
    if (!cs)
        goto out;
    cs->busy++;
    if (!err) {
        buf_t b;
        buf_init(&b);
        for (int r = 0; r < PQntuples(res) && !cs->dead; r++) {
            pg_message m;
            if (pg_message_from_row(res, r, &m) != 0 ||
                m.seq <= csr_log_last(&cs->csr, m.chat_id))
                continue;
            buf_reset(&b);
            chat_message_args_row(&b, &m);
            /* a slow-consumer close inside the send frees nothing while busy */
            if (sio_emit(cs->s, b.data, b.len, NULL, 0, 0) == 0 && !cs->dead)
                csr_log_note(&cs->csr, m.chat_id, m.seq);
        }
        buf_free(&b);
    } else if (!cs->dead) {
        /* What the socket missed could not be read: it must not go on as if it had it (its
         * log would cover the gap, and live messages would follow). With its transport closed
         * the client reconnects by itself and asks again from its last seq (SPEC 12.4); a
         * server disconnect would not bring it back. */
        log_warn("chat: catch-up query failed, closing the socket's transport: %s", err);
        eio_abort(sio_eio(cs->s), "transport close");
    }
    if (!cs->dead) {
        if (cs->catchup_next)
            catchup_run(cs);
        else
            release_held(cs);
    }
    chat_sock_unbusy(cs);
out:
    chat_op_free(op);
}

static void catchup_run(chat_sock *cs)
{
    char *json = cJSON_PrintUnformatted(cs->catchup_next);
    cJSON_Delete(cs->catchup_next);
    cs->catchup_next = NULL;
    chat_op *op = chat_op_new(cs->s, -1, NULL);
    const char *params[3] = {json, cs->p.org, cs->p.role == AUTH_ROLE_CUSTOMER ? cs->p.key : NULL};
    cs->catching_up = true;
    pg_query(cs->app->pg, CATCHUP_SQL, 3, params, on_catchup, op);
    cJSON_free(json);
}

/* The socket has chat_id up to `have`: send it what follows. */
static void catchup_add(chat_sock *cs, const char *chat_id, int64_t have)
{
    if (!cs->catchup_next)
        cs->catchup_next = cJSON_CreateObject();
    cJSON *cur = cJSON_GetObjectItemCaseSensitive(cs->catchup_next, chat_id);
    if (!cur)
        cJSON_AddNumberToObject(cs->catchup_next, chat_id, (double)have);
    else if ((double)have < cur->valuedouble)
        cJSON_SetNumberValue(cur, (double)have);
    if (!cs->catching_up)
        catchup_run(cs);
}

/* The usable part of the client's context.lastSeq: at most CHAT_MAX_LAST_SEQ entries whose key
 * could be a chat id and whose value is a seq (0..9e15, floored), the first of a repeated key.
 * Everything else is ignored. The cap matters: every entry costs a linear search of the
 * socket's delivery log, and 80,000 entries in one CONNECT held the loop for 24 s. */
#define CHAT_MAX_LAST_SEQ 100
static cJSON *client_last_seq(const cJSON *ls)
{
    if (!cJSON_IsObject(ls))
        return NULL;
    cJSON *out = cJSON_CreateObject();
    int n = 0;
    for (const cJSON *e = ls->child; e && n < CHAT_MAX_LAST_SEQ; e = e->next) {
        if (!e->string || !e->string[0] || strlen(e->string) > 128 || !cJSON_IsNumber(e) ||
            !(e->valuedouble >= 0 && e->valuedouble <= 9e15) ||
            cJSON_GetObjectItemCaseSensitive(out, e->string))
            continue;
        cJSON_AddNumberToObject(out, e->string, floor(e->valuedouble));
        n++;
    }
    return out;
}

/* Starts catch-up for context.lastSeq (a map chatId -> seq); entries that are
 * not numbers are ignored, 100 chats at most. */
static void start_catchup(chat_sock *cs, const cJSON *last_seq)
{
    if (!cJSON_IsObject(last_seq))
        return;
    int n = 0;
    for (const cJSON *e = last_seq->child; e && n < 100; e = e->next) {
        if (!e->string || !cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 9e15)
            continue;
        catchup_add(cs, e->string, (int64_t)floor(e->valuedouble));
        n++;
    }
}

/* An agent's recovered socket follows again the chats it followed (assigned
 * ones come back from the session query as well; observed ones only from the
 * record). A customer's chats all come from the session query. */
static void rejoin_recovered(chat_sock *cs)
{
    if (cs->recovered && cs->p.role == AUTH_ROLE_AGENT)
        for (const cJSON *e = cs->recover_have ? cs->recover_have->child : NULL; e; e = e->next) {
            char *room = chat_room(cs->p.org, e->string);
            sio_join(cs->s, room);
            free(room);
        }
    cJSON_Delete(cs->recover_have);
    cs->recover_have = NULL;
}

static void on_session_chats(void *ctx, const PGresult *res, const char *err)
{
    chat_op *op = ctx;
    sio_socket *s = op->s;
    chat_sock *cs = sio_get_user(s);
    if (!cs || !s) {
        chat_op_free(op);
        return;
    }
    if (err) {
        log_warn("chat: session query failed: %s", err);
        sio_set_user(s, NULL);
        chat_sock_free(cs);
        reject(s, "unavailable");
        chat_op_free(op);
        return;
    }
    chat_app *app = cs->app;
    if (cs->recovered && strmap_get(&app->sockets, cs->recover_sid, strlen(cs->recover_sid))) {
        cs->recovered = false; /* its old socket is still here: start afresh */
        sio_random_id(cs->pid);
    }
    sio_accept_recoverable(s, cs->recovered ? cs->recover_sid : NULL, cs->pid);
    if (!sio_connected(s)) { /* the transport went away meanwhile */
        sio_set_user(s, NULL);
        chat_sock_free(cs);
        chat_op_free(op);
        return;
    }
    strmap_put(&app->sockets, sio_id(s), strlen(sio_id(s)), cs);
    strmap_put(&app->pids, cs->pid, strlen(cs->pid), cs);
    sio_join(s, cs->identity_room);
    if (cs->p.role == AUTH_ROLE_AGENT) {
        char room[300];
        snprintf(room, sizeof room, "agents:%s", cs->p.org);
        sio_join(s, room);
    }
    /* what the client has, per chat: its context.lastSeq or the recovered
     * state first, then (for other chats) the seq it is told now */
    for (const cJSON *e = cJSON_IsObject(op->json) ? op->json->child : NULL; e; e = e->next)
        if (e->string && cJSON_IsNumber(e) && e->valuedouble >= 0 && e->valuedouble <= 9e15)
            csr_log_seed(&cs->csr, e->string, (int64_t)floor(e->valuedouble)); /* as start_catchup */
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "[\"session\",{\"role\":\"");
    buf_puts(&b, cs->role);
    buf_puts(&b, "\",\"identity\":{\"type\":\"");
    buf_puts(&b, cs->role);
    buf_puts(&b, "\",\"id\":");
    buf_json_str(&b, cs->p.key, strlen(cs->p.key));
    buf_puts(&b, ",\"name\":");
    if (cs->p.name)
        buf_json_str(&b, cs->p.name, strlen(cs->p.name));
    else
        buf_puts(&b, "null");
    buf_puts(&b, "},\"chats\":[");
    for (int r = 0; r < PQntuples(res); r++) {
        const char *id = PQgetvalue(res, r, 0);
        char *room = chat_room(cs->p.org, id);
        int64_t last = atoll(PQgetvalue(res, r, 2));
        chat_order_seen(app, room, id, last);
        csr_log_seed(&cs->csr, id, last);
        sio_join(s, room);
        free(room);
        /* delivered here between the query and now: from the database */
        if (!cJSON_GetObjectItemCaseSensitive(op->json, id) && chat_order_passed(app, id, last))
            catchup_add(cs, id, last);
        if (r)
            buf_putc(&b, ',');
        buf_puts(&b, "{\"id\":");
        buf_json_str(&b, id, strlen(id));
        buf_puts(&b, ",\"status\":");
        buf_json_str(&b, PQgetvalue(res, r, 1), strlen(PQgetvalue(res, r, 1)));
        buf_printf(&b, ",\"lastSeq\":%s}", PQgetvalue(res, r, 2));
    }
    buf_puts(&b, "]");
    if (cs->recovered)
        buf_puts(&b, ",\"recovered\":true");
    buf_puts(&b, "}]");
    rejoin_recovered(cs);
    sio_emit(s, b.data, b.len, NULL, 0, 0);
    buf_free(&b);
    app->stats.connects++;
    start_catchup(cs, op->json);
    chat_hook_connected(cs);
    chat_op_free(op);
}

static const char SESSION_CUSTOMER_SQL[] =
    "SELECT id, status, last_seq FROM chats WHERE org_id = $1 AND customer_key = $2"
    " AND status <> 'closed' ORDER BY created_at";
static const char SESSION_AGENT_SQL[] =
    "SELECT id, status, last_seq FROM chats WHERE org_id = $1 AND agent_id = $2"
    " AND status = 'assigned' ORDER BY assigned_at";

/* ---- resync after a fan-out outage -------------------------------------------------- */

/* Joins rooms the socket should be in but is not (identity-wide joins that were
 * published while Redis was down never reached this node). */
static void on_resync(void *ctx, const PGresult *res, const char *err)
{
    chat_op *op = ctx;
    chat_sock *cs = chat_op_sock(op);
    if (cs && !err) {
        for (int r = 0; r < PQntuples(res); r++) {
            const char *id = PQgetvalue(res, r, 0);
            char *room = chat_room(cs->p.org, id);
            if (!sio_in_room(cs->s, room)) {
                /* Joined with nothing of the chat, not at its last seq now: the join was
                 * decided during the outage, and what was sent since is what the socket
                 * misses (joining at last_seq skipped it for good; found by a review). */
                int64_t last = atoll(PQgetvalue(res, r, 2));
                csr_log_join(&cs->csr, id, 0);
                int64_t have = csr_log_last(&cs->csr, id);
                chat_order_seen(cs->app, room, id, last);
                sio_join(cs->s, room);
                if (have < last)
                    catchup_add(cs, id, have);
            }
            free(room);
        }
    }
    chat_op_free(op);
}

static void resync_all(chat_app *app)
{
    size_t it;
    for (strmap_entry *e = strmap_first(&app->sockets, &it); e; e = strmap_next(&app->sockets, e, &it)) {
        chat_sock *cs = e->value;
        chat_op *op = chat_op_new(cs->s, -1, NULL);
        bool agent = cs->p.role == AUTH_ROLE_AGENT;
        const char *params[2] = {cs->p.org, agent ? cs->p.sub : cs->p.key};
        pg_query(app->pg, agent ? SESSION_AGENT_SQL : SESSION_CUSTOMER_SQL, 2, params, on_resync,
                 op);
    }
}

/* The fan-out subscription is back after a loss of its own: what was published meanwhile never
 * arrived here (identity-wide joins, events), so the sockets are re-joined as after an outage
 * (found by a review: `CLIENT KILL TYPE pubsub` left a tab out of a new chat for good). */
void chat_on_fanout_back(void *ctx)
{
    chat_app *app = ctx;
    log_info("chat: fan-out subscription back: re-joining this node's sockets to their chats");
    resync_all(app);
}

void chat_on_redis_state(void *ctx, enum redis_state st, const char *err)
{
    chat_app *app = ctx;
    if (st == RDS_READY && app->redis_was_down) {
        log_info("chat: fan-out back: re-joining this node's sockets to their chats");
        resync_all(app);
    }
    if (st == RDS_BACKOFF)
        app->redis_was_down = true;
    else if (st == RDS_READY)
        app->redis_was_down = false;
}

static void start_session(chat_sock *cs, chat_op *op)
{
    const char *params[2] = {cs->p.org, cs->p.role == AUTH_ROLE_AGENT ? cs->p.sub : cs->p.key};
    pg_query(cs->app->pg, cs->p.role == AUTH_ROLE_AGENT ? SESSION_AGENT_SQL : SESSION_CUSTOMER_SQL,
             2, params, on_session_chats, op);
}

/* Our pids are sio_random_id()s: 20 characters of [A-Za-z0-9_-]. */
static bool pid_ok(const char *pid)
{
    size_t n = strlen(pid);
    if (n != 20)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = pid[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* GETDEL of the recovery record: a pid is recovered at most once. */
static void on_recover_record(void *ctx, redisReply *reply, const char *err)
{
    chat_op *op = ctx;
    sio_socket *s = op->s;
    chat_sock *cs = sio_get_user(s);
    if (!cs || !sio_eio(s)) { /* the transport went away meanwhile (or shutdown) */
        sio_set_user(s, NULL);
        chat_sock_free(cs);
        chat_op_free(op);
        return;
    }
    csr_recovery rec;
    const char *why = "no record (expired, taken, or never kept)";
    if (!err && reply && reply->type == REDIS_REPLY_STRING &&
        csr_recover(reply->str, reply->len, cs->identity_room, op->str, &rec, &why) == 0) {
        cs->recovered = true;
        snprintf(cs->recover_sid, sizeof cs->recover_sid, "%s", rec.sid);
        /* the recovered state wins over the client's context.lastSeq */
        if (!cJSON_IsObject(op->json)) {
            cJSON_Delete(op->json);
            op->json = cJSON_CreateObject();
        }
        for (const cJSON *e = rec.have->child; e; e = e->next) {
            cJSON_DeleteItemFromObjectCaseSensitive(op->json, e->string);
            cJSON_AddNumberToObject(op->json, e->string, e->valuedouble);
        }
        cs->recover_have = rec.have;
    } else {
        log_debug("chat: session %s not recovered: %s", cs->pid, err ? err : why);
        sio_random_id(cs->pid);
    }
    start_session(cs, op);
}

static void chat_connect(void *ctx, sio_socket *s, const cJSON *auth, const char *raw, size_t len)
{
    chat_app *app = ctx;
    const char *token = chat_json_str(auth, "token");
    const char *org_hint = chat_json_str(auth, "orgId");
    chat_sock *cs = xcalloc(1, sizeof *cs);
    auth_err ae = auth_verify(&app->keys, token, org_hint, (int64_t)time(NULL), &cs->p);
    if (ae != AUTH_OK) {
        free(cs);
        reject(s, auth_strerror(ae));
        return;
    }
    cs->app = app;
    cs->s = s;
    cs->role = cs->p.role == AUTH_ROLE_AGENT ? "agent" : "customer";
    buf_t b;
    buf_init(&b);
    buf_printf(&b, "identity:%s:%s:%s", cs->p.org, cs->role, cs->p.key);
    cs->identity_room = buf_steal(&b, NULL);
    const cJSON *context = cJSON_GetObjectItemCaseSensitive(auth, "context");
    const char *cfg_id = chat_json_str(context, "configId");
    cs->config_id = cfg_id ? xstrdup(cfg_id) : NULL;
    cs->tokens = 4.0 * app->cfg->rate_events_per_s;
    cs->refill_ms = uv_now(app->loop);
    sio_set_user(s, cs);

    chat_op *op = chat_op_new(s, -1, NULL);
    op->json = client_last_seq(cJSON_GetObjectItemCaseSensitive(context, "lastSeq"));
    /* socket.io-client sends back the pid of its last session and the last
     * offset it saw (csr.h) */
    const char *pid = chat_json_str(auth, "pid");
    const char *offset = chat_json_str(auth, "offset");
    if (pid && pid_ok(pid) && app->cfg->recovery_ms > 0 && app->redis &&
        redis_is_ready(app->redis)) {
        snprintf(cs->pid, sizeof cs->pid, "%s", pid);
        op->str = offset ? xstrdup(offset) : NULL;
        /* Its old socket may still be open here: a long-poll client whose
         * network died between two polls is only noticed at the ping
         * timeout. The client is back, so that socket is dead: close it now
         * (recoverable: its record is SET before our GETDEL, on the same
         * Redis connection). Only for the same person. */
        chat_sock *old = strmap_get(&app->pids, pid, strlen(pid));
        if (old && !strcmp(old->identity_room, cs->identity_room) && sio_eio(old->s) &&
            sio_eio(old->s) != sio_eio(s))
            eio_abort(sio_eio(old->s), "transport close");
        buf_t key;
        buf_init(&key);
        rk_key2(&key, cs->p.org, "recover:", pid);
        redis_cmd(app->redis, on_recover_record, op, "GETDEL", key.data, NULL);
        buf_free(&key);
        return;
    }
    sio_random_id(cs->pid);
    start_session(cs, op);
}

/* The socket of a dropped session that may be recovered: its record, kept
 * CHATD_RECOVERY_MS in Redis for whichever node the client comes back to. */
struct follow_ctx {
    chat_sock *cs;
    cJSON *follows;
    char prefix[300];
};

static void add_follow(void *vctx, const char *room)
{
    struct follow_ctx *f = vctx;
    size_t n = strlen(f->prefix);
    if (strncmp(room, f->prefix, n) != 0 || !room[n])
        return;
    const char *chat_id = room + n;
    int64_t last = csr_log_last(&f->cs->csr, chat_id);
    if (last < 0) /* joined without a known seq: what this node delivered is what it got */
        last = chat_order_last(f->cs->app, chat_id);
    if (last >= 0)
        cJSON_AddNumberToObject(f->follows, chat_id, (double)last);
}

static void chat_disconnecting(void *ctx, sio_socket *s, const char *reason)
{
    chat_app *app = ctx;
    chat_sock *cs = sio_get_user(s);
    if (!cs || !csr_reason_recoverable(reason) || app->cfg->recovery_ms <= 0 || !app->redis ||
        !redis_is_ready(app->redis))
        return;
    struct follow_ctx f = {cs, cJSON_CreateObject(), ""};
    snprintf(f.prefix, sizeof f.prefix, "chat:%s:", cs->p.org);
    sio_socket_rooms(s, add_follow, &f);
    char *record = csr_record_json(&cs->csr, sio_id(s), cs->identity_room, f.follows);
    buf_t key;
    char px[24];
    buf_init(&key);
    rk_key2(&key, cs->p.org, "recover:", cs->pid);
    snprintf(px, sizeof px, "%d", app->cfg->recovery_ms);
    redis_cmd(app->redis, NULL, NULL, "SET", key.data, record, "PX", px, NULL);
    buf_free(&key);
    free(record);
    cJSON_Delete(f.follows);
}

static void chat_disconnect(void *ctx, sio_socket *s, const char *reason)
{
    chat_app *app = ctx;
    chat_sock *cs = sio_get_user(s);
    if (!cs)
        return;
    chat_hook_disconnected(cs);
    strmap_del(&app->sockets, sio_id(s), strlen(sio_id(s)));
    if (strmap_get(&app->pids, cs->pid, strlen(cs->pid)) == cs)
        strmap_del(&app->pids, cs->pid, strlen(cs->pid));
    sio_set_user(s, NULL);
    if (cs->busy) {
        cs->dead = true; /* freed by the sending loop (chat_sock_unbusy) */
        return;
    }
    chat_sock_free(cs);
}

/* ---- events ------------------------------------------------------------------- */

/* Flags of the event table. */
#define EV_CUSTOMER 1u /* customers may send it */
#define EV_AGENT 2u    /* agents may send it */

static const struct chat_event_row {
    const char *name;
    chat_handler fn;
    unsigned flags;
} events[] = {
    {"chat-message", chat_on_message, EV_CUSTOMER | EV_AGENT},
    {"typing", chat_on_typing, EV_CUSTOMER | EV_AGENT},
    {"read", chat_on_read, EV_CUSTOMER | EV_AGENT},
    {"history", chat_on_history, EV_CUSTOMER | EV_AGENT},
    {"close-chat", chat_on_close, EV_CUSTOMER | EV_AGENT},
    {"observe-chat", chat_on_observe, EV_AGENT},
    {"unobserve-chat", chat_on_unobserve, EV_AGENT},
    {"set-status", chat_on_set_status, EV_AGENT},
    {"pick-next", chat_on_pick_next, EV_AGENT},
    {"transfer-chat", chat_on_transfer, EV_AGENT},
    {"request-agent", chat_on_request_agent, EV_CUSTOMER},
};

/* Token bucket: rate_events_per_s, burst 4x. */
static bool rate_ok(chat_sock *cs)
{
    double rate = cs->app->cfg->rate_events_per_s;
    if (rate <= 0)
        return true;
    uint64_t now = uv_now(cs->app->loop);
    cs->tokens += (double)(now - cs->refill_ms) * rate / 1000.0;
    cs->refill_ms = now;
    if (cs->tokens > 4 * rate)
        cs->tokens = 4 * rate;
    if (cs->tokens < 1)
        return false;
    cs->tokens -= 1;
    return true;
}

static void chat_event(void *ctx, sio_socket *s, const sio_event *ev)
{
    chat_sock *cs = sio_get_user(s);
    if (!cs)
        return;
    for (size_t i = 0; i < ARRAY_LEN(events); i++) {
        if (strcmp(events[i].name, ev->name) != 0)
            continue;
        unsigned need = cs->p.role == AUTH_ROLE_AGENT ? EV_AGENT : EV_CUSTOMER;
        if (!(events[i].flags & need)) {
            chat_ack_err(s, ev->ack_id, "forbidden", "not allowed for this role");
            return;
        }
        if (!rate_ok(cs)) {
            chat_ack_err(s, ev->ack_id, "rate_limited", "too many events, slow down");
            return;
        }
        if (!cJSON_IsObject(ev->args)) {
            chat_ack_err(s, ev->ack_id, "bad_request", "payload must be an object");
            return;
        }
        events[i].fn(cs, ev);
        return;
    }
    chat_ack_err(s, ev->ack_id, "bad_request", "unknown event");
}

/* ---- app ------------------------------------------------------------------------ */

chat_app *chat_app_new(uv_loop_t *loop, const chatd_config *cfg, sio_server *sio,
                       pg_client *pg, redis_client *redis, char *err, size_t errlen)
{
    chat_app *app = xcalloc(1, sizeof *app);
    app->loop = loop;
    app->cfg = cfg;
    app->pg = pg;
    app->redis = redis;
    app->sio = sio;
    if (auth_keys_from_config(&app->keys, cfg, err, errlen) != 0) {
        auth_keys_free(&app->keys);
        free(app);
        return NULL;
    }
    /* node id + a random suffix: a restarted node never mistakes an old peer's
     * publications for its own */
    snprintf(app->node_id, sizeof app->node_id, "%s/%08x", cfg->node_id,
             (unsigned)(uv_hrtime() ^ (uint64_t)rand()));
    strmap_init(&app->sockets);
    strmap_init(&app->pids);
    chat_order_start(app);
    sio_nsp_ops ops = {chat_connect, chat_event, chat_disconnect, chat_disconnecting};
    app->nsp = sio_add_namespace(sio, "/chat", &ops, app);
    if (redis)
        chat_app_set_redis(app, redis);
    return app;
}

void chat_app_set_redis(chat_app *app, redis_client *redis)
{
    app->redis = redis;
    redis_subscribe(redis, CHAT_FANOUT_CHANNEL);
    redis_subscribe_expired(redis);
    chat_hooks_start(app);
    app->hooks_started = true;
}

void chat_app_stop(chat_app *app)
{
    if (!app)
        return;
    chat_order_stop(app);
    if (app->hooks_started) {
        chat_hooks_stop(app);
        app->hooks_started = false;
    }
}

bool chat_app_ready(const chat_app *app)
{
    return pg_is_ready(app->pg) && (!app->redis || redis_is_ready(app->redis));
}

void chat_app_free(chat_app *app)
{
    if (!app)
        return;
    strmap_free(&app->sockets);
    strmap_free(&app->pids);
    auth_keys_free(&app->keys);
    free(app);
}
