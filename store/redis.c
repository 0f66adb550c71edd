/* Redis client: hiredis async on the libuv loop (see redis.h for the
 * contract). Shape follows h2o:lib/common/redis.c (client object with a state,
 * detach on close) and hiredis' callback rules (a NULL reply = no answer).
 *
 * Life of a connection (struct rconn, two per client):
 *   IDLE -> [RESOLVING] -> CONNECTING -> INIT -> READY
 *                ^                                  |
 *                +---------- BACKOFF <--------------+ (error, EOF, timeout)
 * The uv timer of the connection is the connect timeout in RESOLVING /
 * CONNECTING / INIT and the backoff delay in BACKOFF.
 *
 * Ownership: a redis_op is created per command, handed to hiredis as
 * privdata and freed right after its callback (or after the deferred
 * failure). hiredis frees its own context after the disconnect callback;
 * the libuv adapter frees its poll handle in its own close callback. The
 * client struct is freed in the close callback of the last of its uv
 * handles (redis_free).
 */
#include "store/redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/async.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/xalloc.h"

#define MAX_INLINE_ARGS 64

struct redis_client;

/* One hiredis connection (command or subscriber). Embedded in the client. */
typedef struct rconn {
    struct redis_client *r;
    bool is_sub;
    redisAsyncContext *ac; /* NULL when not connected */
    enum redis_state state;
    uv_timer_t timer;      /* connect timeout / backoff */
    uv_getaddrinfo_t gai;
    bool gai_active;
    int backoff_ms;
    int init_pending;      /* init replies still expected */
    bool init_failed;
    bool dropping;         /* inside conn_drop: on_disconnect must not reschedule */
    bool quiet;            /* a failure was logged since the last READY: log at debug */
    bool was_ready;        /* READY at least once */
    const char *fail_reason;
    char ip[64];
} rconn;

struct redis_op {
    struct redis_client *r;
    redis_reply_cb cb;
    void *ctx;
    bool detached;
    bool retried;
    rk_argv *retry; /* script calls: the arguments, for the NOSCRIPT retry */
    uint64_t sent_ms;
    struct redis_op *prev, *next; /* in-flight list or deferred list */
};

typedef struct rscript {
    struct redis_client *r;
    int id;
    char *src;
    size_t len;
    char sha[41];
} rscript;

typedef struct rsub {
    char *name;
    bool pattern;
} rsub;

struct redis_client {
    uv_loop_t *loop;
    char *host, *user, *password;
    int port, db;
    bool load_scripts, notify_keyspace;
    int connect_timeout_ms, command_timeout_ms, backoff_min_ms, backoff_max_ms;
    redis_state_cb on_state;
    void *state_ctx;
    void (*on_sub_back)(void *ctx);
    redis_message_cb on_message;
    void *message_ctx;

    rconn cmd, sub;
    rscript scripts[RK_SCRIPT__COUNT];
    rsub *subs;
    size_t nsubs, capsubs;

    /* ops handed to hiredis on cmd, oldest first (command timeout) */
    redis_op *inflight_head, *inflight_tail;
    /* ops to fail from the loop (issued while not READY) */
    redis_op *deferred_head, *deferred_tail;
    uv_timer_t defer_timer;
    uv_timer_t check_timer; /* command timeouts, every 250 ms */

    unsigned long connects;
    bool closing;
    int open_handles;
};

static void conn_connect(rconn *c);
static void conn_drop(rconn *c, const char *reason);
static void conn_schedule(rconn *c, const char *reason);
static void send_init(rconn *c);
static void client_unref(redis_client *r);

const char *redis_state_str(enum redis_state st)
{
    switch (st) {
    case RDS_IDLE:
        return "idle";
    case RDS_RESOLVING:
        return "resolving";
    case RDS_CONNECTING:
        return "connecting";
    case RDS_INIT:
        return "init";
    case RDS_READY:
        return "ready";
    case RDS_BACKOFF:
        return "backoff";
    case RDS_CLOSING:
        return "closing";
    }
    return "?";
}

/* ---- op lists ---- */

static void list_push(redis_op **head, redis_op **tail, redis_op *op)
{
    op->next = NULL;
    op->prev = *tail;
    if (*tail)
        (*tail)->next = op;
    else
        *head = op;
    *tail = op;
}

static void list_remove(redis_op **head, redis_op **tail, redis_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else if (*head == op)
        *head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else if (*tail == op)
        *tail = op->prev;
    op->prev = op->next = NULL;
}

static void op_free(redis_op *op)
{
    if (op->retry) {
        rk_argv_free(op->retry);
        free(op->retry);
    }
    free(op);
}

static void op_finish(redis_op *op, redisReply *reply, const char *err)
{
    if (!op->detached && op->cb)
        op->cb(op->ctx, reply, reply ? NULL : (err ? err : "redis unavailable"));
    op_free(op);
}

void redis_op_detach(redis_op *op)
{
    if (op)
        op->detached = true;
}

static void on_defer_timer(uv_timer_t *t);

/* Fails op from the loop (next iteration), never synchronously. */
static void op_defer_fail(redis_client *r, redis_op *op)
{
    if (r->closing) { /* no loop work any more: fail right away */
        op_finish(op, NULL, "closing");
        return;
    }
    list_push(&r->deferred_head, &r->deferred_tail, op);
    uv_timer_start(&r->defer_timer, on_defer_timer, 0, 0);
}

static void on_defer_timer(uv_timer_t *t)
{
    redis_client *r = t->data;
    redis_op *op;
    /* take the whole list first: callbacks may issue new commands */
    redis_op *head = r->deferred_head;
    r->deferred_head = r->deferred_tail = NULL;
    while ((op = head) != NULL) {
        head = op->next;
        op->prev = op->next = NULL;
        op_finish(op, NULL, r->cmd.state == RDS_READY ? "redis busy" : "redis unavailable");
    }
}

/* ---- reply callbacks ---- */

static bool is_noscript(const redisReply *reply)
{
    return reply && reply->type == REDIS_REPLY_ERROR && reply->len >= 8 &&
           memcmp(reply->str, "NOSCRIPT", 8) == 0;
}

static int send_op(redis_client *r, redis_op *op, int argc, const char **argv,
                   const size_t *argvlen);
static void on_reload_reply(redisAsyncContext *ac, void *reply, void *privdata);

static void on_op_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    redis_op *op = privdata;
    redis_client *r = op->r;
    redisReply *reply = replyp;
    list_remove(&r->inflight_head, &r->inflight_tail, op);

    if (is_noscript(reply) && op->retry && !op->retried && r->cmd.ac == ac && !op->detached) {
        /* Script cache flushed: load it again, then retry once. Both go on
         * the same connection, so the EVALSHA runs after the SCRIPT LOAD. */
        rscript *s = &r->scripts[op->retry->script];
        op->retried = true;
        log_info("redis: NOSCRIPT for %s, reloading", rk_script_name(s->id));
        const char *la[3] = {"SCRIPT", "LOAD", s->src};
        size_t ll[3] = {6, 4, s->len};
        if (redisAsyncCommandArgv(ac, on_reload_reply, s, 3, la, ll) == REDIS_OK) {
            const char *argv[RK_ARGV_MAX + 3];
            size_t argvlen[RK_ARGV_MAX + 3];
            char num[24];
            int argc = rk_argv_resolve(op->retry, s->sha, num, argv, argvlen,
                                       RK_ARGV_MAX + 3);
            if (argc > 0 && send_op(r, op, argc, argv, argvlen) == 0)
                return;
            op_finish(op, NULL, "redis unavailable");
            return;
        }
    }
    op_finish(op, reply, r->cmd.fail_reason ? r->cmd.fail_reason : "connection lost");
}

/* Hands op to hiredis on the command connection. Returns 0, or -1 (op not
 * consumed) when the connection cannot take it. */
static int send_op(redis_client *r, redis_op *op, int argc, const char **argv,
                   const size_t *argvlen)
{
    if (!r->cmd.ac || r->cmd.state != RDS_READY)
        return -1;
    if (redisAsyncCommandArgv(r->cmd.ac, on_op_reply, op, argc, argv, argvlen) != REDIS_OK)
        return -1;
    op->sent_ms = uv_now(r->loop);
    list_push(&r->inflight_head, &r->inflight_tail, op);
    return 0;
}

static redis_op *op_new(redis_client *r, redis_reply_cb cb, void *ctx)
{
    redis_op *op = xcalloc(1, sizeof(*op));
    op->r = r;
    op->cb = cb;
    op->ctx = ctx;
    return op;
}

redis_op *redis_cmd_argv(redis_client *r, int argc, const char **argv, const size_t *argvlen,
                         redis_reply_cb cb, void *ctx)
{
    redis_op *op = op_new(r, cb, ctx);
    if (argc <= 0 || send_op(r, op, argc, argv, argvlen) != 0)
        op_defer_fail(r, op);
    return op;
}

redis_op *redis_cmd(redis_client *r, redis_reply_cb cb, void *ctx, const char *arg0, ...)
{
    const char *argv[MAX_INLINE_ARGS];
    size_t argvlen[MAX_INLINE_ARGS];
    int argc = 0;
    va_list ap;
    va_start(ap, arg0);
    for (const char *s = arg0; s && argc < MAX_INLINE_ARGS; s = va_arg(ap, const char *)) {
        argv[argc] = s;
        argvlen[argc] = strlen(s);
        argc++;
    }
    va_end(ap);
    return redis_cmd_argv(r, argc, argv, argvlen, cb, ctx);
}

redis_op *redis_eval(redis_client *r, const rk_argv *a, redis_reply_cb cb, void *ctx)
{
    redis_op *op = op_new(r, cb, ctx);
    const char *argv[RK_ARGV_MAX + 3];
    size_t argvlen[RK_ARGV_MAX + 3];
    char num[24];
    const char *sha = NULL;
    if (a->script != RK_NO_SCRIPT) {
        if (a->script < 0 || a->script >= RK_SCRIPT__COUNT || !r->scripts[a->script].src) {
            op_defer_fail(r, op);
            return op;
        }
        sha = r->scripts[a->script].sha;
        op->retry = xmalloc(sizeof(*op->retry));
        rk_argv_copy(op->retry, a);
    }
    int argc = rk_argv_resolve(a, sha, num, argv, argvlen, RK_ARGV_MAX + 3);
    if (argc <= 0 || send_op(r, op, argc, argv, argvlen) != 0)
        op_defer_fail(r, op);
    return op;
}

redis_op *redis_publish(redis_client *r, const char *channel, const char *data, size_t len,
                        redis_reply_cb cb, void *ctx)
{
    const char *argv[3] = {"PUBLISH", channel, data};
    size_t argvlen[3] = {7, strlen(channel), len};
    return redis_cmd_argv(r, 3, argv, argvlen, cb, ctx);
}

/* ---- command timeouts ---- */

static void on_check_timer(uv_timer_t *t)
{
    redis_client *r = t->data;
    redis_op *op = r->inflight_head;
    if (!op || !r->cmd.ac)
        return;
    uint64_t now = uv_now(r->loop);
    if (now - op->sent_ms > (uint64_t)r->command_timeout_ms) {
        log_warn("redis: no reply within %d ms, reconnecting", r->command_timeout_ms);
        conn_drop(&r->cmd, "timeout");
    }
}

/* ---- libuv adapter ----
 * Our own copy of hiredis' adapters/libuv.h. The 0.14 version returns early
 * when uv_poll reports an error status, so a refused connect (EPOLLERR) is
 * never handed to hiredis and only the connect timeout notices it. As in
 * later hiredis releases, an error status is delivered as the events we
 * were waiting for, and hiredis reads the socket error itself.
 *
 * Output of a connected context is written by an idle handle, before the loop
 * next polls, not on the next writable event: a command then costs no epoll_ctl
 * to watch for writability and back, and no extra loop iteration; the commands
 * of one iteration still leave together. (An idle handle rather than a prepare
 * handle: one started from inside another prepare callback would only run after
 * the loop has blocked, while an active idle handle keeps the poll from
 * blocking.) Output the socket does not take at once waits for writability. */
typedef struct rlv_events {
    redisAsyncContext *context;
    uv_poll_t handle;
    uv_idle_t flush;
    int events;      /* what hiredis asked for */
    int watching;    /* what the poll handle watches */
    bool flushing;   /* inside rlv_flush's redisAsyncHandleWrite */
    int open;        /* handles not closed yet */
} rlv_events;

static void rlv_poll(uv_poll_t *handle, int status, int events)
{
    rlv_events *p = handle->data;
    int ev = status ? p->events : events;
    if (p->context != NULL && (ev & UV_READABLE))
        redisAsyncHandleRead(p->context);
    if (p->context != NULL && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(p->context);
}

static void rlv_watch(rlv_events *p, int events)
{
    if (events == p->watching)
        return;
    p->watching = events;
    if (events)
        uv_poll_start(&p->handle, events, rlv_poll);
    else
        uv_poll_stop(&p->handle);
}

static void rlv_flush(uv_idle_t *h);

/* A connected context with output waits for the flush. Anything else is watched as hiredis
 * asks: a connect in progress (reported by writability), and output the socket did not take
 * (hiredis asks for writability again from inside the flush; flushing again at once would spin
 * the loop until the peer reads). */
static void rlv_update(rlv_events *p)
{
    bool flush = (p->events & UV_WRITABLE) && p->context &&
                 (p->context->c.flags & REDIS_CONNECTED) && !p->flushing &&
                 !(p->watching & UV_WRITABLE);
    if (flush) {
        uv_idle_start(&p->flush, rlv_flush); /* no-op when already started */
        rlv_watch(p, p->events & ~UV_WRITABLE);
    } else {
        rlv_watch(p, p->events);
    }
}

static void rlv_flush(uv_idle_t *h)
{
    rlv_events *p = h->data;
    uv_idle_stop(h);
    if (p->context != NULL && (p->events & UV_WRITABLE)) {
        p->flushing = true;
        redisAsyncHandleWrite(p->context); /* calls rlv_del_write when all is written */
        p->flushing = false; /* p outlives a context freed in there: closed, not yet freed */
    }
    /* what is still waiting goes out when the socket is writable again */
    if (p->context != NULL)
        rlv_watch(p, p->events);
}

static void rlv_add_read(void *privdata)
{
    rlv_events *p = privdata;
    p->events |= UV_READABLE;
    rlv_update(p);
}

static void rlv_del_read(void *privdata)
{
    rlv_events *p = privdata;
    p->events &= ~UV_READABLE;
    rlv_update(p);
}

static void rlv_add_write(void *privdata)
{
    rlv_events *p = privdata;
    p->events |= UV_WRITABLE;
    rlv_update(p);
}

static void rlv_del_write(void *privdata)
{
    rlv_events *p = privdata;
    p->events &= ~UV_WRITABLE;
    rlv_update(p);
}

static void rlv_on_close(uv_handle_t *handle)
{
    rlv_events *p = handle->data;
    if (--p->open == 0)
        free(p);
}

static void rlv_cleanup(void *privdata)
{
    rlv_events *p = privdata;
    p->context = NULL; /* the context is being freed */
    uv_close((uv_handle_t *)&p->handle, rlv_on_close);
    uv_close((uv_handle_t *)&p->flush, rlv_on_close);
}

static int rlv_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data != NULL)
        return REDIS_ERR;
    rlv_events *p = xcalloc(1, sizeof(*p));
    if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
        free(p);
        return REDIS_ERR;
    }
    uv_idle_init(loop, &p->flush);
    p->open = 2;
    p->handle.data = p;
    p->flush.data = p;
    p->context = ac;
    ac->ev.addRead = rlv_add_read;
    ac->ev.delRead = rlv_del_read;
    ac->ev.addWrite = rlv_add_write;
    ac->ev.delWrite = rlv_del_write;
    ac->ev.cleanup = rlv_cleanup;
    ac->ev.data = p;
    return REDIS_OK;
}

/* ---- connection state machine ---- */

static void conn_set_state(rconn *c, enum redis_state st, const char *err)
{
    if (c->state == st)
        return;
    c->state = st;
    redis_client *r = c->r;
    if (!c->is_sub && r->on_state && (st == RDS_READY || st == RDS_BACKOFF))
        r->on_state(r->state_ctx, st, err);
    if (c->is_sub && st == RDS_READY) {
        if (c->was_ready && r->on_sub_back)
            r->on_sub_back(r->state_ctx);
        c->was_ready = true;
    }
}

static void init_done_one(rconn *c)
{
    if (--c->init_pending > 0 || c->state != RDS_INIT)
        return;
    if (c->init_failed) {
        conn_drop(c, "init failed");
        return;
    }
    uv_timer_stop(&c->timer);
    c->backoff_ms = 0;
    c->quiet = false;
    if (!c->is_sub)
        c->r->connects++;
    log_info("redis: %s connection ready (%s:%d)", c->is_sub ? "subscriber" : "command",
             c->r->host, c->r->port);
    conn_set_state(c, RDS_READY, NULL);
}

/* Generic init reply: errors fail the init (AUTH refused, script error). */
static void on_init_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    rconn *c = privdata;
    redisReply *reply = replyp;
    if (!reply || c->ac != ac)
        return; /* connection went away; on_disconnect handles it */
    if (reply->type == REDIS_REPLY_ERROR) {
        log_error("redis: init command failed: %.*s", (int)reply->len, reply->str);
        c->init_failed = true;
    }
    init_done_one(c);
}

static void on_script_loaded(redisAsyncContext *ac, void *replyp, void *privdata)
{
    rscript *s = privdata;
    rconn *c = &s->r->cmd;
    redisReply *reply = replyp;
    if (!reply || c->ac != ac)
        return;
    if (reply->type == REDIS_REPLY_STRING && reply->len == 40) {
        if (memcmp(s->sha, reply->str, 40) != 0)
            memcpy(s->sha, reply->str, 40);
    } else {
        log_error("redis: SCRIPT LOAD %s failed: %.*s", rk_script_name(s->id),
                  (int)(reply->str ? reply->len : 0), reply->str ? reply->str : "");
        c->init_failed = true;
    }
    init_done_one(c);
}

static void on_reload_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    rscript *s = privdata;
    redisReply *reply = replyp;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_error("redis: reloading %s failed: %.*s", rk_script_name(s->id), (int)reply->len,
                  reply->str);
}

static void on_config_get(redisAsyncContext *ac, void *replyp, void *privdata)
{
    rconn *c = privdata;
    redisReply *reply = replyp;
    if (!reply || c->ac != ac)
        return;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[1]->type == REDIS_REPLY_STRING) {
        const char *cur = reply->element[1]->str;
        char flags[64];
        snprintf(flags, sizeof(flags), "%s", cur);
        bool has_e = strchr(flags, 'E') != NULL;
        bool has_x = strchr(flags, 'x') != NULL || strchr(flags, 'A') != NULL;
        if (!has_e || !has_x) {
            size_t n = strlen(flags);
            if (!has_e && n + 1 < sizeof(flags))
                flags[n++] = 'E';
            if (!has_x && n + 1 < sizeof(flags))
                flags[n++] = 'x';
            flags[n] = '\0';
            log_info("redis: CONFIG SET notify-keyspace-events %s (was \"%s\")", flags, cur);
            const char *argv[4] = {"CONFIG", "SET", "notify-keyspace-events", flags};
            size_t argvlen[4] = {6, 3, 22, strlen(flags)};
            c->init_pending++;
            /* a refused CONFIG SET is only logged: the reconciler still fires */
            if (redisAsyncCommandArgv(ac, on_init_reply, c, 4, argv, argvlen) != REDIS_OK)
                c->init_pending--;
        }
    } else {
        log_warn("redis: CONFIG GET notify-keyspace-events refused (%.*s); relying on the "
                 "reconciler",
                 reply->type == REDIS_REPLY_ERROR ? (int)reply->len : 0,
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "");
    }
    init_done_one(c);
}

static void on_sub_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    rconn *c = privdata;
    redis_client *r = c->r;
    redisReply *reply = replyp;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return;
    redisReply **e = reply->element;
    if (e[0]->type != REDIS_REPLY_STRING)
        return;
    if (rk_reply_is(e[0], "message") && e[1]->type == REDIS_REPLY_STRING &&
        e[2]->type == REDIS_REPLY_STRING) {
        if (r->on_message)
            r->on_message(r->message_ctx, NULL, e[1]->str, e[1]->len, e[2]->str, e[2]->len);
    } else if (rk_reply_is(e[0], "pmessage") && reply->elements >= 4 &&
               e[1]->type == REDIS_REPLY_STRING && e[2]->type == REDIS_REPLY_STRING &&
               e[3]->type == REDIS_REPLY_STRING) {
        if (r->on_message)
            r->on_message(r->message_ctx, e[1]->str, e[2]->str, e[2]->len, e[3]->str,
                          e[3]->len);
    } else if ((rk_reply_is(e[0], "subscribe") || rk_reply_is(e[0], "psubscribe")) &&
               c->ac == ac && c->state == RDS_INIT) {
        init_done_one(c);
    }
}

static int sub_send(rconn *c, const rsub *s, bool subscribe)
{
    const char *cmd = subscribe ? (s->pattern ? "PSUBSCRIBE" : "SUBSCRIBE")
                                : (s->pattern ? "PUNSUBSCRIBE" : "UNSUBSCRIBE");
    const char *argv[2] = {cmd, s->name};
    size_t argvlen[2] = {strlen(cmd), strlen(s->name)};
    return redisAsyncCommandArgv(c->ac, subscribe ? on_sub_reply : NULL, c, 2, argv, argvlen) ==
                   REDIS_OK
               ? 0
               : -1;
}

/* Connected: AUTH, SELECT, then scripts and CONFIG (command connection) or
 * the remembered subscriptions (subscriber connection). READY when every
 * init reply arrived; the connect timer still runs and bounds this phase. */
static void send_init(rconn *c)
{
    redis_client *r = c->r;
    c->init_pending = 1; /* guard until everything is queued */
    c->init_failed = false;
    if (r->password) { /* AUTH password, or AUTH user password (ACL) */
        const char *argv[3] = {"AUTH", r->password, NULL};
        size_t argvlen[3] = {4, strlen(r->password), 0};
        int argc = 2;
        if (r->user) {
            argv[1] = r->user;
            argvlen[1] = strlen(r->user);
            argv[2] = r->password;
            argvlen[2] = strlen(r->password);
            argc = 3;
        }
        c->init_pending++;
        redisAsyncCommandArgv(c->ac, on_init_reply, c, argc, argv, argvlen);
    }
    if (r->db != 0) {
        char num[16];
        snprintf(num, sizeof(num), "%d", r->db);
        const char *argv[2] = {"SELECT", num};
        size_t argvlen[2] = {6, strlen(num)};
        c->init_pending++;
        redisAsyncCommandArgv(c->ac, on_init_reply, c, 2, argv, argvlen);
    }
    if (!c->is_sub) {
        if (r->load_scripts)
            for (int i = 0; i < RK_SCRIPT__COUNT; i++) {
                rscript *s = &r->scripts[i];
                const char *argv[3] = {"SCRIPT", "LOAD", s->src};
                size_t argvlen[3] = {6, 4, s->len};
                c->init_pending++;
                redisAsyncCommandArgv(c->ac, on_script_loaded, s, 3, argv, argvlen);
            }
        if (r->notify_keyspace) {
            const char *argv[3] = {"CONFIG", "GET", "notify-keyspace-events"};
            size_t argvlen[3] = {6, 3, 22};
            c->init_pending++;
            redisAsyncCommandArgv(c->ac, on_config_get, c, 3, argv, argvlen);
        }
    } else {
        for (size_t i = 0; i < r->nsubs; i++) {
            c->init_pending++;
            if (sub_send(c, &r->subs[i], true) != 0)
                c->init_pending--;
        }
    }
    init_done_one(c); /* drop the guard */
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rconn *c = ac->data;
    if (c->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this callback */
        if (c->quiet)
            log_debug("redis: connect to %s:%d failed: %s", c->r->host, c->r->port,
                      ac->errstr[0] ? ac->errstr : "error");
        else
            log_warn("redis: connect to %s:%d failed: %s (retrying with backoff)", c->r->host,
                     c->r->port, ac->errstr[0] ? ac->errstr : "error");
        c->quiet = true;
        c->ac = NULL;
        conn_schedule(c, "connect failed");
        return;
    }
    conn_set_state(c, RDS_INIT, NULL);
    c->fail_reason = NULL;
    /* TCP keepalive: a peer that vanished without a RST (host down, network
     * cut) is noticed even on the subscriber connection, which sends nothing */
    redisEnableKeepAlive((redisContext *)&ac->c);
    send_init(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rconn *c = ac->data;
    if (c->ac != ac)
        return;
    c->ac = NULL;
    if (c->dropping)
        return; /* conn_drop reschedules */
    log_warn("redis: %s connection lost: %s", c->is_sub ? "subscriber" : "command",
             ac->errstr[0] ? ac->errstr : "closed");
    conn_schedule(c, "connection lost");
}

/* Takes the connection down now: every pending callback runs with NULL. */
static void conn_drop(rconn *c, const char *reason)
{
    redisAsyncContext *ac = c->ac;
    if (!ac)
        return;
    c->dropping = true;
    c->fail_reason = reason;
    redisAsyncFree(ac); /* pending callbacks (NULL), on_disconnect if connected */
    c->dropping = false;
    c->ac = NULL;
    c->fail_reason = NULL;
    conn_schedule(c, reason);
}

static void on_conn_timer(uv_timer_t *t)
{
    rconn *c = t->data;
    switch (c->state) {
    case RDS_BACKOFF:
        conn_connect(c);
        break;
    case RDS_RESOLVING:
        if (c->gai_active)
            uv_cancel((uv_req_t *)&c->gai); /* on_resolved sees ECANCELED */
        break;
    case RDS_CONNECTING:
    case RDS_INIT:
        if (!c->quiet)
            log_warn("redis: %s connection: connect timeout",
                     c->is_sub ? "subscriber" : "command");
        c->quiet = true;
        conn_drop(c, "connect timeout");
        break;
    default:
        break;
    }
}

/* Waits backoff_ms (doubling, jitter +-20%) before the next attempt. */
static void conn_schedule(rconn *c, const char *reason)
{
    redis_client *r = c->r;
    if (r->closing)
        return;
    if (c->backoff_ms == 0)
        c->backoff_ms = r->backoff_min_ms;
    else if (c->backoff_ms < r->backoff_max_ms)
        c->backoff_ms = c->backoff_ms * 2 > r->backoff_max_ms ? r->backoff_max_ms
                                                              : c->backoff_ms * 2;
    int jitter = c->backoff_ms / 5;
    int delay = c->backoff_ms + (jitter ? (rand() % (2 * jitter + 1)) - jitter : 0);
    if (delay < 1)
        delay = 1;
    conn_set_state(c, RDS_BACKOFF, reason);
    uv_timer_start(&c->timer, on_conn_timer, (uint64_t)delay, 0);
}

static void conn_connect_ip(rconn *c, const char *ip)
{
    redis_client *r = c->r;
    redisAsyncContext *ac = redisAsyncConnect(ip, r->port);
    if (!ac) {
        conn_schedule(c, "out of memory");
        return;
    }
    if (ac->err) {
        log_warn("redis: connect to %s:%d: %s", ip, r->port, ac->errstr);
        redisAsyncFree(ac);
        conn_schedule(c, "connect failed");
        return;
    }
    ac->data = c;
    if (rlv_attach(ac, r->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        conn_schedule(c, "attach failed");
        return;
    }
    c->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    conn_set_state(c, RDS_CONNECTING, NULL);
    uv_timer_start(&c->timer, on_conn_timer, (uint64_t)r->connect_timeout_ms, 0);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    rconn *c = req->data;
    c->gai_active = false;
    if (c->r->closing) {
        uv_freeaddrinfo(res);
        client_unref(c->r); /* reference taken in redis_free */
        return;
    }
    if (status != 0 || !res) {
        log_warn("redis: cannot resolve %s: %s", c->r->host, uv_strerror(status));
        uv_freeaddrinfo(res);
        conn_schedule(c, "resolve failed");
        return;
    }
    char ip[64] = "";
    if (res->ai_family == AF_INET)
        uv_ip4_name((struct sockaddr_in *)res->ai_addr, ip, sizeof(ip));
    else if (res->ai_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, ip, sizeof(ip));
    uv_freeaddrinfo(res);
    if (!ip[0]) {
        conn_schedule(c, "resolve failed");
        return;
    }
    snprintf(c->ip, sizeof(c->ip), "%s", ip);
    conn_connect_ip(c, c->ip);
}

/* Starts one attempt: numeric hosts connect directly, names are resolved
 * with uv_getaddrinfo first (hiredis would block the loop in getaddrinfo). */
static void conn_connect(rconn *c)
{
    redis_client *r = c->r;
    if (r->closing)
        return;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, r->host, &a4) == 1 || inet_pton(AF_INET6, r->host, &a6) == 1) {
        conn_connect_ip(c, r->host);
        return;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    c->gai.data = c;
    if (uv_getaddrinfo(r->loop, &c->gai, on_resolved, r->host, NULL, &hints) != 0) {
        conn_schedule(c, "resolve failed");
        return;
    }
    c->gai_active = true;
    conn_set_state(c, RDS_RESOLVING, NULL);
    uv_timer_start(&c->timer, on_conn_timer, (uint64_t)r->connect_timeout_ms, 0);
}

/* ---- URL ---- */

static int parse_url(redis_client *r, const char *url)
{
    const char *p = url;
    if (strncmp(p, "redis://", 8) == 0)
        p += 8;
    else if (strstr(p, "://"))
        return -1;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (colon > p)
                r->user = xstrndup(p, (size_t)(colon - p));
            r->password = xstrndup(colon + 1, (size_t)(at - colon - 1));
        } else {
            r->password = xstrndup(p, (size_t)(at - p));
        }
        if (r->password && !r->password[0]) {
            free(r->password);
            r->password = NULL;
        }
        p = at + 1;
    }
    const char *end = p + strcspn(p, "/?");
    const char *hs = p, *he;
    const char *port = NULL;
    if (*p == '[') { /* [v6]:port */
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb)
            return -1;
        hs = p + 1;
        he = rb;
        if (rb + 1 < end && rb[1] == ':')
            port = rb + 2;
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        he = colon ? colon : end;
        if (colon)
            port = colon + 1;
    }
    r->host = he > hs ? xstrndup(hs, (size_t)(he - hs)) : xstrdup("127.0.0.1");
    r->port = 6379;
    if (port && port < end) {
        char *e;
        long v = strtol(port, &e, 10);
        if (e != end || v <= 0 || v > 65535)
            return -1;
        r->port = (int)v;
    }
    r->db = 0;
    if (*end == '/' && end[1] && end[1] != '?') {
        char *e;
        long v = strtol(end + 1, &e, 10);
        if ((*e && *e != '?') || v < 0 || v > 10000)
            return -1;
        r->db = (int)v;
    }
    return 0;
}

/* ---- lifecycle ---- */

void redis_options_init(redis_options *o, const chatd_config *cfg)
{
    memset(o, 0, sizeof(*o));
    o->url = cfg && cfg->redis_url ? cfg->redis_url : "redis://127.0.0.1:6379";
    o->load_scripts = true;
    o->notify_keyspace = cfg ? cfg->redis_notify_config : true;
}

/* Drops one reference (uv handle closed, or a getaddrinfo request that
 * completed after redis_free); the last one frees the client. */
static void client_unref(redis_client *r)
{
    if (--r->open_handles > 0)
        return;
    for (int i = 0; i < RK_SCRIPT__COUNT; i++)
        free(r->scripts[i].src);
    for (size_t i = 0; i < r->nsubs; i++)
        free(r->subs[i].name);
    free(r->subs);
    free(r->host);
    free(r->user);
    free(r->password);
    free(r);
}

static void on_handle_closed(uv_handle_t *h)
{
    client_unref(h->data);
}

static void on_conn_timer_closed(uv_handle_t *h)
{
    client_unref(((rconn *)h->data)->r);
}

static void conn_init(redis_client *r, rconn *c, bool is_sub)
{
    c->r = r;
    c->is_sub = is_sub;
    c->state = RDS_IDLE;
    uv_timer_init(r->loop, &c->timer);
    c->timer.data = c;
    r->open_handles++;
}

redis_client *redis_new(uv_loop_t *loop, const redis_options *opt)
{
    redis_client *r = xcalloc(1, sizeof(*r));
    r->loop = loop;
    if (parse_url(r, opt->url ? opt->url : "redis://127.0.0.1:6379") != 0) {
        log_error("redis: malformed URL");
        goto fail;
    }
    r->load_scripts = opt->load_scripts;
    r->notify_keyspace = opt->notify_keyspace;
    r->connect_timeout_ms = opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms : 3000;
    r->command_timeout_ms = opt->command_timeout_ms > 0 ? opt->command_timeout_ms : 5000;
    r->backoff_min_ms = opt->backoff_min_ms > 0 ? opt->backoff_min_ms : 100;
    r->backoff_max_ms = opt->backoff_max_ms > 0 ? opt->backoff_max_ms : 5000;
    if (r->backoff_max_ms < r->backoff_min_ms)
        r->backoff_max_ms = r->backoff_min_ms;
    r->on_state = opt->on_state;
    r->state_ctx = opt->state_ctx;
    r->on_sub_back = opt->on_sub_back;
    r->on_message = opt->on_message;
    r->message_ctx = opt->message_ctx;
    if (r->load_scripts) {
        const char *dir = opt->lua_dir ? opt->lua_dir : rk_lua_dir();
        for (int i = 0; i < RK_SCRIPT__COUNT; i++) {
            buf_t b;
            buf_init(&b);
            if (rk_script_source(dir, i, &b) != 0) {
                log_error("redis: cannot read %s/%s.lua: %s", dir, rk_script_name(i),
                          strerror(errno));
                buf_free(&b);
                goto fail;
            }
            rscript *s = &r->scripts[i];
            s->r = r;
            s->id = i;
            s->src = buf_steal(&b, &s->len);
            /* the sha is known once SCRIPT LOAD answers; until then EVALSHA of
             * an unknown sha just gets NOSCRIPT and the retry path loads it */
            memset(s->sha, '0', 40);
            s->sha[40] = '\0';
        }
    }
    conn_init(r, &r->cmd, false);
    conn_init(r, &r->sub, true);
    uv_timer_init(loop, &r->defer_timer);
    r->defer_timer.data = r;
    uv_timer_init(loop, &r->check_timer);
    r->check_timer.data = r;
    r->open_handles += 2;
    return r;
fail:
    for (int i = 0; i < RK_SCRIPT__COUNT; i++)
        free(r->scripts[i].src);
    free(r->host);
    free(r->user);
    free(r->password);
    free(r);
    return NULL;
}

int redis_start(redis_client *r)
{
    if (r->cmd.state != RDS_IDLE)
        return 0;
    uv_timer_start(&r->check_timer, on_check_timer, 250, 250);
    conn_connect(&r->cmd);
    conn_connect(&r->sub);
    return 0;
}

void redis_free(redis_client *r)
{
    if (!r || r->closing)
        return;
    r->closing = true;
    rconn *conns[2] = {&r->cmd, &r->sub};
    for (int i = 0; i < 2; i++) {
        rconn *c = conns[i];
        if (c->gai_active) {
            r->open_handles++; /* on_resolved still runs, even if cancelled */
            uv_cancel((uv_req_t *)&c->gai);
        }
        if (c->ac) {
            redisAsyncContext *ac = c->ac;
            c->dropping = true;
            c->fail_reason = "closing";
            redisAsyncFree(ac);
            c->ac = NULL;
        }
        c->state = RDS_CLOSING;
    }
    redis_op *head = r->deferred_head;
    r->deferred_head = r->deferred_tail = NULL;
    redis_op *op;
    while ((op = head) != NULL) {
        head = op->next;
        op_finish(op, NULL, "closing");
    }
    uv_close((uv_handle_t *)&r->cmd.timer, on_conn_timer_closed);
    uv_close((uv_handle_t *)&r->sub.timer, on_conn_timer_closed);
    uv_close((uv_handle_t *)&r->defer_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->check_timer, on_handle_closed);
}

bool redis_is_ready(const redis_client *r)
{
    return r && r->cmd.state == RDS_READY;
}

bool redis_sub_is_ready(const redis_client *r)
{
    return r && r->sub.state == RDS_READY;
}

enum redis_state redis_get_state(const redis_client *r)
{
    return r->cmd.state;
}

int redis_db(const redis_client *r)
{
    return r->db;
}

unsigned long redis_connect_count(const redis_client *r)
{
    return r->connects;
}

/* ---- subscriptions ---- */

static ssize_t sub_find(redis_client *r, const char *name, bool pattern)
{
    for (size_t i = 0; i < r->nsubs; i++)
        if (r->subs[i].pattern == pattern && strcmp(r->subs[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

static int sub_add(redis_client *r, const char *name, bool pattern)
{
    if (!name || !*name || sub_find(r, name, pattern) >= 0)
        return -1;
    if (r->nsubs == r->capsubs) {
        r->capsubs = r->capsubs ? r->capsubs * 2 : 8;
        r->subs = xrealloc(r->subs, r->capsubs * sizeof(*r->subs));
    }
    rsub *s = &r->subs[r->nsubs++];
    s->name = xstrdup(name);
    s->pattern = pattern;
    /* connected: subscribe now (during INIT the confirmation is awaited like
     * the others); otherwise the next init sends it */
    if (r->sub.ac && r->sub.state == RDS_READY) {
        sub_send(&r->sub, s, true);
    } else if (r->sub.ac && r->sub.state == RDS_INIT) {
        r->sub.init_pending++;
        if (sub_send(&r->sub, s, true) != 0)
            r->sub.init_pending--;
    }
    return 0;
}

static int sub_del(redis_client *r, const char *name, bool pattern)
{
    ssize_t i = sub_find(r, name, pattern);
    if (i < 0)
        return -1;
    rsub s = r->subs[i];
    r->subs[i] = r->subs[--r->nsubs];
    if (r->sub.ac && (r->sub.state == RDS_READY || r->sub.state == RDS_INIT))
        sub_send(&r->sub, &s, false);
    free(s.name);
    return 0;
}

int redis_subscribe(redis_client *r, const char *channel)
{
    return sub_add(r, channel, false);
}

int redis_psubscribe(redis_client *r, const char *pattern)
{
    return sub_add(r, pattern, true);
}

int redis_unsubscribe(redis_client *r, const char *channel)
{
    return sub_del(r, channel, false);
}

int redis_punsubscribe(redis_client *r, const char *pattern)
{
    return sub_del(r, pattern, true);
}

int redis_subscribe_expired(redis_client *r)
{
    buf_t b;
    buf_init(&b);
    rk_expired_channel(&b, r->db);
    int rc = redis_subscribe(r, b.data);
    buf_free(&b);
    return rc;
}
