/* The skill-routed queue of waiting chats (issue 5, SPEC §4, §5, §7): the
 * queue side of the /chat core's hooks, queue-notification and queue-position
 * events, the periodic rebuild of Redis from PostgreSQL, and the no-reply
 * reassignment timer. The agent operations are in gateway/chat_agent.c; the
 * consistency rule between the two stores is in gateway/queue_internal.h.
 *
 * queue-position: each node pushes it to the waiting customers connected to
 * it (their sockets in the chat room), remembering per socket and chat the
 * last (position, ETA) it sent, so a customer gets one event per change. A
 * node recomputes an org's positions from one ZRANGE of the queue (plus the
 * ETA inputs from queue_snapshot with limit 0): shortly
 * after a change it made itself (debounced), and on its poll (every
 * CHATD_QUEUE_POLL_MS, 500 ms) for the changes other nodes made and for
 * presence changes (agents online/away/offline change the ETA).
 *
 * Rebuild: every CHATD_QUEUE_CHECK_MS (2000 ms) one query counts the queued
 * chats per org in PostgreSQL, compared with the Redis queue lengths. A
 * difference seen on 3 checks in a row with the same counts (never a
 * transient one: picks and enqueues in flight) re-enqueues every queued chat
 * of the org from PostgreSQL (idempotent, original priority, skills and
 * enqueue time, in batches); when the Redis queue is missing altogether
 * (Redis restarted without persistence), the agents' loads, assignment
 * records and average handle time are restored too.
 *
 * No-reply: key chat:{org}:qreply:CHAT (PX) + zset chat:{org}:qreplies
 * (member "reply:CHAT", score = deadline), driven by the generic timer_arm /
 * timer_stop / timer_claim scripts; the expiry notification reaches every
 * node, timer_claim lets one act, and chat_requeue() in PostgreSQL checks the
 * chat is still assigned. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "gateway/chat_hooks.h"
#include "gateway/queue_internal.h"
#include "presence/presence.h"
#include "queue/queue.h"
#include "store/messages.h"

#define REBUILD_AFTER_POLLS 3
#define SNAPSHOT_LIMIT 100000
#define PUSH_DEBOUNCE_MS 100

typedef struct queue_mod {
    chat_app *app;
    uv_timer_t poll, push;
    int poll_ms, check_ms;
    uint64_t last_check;
    int closing; /* handles still closing */
    bool polling;
    strmap dirty;      /* org -> (void *)1: push positions soon */
    strmap pushed;     /* org -> strmap* ("sid\nchat" -> heap "pos,eta") */
    strmap mismatch;   /* org -> struct mismatch: polls in a row with PG != Redis */
    strmap rebuilding; /* org -> (void *)1 while its rebuild runs */
    strmap reply_orgs; /* orgs added to chat:qreplyorgs by this process */
} queue_mod;

static queue_mod *qmod(chat_app *app)
{
    return app ? app->queue : NULL;
}

/* ---- small helpers ---------------------------------------------------------------- */

long long queue__now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

long long queue__iso_ms(const char *iso)
{
    struct tm tm = {0};
    int ms = 0;
    if (!iso || sscanf(iso, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                       &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) < 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (long long)timegm(&tm) * 1000 + ms;
}

void queue__skills_csv(buf_t *out, const char *in)
{
    const char *items[64];
    char *copy = xstrdup(in ? in : "");
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(copy, "{},\"", &save); t && n < 64; t = strtok_r(NULL, "{},\"", &save))
        if (*t)
            items[n++] = t;
    if (rk_skills_csv(out, items, n) != RK_OK)
        log_warn("queue: bad skill list %s", in);
    free(copy);
}

void queue__skills_json(buf_t *out, const char *csv)
{
    buf_putc(out, '[');
    const char *p = csv ? csv : "";
    bool first = true;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n) {
            if (!first)
                buf_putc(out, ',');
            buf_json_str(out, p, n);
            first = false;
        }
        p += n + (e ? 1 : 0);
    }
    buf_putc(out, ']');
}

void queue__eta_json(buf_t *out, long long position, long long eta_s)
{
    buf_printf(out, "{\"position\":%lld,\"etaSeconds\":%lld}", position, eta_s);
}

void queue__agent_json(buf_t *out, const char *id, const char *name)
{
    buf_puts(out, "{\"id\":");
    buf_json_str(out, id, strlen(id));
    buf_puts(out, ",\"name\":");
    const char *n = name && *name ? name : id;
    buf_json_str(out, n, strlen(n));
    buf_putc(out, '}');
}

void queue__notify(chat_app *app, const char *org, const char *type, const char *chat_id,
                   const char *skills_csv, int priority, long long enqueued_ms,
                   long long queue_length)
{
    long long wait = enqueued_ms > 0 ? (queue__now_ms() - enqueued_ms) / 1000 : 0;
    buf_t b;
    buf_init(&b);
    buf_printf(&b, "{\"type\":\"%s\",\"chatId\":", type);
    buf_json_str(&b, chat_id, strlen(chat_id));
    buf_puts(&b, ",\"skills\":");
    queue__skills_json(&b, skills_csv);
    buf_printf(&b, ",\"priority\":%d,\"waitingSeconds\":%lld,\"queueLength\":%lld}", priority,
               wait < 0 ? 0 : wait, queue_length < 0 ? 0 : queue_length);
    buf_t room;
    buf_init(&room);
    buf_printf(&room, "agents:%s", org);
    chat_emit_room(app, room.data, "queue-notification", b.data, NULL, false);
    buf_free(&room);
    buf_free(&b);
}

void queue__emit_row_message(chat_app *app, const char *org, const PGresult *res)
{
    int c = PQfnumber(res, "id");
    if (c < 0 || PQntuples(res) < 1 || PQgetisnull(res, 0, c))
        return;
    pg_message m;
    if (pg_message_from_row(res, 0, &m) != 0)
        return;
    buf_t b;
    buf_init(&b);
    pg_message_to_json(&m, &b);
    chat_emit_message(app, org, m.chat_id, m.seq, b.data);
    buf_free(&b);
}

/* A Redis call whose reply only matters for the log. */
static void on_redis_logged(void *ctx, redisReply *reply, const char *err)
{
    const char *what = ctx;
    if (!reply)
        log_warn("queue: %s: no reply from Redis (%s)", what, err ? err : "?");
    else if (reply->type == REDIS_REPLY_ERROR)
        log_warn("queue: %s: %s", what, reply->str);
}

static bool redis_up(chat_app *app)
{
    return app->redis && redis_is_ready(app->redis);
}

/* ---- enqueue ------------------------------------------------------------------------ */

struct enq_ctx {
    chat_app *app;
    char *org, *chat_id, *skills;
};

static void enq_ctx_free(struct enq_ctx *e)
{
    free(e->org);
    free(e->chat_id);
    free(e->skills);
    free(e);
}

static void on_enqueued(void *ctx, redisReply *reply, const char *err)
{
    struct enq_ctx *e = ctx;
    q_enqueue_result r;
    enum rk_status st = q_decode_enqueue(reply, &r);
    if (st != RK_OK) {
        /* queued in PostgreSQL: the rebuild puts it into Redis */
        log_warn("queue: enqueue %s failed: %s %s", e->chat_id, rk_strerror(st),
                 err                                         ? err
                 : reply && reply->type == REDIS_REPLY_ERROR ? reply->str
                                                             : "");
        chat_emit_state(e->app, e->org, e->chat_id, "queued", NULL, NULL);
        enq_ctx_free(e);
        return;
    }
    buf_t q;
    buf_init(&q);
    queue__eta_json(&q, r.eta.position, r.eta.eta_s);
    chat_emit_state(e->app, e->org, e->chat_id, "queued", NULL, q.data);
    buf_free(&q);
    if (r.created)
        queue__notify(e->app, e->org, "enqueued", e->chat_id, e->skills, r.priority,
                      r.enqueued_at_ms, r.eta.queue_length);
    queue__changed(e->app, e->org);
    enq_ctx_free(e);
}

void queue__enqueue(chat_app *app, const char *org, const char *chat_id, int priority,
                    const char *skills_csv, long long enqueued_ms)
{
    rk_argv a;
    rk_argv_init(&a, RK_SCRIPT_QUEUE_ENQUEUE);
    if (priority < 0)
        priority = 0;
    if (priority > 9)
        priority = 9;
    if (q_build_enqueue(&a, org, chat_id, priority, skills_csv, enqueued_ms, "",
                        app->cfg->default_handle_time_s) != RK_OK) {
        rk_argv_free(&a);
        chat_emit_state(app, org, chat_id, "queued", NULL, NULL);
        return;
    }
    struct enq_ctx *e = xcalloc(1, sizeof *e);
    e->app = app;
    e->org = xstrdup(org);
    e->chat_id = xstrdup(chat_id);
    e->skills = xstrdup(skills_csv);
    redis_eval(app->redis, &a, on_enqueued, e);
    rk_argv_free(&a);
}

/* Reply of queue_transfer (skills / front): chat-state queued, notification, positions. */
static void on_requeued(void *ctx, redisReply *reply, const char *err)
{
    struct enq_ctx *e = ctx;
    q_transfer_result t;
    enum rk_status st = q_decode_transfer(reply, &t);
    if (st != RK_OK || t.kind != Q_TRANSFER_QUEUED) {
        log_warn("queue: requeue of %s in Redis failed: %s", e->chat_id, rk_strerror(st));
        if (st == RK_OK)
            q_transfer_result_free(&t);
        chat_emit_state(e->app, e->org, e->chat_id, "queued", NULL, NULL);
        enq_ctx_free(e);
        return;
    }
    buf_t q;
    buf_init(&q);
    queue__eta_json(&q, t.eta.position, t.eta.eta_s);
    chat_emit_state(e->app, e->org, e->chat_id, "queued", NULL, q.data);
    buf_free(&q);
    queue__notify(e->app, e->org, "enqueued", e->chat_id, e->skills, t.priority, t.enqueued_at_ms,
                  t.eta.queue_length);
    queue__changed(e->app, e->org);
    q_transfer_result_free(&t);
    enq_ctx_free(e);
}

void queue__requeue_redis(chat_app *app, const char *org, const char *chat_id, const char *mode,
                          const char *skills_csv, int priority, long long enqueued_ms)
{
    rk_argv a;
    rk_argv_init(&a, RK_SCRIPT_QUEUE_TRANSFER);
    enum rk_status st;
    if (!strcmp(mode, "skills")) /* the script raises the priority itself: pass the old one */
        st = q_build_transfer_skills(&a, org, chat_id, skills_csv, priority > 0 ? priority - 1 : 0,
                                     enqueued_ms, "", app->cfg->default_handle_time_s);
    else
        st = q_build_requeue_front(&a, org, chat_id, priority, enqueued_ms, skills_csv,
                                   app->cfg->default_handle_time_s);
    if (st != RK_OK) {
        rk_argv_free(&a);
        chat_emit_state(app, org, chat_id, "queued", NULL, NULL);
        return;
    }
    struct enq_ctx *e = xcalloc(1, sizeof *e);
    e->app = app;
    e->org = xstrdup(org);
    e->chat_id = xstrdup(chat_id);
    e->skills = xstrdup(skills_csv);
    redis_eval(app->redis, &a, on_requeued, e);
    rk_argv_free(&a);
}

/* ---- hooks from the core ------------------------------------------------------------ */

void queue_on_opened(chat_app *app, chat_sock *cs, const PGresult *row)
{
    const char *chat_id = PQgetvalue(row, 0, PQfnumber(row, "id"));
    const char *status = PQgetvalue(row, 0, PQfnumber(row, "status"));
    if (strcmp(status, "queued") != 0) {
        chat_emit_state(app, cs->p.org, chat_id, status, NULL, NULL);
        return;
    }
    buf_t skills;
    buf_init(&skills);
    queue__skills_csv(&skills, PQgetvalue(row, 0, PQfnumber(row, "skills")));
    int priority = atoi(PQgetvalue(row, 0, PQfnumber(row, "priority")));
    /* chat_open() sets enqueued_at = created_at (one transaction, one now()) */
    long long enq = queue__iso_ms(PQgetvalue(row, 0, PQfnumber(row, "created_at")));
    queue__enqueue(app, cs->p.org, chat_id, priority, skills.data ? skills.data : "", enq);
    buf_free(&skills);
}

void queue_on_connect(chat_sock *cs)
{
    if (cs->p.role != AUTH_ROLE_AGENT || !cs->p.name || !redis_up(cs->app))
        return;
    buf_t k;
    buf_init(&k);
    rk_key(&k, cs->p.org, "agentname");
    redis_cmd(cs->app->redis, on_redis_logged, "agent name", "HSET", k.data, cs->p.sub,
              cs->p.name, NULL);
    buf_free(&k);
}

void queue_on_message(chat_app *app, const char *org, const char *chat_id, const char *status,
                      const char *sender_type)
{
    if (app->cfg->agent_reply_timeout_s <= 0 || strcmp(status, "assigned") != 0)
        return;
    if (!strcmp(sender_type, "agent"))
        queue__reply_stop(app, org, chat_id);
    else if (!strcmp(sender_type, "customer"))
        queue__reply_arm(app, org, chat_id, true);
}

/* ---- release (close, resume-ai) ------------------------------------------------------ */

struct rel_ctx {
    chat_app *app;
    char *org, *chat_id;
    bool notify_removed;
    char *skills;
    int priority;
    long long enq;
};

static void on_released(void *ctx, redisReply *reply, const char *err)
{
    struct rel_ctx *r = ctx;
    q_release_result res;
    enum rk_status st = q_decode_release(reply, &res);
    if (st != RK_OK) {
        log_warn("queue: release of %s failed: %s", r->chat_id, rk_strerror(st));
    } else {
        if (res.was_queued && r->notify_removed)
            queue__notify(r->app, r->org, "removed", r->chat_id, r->skills ? r->skills : "",
                          r->priority, r->enq, -1);
        q_release_result_free(&res);
    }
    /* positions move (a queued chat left) or the ETA does (an agent has room again) */
    queue__changed(r->app, r->org);
    free(r->org);
    free(r->chat_id);
    free(r->skills);
    free(r);
}

void queue__release(chat_app *app, const char *org, const char *chat_id, bool close)
{
    rk_argv a;
    rk_argv_init(&a, RK_SCRIPT_CHAT_RELEASE);
    /* no timer kinds: those are timer:KIND:CHAT keys (H6's); ours, qreply:CHAT, is stopped below */
    if (q_build_release(&a, org, chat_id, close, app->cfg->default_handle_time_s, NULL, 0) !=
        RK_OK) {
        rk_argv_free(&a);
        return;
    }
    struct rel_ctx *r = xcalloc(1, sizeof *r);
    r->app = app;
    r->org = xstrdup(org);
    r->chat_id = xstrdup(chat_id);
    redis_eval(app->redis, &a, on_released, r);
    rk_argv_free(&a);
    queue__reply_stop(app, org, chat_id);
}

/* For a closed queued chat, the removed notification needs its entry data. */
struct closed_ctx {
    chat_app *app;
    char *org, *chat_id;
};

static void on_closed_entry(void *ctx, redisReply *reply, const char *err)
{
    struct closed_ctx *c = ctx;
    chat_app *app = c->app;
    if (!reply) { /* Redis unavailable (or shutting down): a pick of the stale entry drops it */
        log_warn("queue: dequeue of closed chat %s: %s", c->chat_id, err ? err : "no reply");
        free(c->org);
        free(c->chat_id);
        free(c);
        return;
    }
    /* reply: HMGET qentry skills priority enqueuedAt */
    struct rel_ctx *r = xcalloc(1, sizeof *r);
    r->app = app;
    r->org = c->org;
    r->chat_id = c->chat_id;
    r->notify_removed = true;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3) {
        r->skills = rk_reply_strdup(reply->element[0]);
        long long v;
        r->priority = rk_reply_ll(reply->element[1], &v) ? (int)v : 0;
        r->enq = rk_reply_ll(reply->element[2], &v) ? v : 0;
    }
    free(c);
    rk_argv a;
    rk_argv_init(&a, RK_SCRIPT_CHAT_RELEASE);
    if (q_build_release(&a, r->org, r->chat_id, true, app->cfg->default_handle_time_s, NULL, 0) !=
        RK_OK) {
        rk_argv_free(&a);
        free(r->org);
        free(r->chat_id);
        free(r->skills);
        free(r);
        return;
    }
    redis_eval(app->redis, &a, on_released, r);
    rk_argv_free(&a);
}

void queue_on_closed(chat_app *app, const char *org, const char *chat_id, const char *prev_status,
                     const char *agent_id)
{
    if (prev_status && !strcmp(prev_status, "queued")) {
        /* read the entry first: queue-notification removed carries skills and priority */
        struct closed_ctx *c = xcalloc(1, sizeof *c);
        c->app = app;
        c->org = xstrdup(org);
        c->chat_id = xstrdup(chat_id);
        rk_argv a;
        rk_argv_init(&a, RK_NO_SCRIPT);
        rk_argv_args(&a, "HMGET");
        buf_t k;
        buf_init(&k);
        rk_qentry(&k, org, chat_id);
        rk_argv_arg(&a, k.data, k.len);
        buf_free(&k);
        rk_argv_args(&a, "skills");
        rk_argv_args(&a, "priority");
        rk_argv_args(&a, "enqueuedAt");
        redis_eval(app->redis, &a, on_closed_entry, c);
        rk_argv_free(&a);
        queue__reply_stop(app, org, chat_id);
        return;
    }
    queue__release(app, org, chat_id, true);
}

/* ---- no-reply timer --------------------------------------------------------------------- */

static void reply_keys(rk_argv *a, const char *org, const char *chat_id)
{
    buf_t k;
    buf_init(&k);
    rk_key(&k, org, "qreplies");
    rk_argv_key(a, k.data, k.len);
    buf_reset(&k);
    rk_key2(&k, org, "qreply:", chat_id);
    rk_argv_key(a, k.data, k.len);
    buf_free(&k);
}

struct arm_ctx {
    chat_app *app;
    char *org, *chat_id;
};

#define REPLY_ORGS_KEY "chat:qreplyorgs" /* global: orgs with no-reply timers (reconciler) */

static void track_reply_org(chat_app *app, const char *org)
{
    queue_mod *qm = qmod(app);
    if (!qm || strmap_get(&qm->reply_orgs, org, strlen(org)))
        return;
    strmap_put(&qm->reply_orgs, org, strlen(org), (void *)1);
    redis_cmd(app->redis, on_redis_logged, "track no-reply org", "SADD", REPLY_ORGS_KEY, org, NULL);
}

static void arm_now(chat_app *app, const char *org, const char *chat_id)
{
    track_reply_org(app, org);
    rk_argv a;
    rk_argv_init(&a, RK_SCRIPT_TIMER_ARM);
    reply_keys(&a, org, chat_id);
    rk_argv_args(&a, chat_id);
    rk_argv_args(&a, "reply");
    rk_argv_argll(&a, (long long)app->cfg->agent_reply_timeout_s * 1000);
    redis_eval(app->redis, &a, on_redis_logged, "arm no-reply timer");
    rk_argv_free(&a);
}

static void on_arm_nx(void *ctx, redisReply *reply, const char *err)
{
    struct arm_ctx *c = ctx;
    /* SET NX answered OK: it was not armed; arm it properly (deadline in the zset) */
    if (reply && reply->type == REDIS_REPLY_STATUS)
        arm_now(c->app, c->org, c->chat_id);
    free(c->org);
    free(c->chat_id);
    free(c);
}

void queue__reply_arm(chat_app *app, const char *org, const char *chat_id, bool only_if_unarmed)
{
    if (app->cfg->agent_reply_timeout_s <= 0)
        return;
    if (!only_if_unarmed) {
        arm_now(app, org, chat_id);
        return;
    }
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    rk_argv_args(&a, "SET");
    buf_t k;
    buf_init(&k);
    rk_key2(&k, org, "qreply:", chat_id);
    rk_argv_arg(&a, k.data, k.len);
    buf_free(&k);
    rk_argv_args(&a, chat_id);
    rk_argv_args(&a, "NX");
    rk_argv_args(&a, "PX");
    rk_argv_argll(&a, (long long)app->cfg->agent_reply_timeout_s * 1000);
    struct arm_ctx *c = xcalloc(1, sizeof *c);
    c->app = app;
    c->org = xstrdup(org);
    c->chat_id = xstrdup(chat_id);
    redis_eval(app->redis, &a, on_arm_nx, c);
    rk_argv_free(&a);
}

void queue__reply_stop(chat_app *app, const char *org, const char *chat_id)
{
    if (app->cfg->agent_reply_timeout_s <= 0)
        return;
    rk_argv a;
    rk_argv_init(&a, RK_SCRIPT_TIMER_STOP);
    reply_keys(&a, org, chat_id);
    rk_argv_args(&a, chat_id);
    rk_argv_args(&a, "reply");
    redis_eval(app->redis, &a, on_redis_logged, "stop no-reply timer");
    rk_argv_free(&a);
}

/* The timer fired and this node claimed it: back to the front of the queue. */
static void on_noreply_requeued(void *ctx, const PGresult *res, const char *err)
{
    struct arm_ctx *c = ctx;
    chat_app *app = c->app;
    if (err || PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "ok") != 0) {
        if (err)
            log_warn("queue: no-reply requeue of %s failed: %s", c->chat_id, err);
        goto out;
    }
    const char *prev_agent = PQgetisnull(res, 0, 2) ? NULL : PQgetvalue(res, 0, 2);
    queue__emit_row_message(app, c->org, res);
    if (prev_agent) {
        buf_t ident, room;
        buf_init(&ident);
        buf_init(&room);
        buf_printf(&ident, "identity:%s:agent:%s", c->org, prev_agent);
        buf_printf(&room, "chat:%s:%s", c->org, c->chat_id);
        chat_identity_leave(app, ident.data, room.data);
        buf_free(&ident);
        buf_free(&room);
    }
    timers_disarm(app, c->org, c->chat_id);
    queue__requeue_redis(app, c->org, c->chat_id, "front", PQgetvalue(res, 0, 4),
                         atoi(PQgetvalue(res, 0, 5)), atoll(PQgetvalue(res, 0, 6)));
out:
    free(c->org);
    free(c->chat_id);
    free(c);
}

/* The no-reply timer of c's chat fired and this node claimed it: the chat goes
 * back to the queue (chat_requeue checks it is still unanswered). Takes c. */
static void requeue_no_reply(struct arm_ctx *c)
{
    const char *params[8] = {c->chat_id, c->org, "no_reply", NULL, NULL, NULL,
                             "The agent did not reply in time: the chat is back in the queue",
                             NULL};
    pg_query_opts q = {.sql = "SELECT * FROM chat_requeue($1, $2, $3, $4, $5, $6::text[], $7, $8)",
                       .nparams = 8,
                       .params = params,
                       .route_key = c->chat_id};
    pg_query_ex(c->app->pg, &q, on_noreply_requeued, c);
}

static void on_reply_claim(void *ctx, redisReply *reply, const char *err)
{
    struct arm_ctx *c = ctx;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER && reply->element[0]->integer == 1) {
        requeue_no_reply(c);
        return;
    }
    free(c->org);
    free(c->chat_id);
    free(c);
}

static void claim_reply(chat_app *app, const char *org, const char *chat_id)
{
    rk_argv a;
    rk_argv_init(&a, RK_SCRIPT_TIMER_CLAIM);
    reply_keys(&a, org, chat_id);
    rk_argv_args(&a, "reply");
    rk_argv_args(&a, chat_id);
    struct arm_ctx *c = xcalloc(1, sizeof *c);
    c->app = app;
    c->org = xstrdup(org);
    c->chat_id = xstrdup(chat_id);
    redis_eval(app->redis, &a, on_reply_claim, c);
    rk_argv_free(&a);
}

/* Reconciler of the no-reply timers: an expired notification is not guaranteed to come
 * soon (Redis expires keys by sampling) nor at all (every node down then), so each poll
 * claims the timers of the tracked orgs overdue by more than 200 ms with timer_due.lua on
 * our zset (its DEL of "timer:reply:CHAT" is a no-op here; qreply:CHAT expires by itself). */
struct due_ctx {
    chat_app *app;
    char *org;
};

static void on_reply_due(void *ctx, redisReply *reply, const char *err)
{
    struct due_ctx *d = ctx;
    pres_timer_due due;
    if (qmod(d->app) && pres_timer_decode_due(reply, &due) == RK_OK) {
        for (size_t i = 0; i < due.n; i++) {
            struct arm_ctx *c = xcalloc(1, sizeof *c);
            c->app = d->app;
            c->org = xstrdup(d->org);
            c->chat_id = xstrdup(due.items[i].chat_id);
            requeue_no_reply(c); /* claimed already (removed from the zset) */
        }
        pres_timer_due_free(&due);
    }
    free(d->org);
    free(d);
}

static void on_reply_orgs(void *ctx, redisReply *reply, const char *err)
{
    chat_app *app = ctx;
    if (!qmod(app) || !reply || reply->type != REDIS_REPLY_ARRAY)
        return;
    rk_argv a;
    rk_argv_init(&a, RK_SCRIPT_TIMER_DUE);
    buf_t k;
    buf_init(&k);
    for (size_t i = 0; i < reply->elements; i++) {
        char *org = rk_reply_strdup(reply->element[i]);
        if (!org || !*org) {
            free(org);
            continue;
        }
        rk_argv_reset(&a, RK_SCRIPT_TIMER_DUE);
        buf_reset(&k);
        rk_key(&k, org, "qreplies");
        rk_argv_key(&a, k.data, k.len);
        buf_reset(&k);
        rk_prefix(&k, org);
        rk_argv_arg(&a, k.data, k.len);
        rk_argv_argll(&a, 100);
        rk_argv_argll(&a, 200);
        struct due_ctx *d = xcalloc(1, sizeof *d);
        d->app = app;
        d->org = org;
        redis_eval(app->redis, &a, on_reply_due, d);
    }
    buf_free(&k);
    rk_argv_free(&a);
}

static void reconcile_replies(chat_app *app)
{
    if (app->cfg->agent_reply_timeout_s <= 0 || !redis_up(app))
        return;
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    rk_argv_args(&a, "SMEMBERS");
    rk_argv_args(&a, REPLY_ORGS_KEY);
    redis_eval(app->redis, &a, on_reply_orgs, app);
    rk_argv_free(&a);
}

/* chat:{ORG}:qreply:CHATID */
bool queue_on_expired(chat_app *app, const char *key, size_t len)
{
    static const char pre[] = "chat:{";
    if (len < sizeof pre || memcmp(key, pre, sizeof pre - 1) != 0)
        return false;
    const char *end = key + len;
    const char *close = memchr(key, '}', len);
    static const char mid[] = "}:qreply:";
    if (!close || (size_t)(end - close) <= sizeof mid - 1 ||
        memcmp(close, mid, sizeof mid - 1) != 0)
        return false;
    /* the org part is escaped (store/keys.c); parse it back through a sock key */
    buf_t k;
    buf_init(&k);
    buf_append(&k, key, (size_t)(close - key));
    buf_puts(&k, "}:sock:x");
    rk_parsed p;
    bool ok = rk_parse_key(k.data, k.len, &p) == RK_KEY_SOCK;
    buf_free(&k);
    if (!ok)
        return false;
    char *chat_id = xstrndup(close + sizeof mid - 1, (size_t)(end - close) - (sizeof mid - 1));
    if (app->cfg->agent_reply_timeout_s > 0 && redis_up(app))
        claim_reply(app, p.org, chat_id);
    free(chat_id);
    rk_parsed_free(&p);
    return true;
}

/* ---- queue-position pushes ---------------------------------------------------------------- */

static void pushed_map_free(strmap *m)
{
    if (!m)
        return;
    size_t i;
    for (strmap_entry *e = strmap_first(m, &i); e; e = strmap_next(m, e, &i))
        free(e->value);
    strmap_free(m);
    free(m);
}

struct push_ctx {
    chat_app *app;
    char *org;
    strmap *prev, *next;
    const char *chat_id;
    long long pos, eta;
};

static void push_one(void *vctx, sio_socket *s)
{
    struct push_ctx *p = vctx;
    chat_sock *cs = sio_get_user(s);
    if (!cs || cs->p.role != AUTH_ROLE_CUSTOMER)
        return;
    char key[512], val[64];
    int kl = snprintf(key, sizeof key, "%s\n%s", sio_id(s), p->chat_id);
    if (kl <= 0 || (size_t)kl >= sizeof key)
        return;
    snprintf(val, sizeof val, "%lld,%lld", p->pos, p->eta);
    char *old = p->prev ? strmap_get(p->prev, key, (size_t)kl) : NULL;
    if (!old || strcmp(old, val) != 0) {
        buf_t b;
        buf_init(&b);
        buf_puts(&b, "[\"queue-position\",{\"chatId\":");
        buf_json_str(&b, p->chat_id, strlen(p->chat_id));
        buf_printf(&b, ",\"position\":%lld,\"etaSeconds\":%lld}]", p->pos, p->eta);
        sio_emit(s, b.data, b.len, NULL, 0, 0);
        buf_free(&b);
    }
    free(strmap_put(p->next, key, (size_t)kl, xstrdup(val)));
}

static bool has_local_customers(chat_app *app, const char *org)
{
    size_t i;
    for (strmap_entry *e = strmap_first(&app->sockets, &i); e;
         e = strmap_next(&app->sockets, e, &i)) {
        chat_sock *cs = e->value;
        if (cs && cs->p.role == AUTH_ROLE_CUSTOMER && !strcmp(cs->p.org, org))
            return true;
    }
    return false;
}

struct snap_ctx {
    chat_app *app;
    char *org;
    long long pg_count; /* -1: not from the poll (no rebuild check) */
    bool push;
    bool have;       /* the queue_snapshot reply came */
    q_snapshot snap; /* its ETA inputs (no ids: limit 0) */
};

static void maybe_rebuild(chat_app *app, const char *org, long long pg_count,
                          long long redis_count);

static void snap_ctx_free(struct snap_ctx *sc)
{
    if (sc->have)
        q_snapshot_free(&sc->snap);
    free(sc->org);
    free(sc);
}

/* queue_snapshot with limit 0: availability, average, length (cheap, O(agents)). */
static void on_snapshot(void *ctx, redisReply *reply, const char *err)
{
    struct snap_ctx *sc = ctx;
    chat_app *app = sc->app;
    sc->have = qmod(app) && q_decode_snapshot(reply, &sc->snap) == RK_OK;
    if (sc->have && sc->pg_count >= 0)
        maybe_rebuild(app, sc->org, sc->pg_count, sc->snap.queue_length);
    if (!sc->push)
        snap_ctx_free(sc);
    /* else the ZRANGE reply, which comes next on the same connection, finishes */
}

/* Plain ZRANGE of the queue (members "SEQ:CHATID" in order): the ids, without the Lua
 * per-member work of queue_snapshot, which is too slow to run after every change of a
 * queue of 10,000. */
static void on_ranks(void *ctx, redisReply *reply, const char *err)
{
    struct snap_ctx *sc = ctx;
    chat_app *app = sc->app;
    queue_mod *qm = qmod(app);
    if (!qm || !sc->have || !reply || reply->type != REDIS_REPLY_ARRAY)
        goto out;
    size_t olen = strlen(sc->org);
    struct push_ctx p = {app, sc->org, strmap_get(&qm->pushed, sc->org, olen), NULL, NULL, 0, 0};
    p.next = xcalloc(1, sizeof *p.next);
    strmap_init(p.next);
    buf_t room;
    buf_init(&room);
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *m = reply->element[i];
        if (m->type != REDIS_REPLY_STRING)
            continue;
        const char *colon = memchr(m->str, ':', m->len);
        const char *id = colon ? colon + 1 : m->str;
        buf_reset(&room);
        buf_printf(&room, "chat:%s:", sc->org);
        buf_append(&room, id, m->len - (size_t)(id - m->str));
        if (!sio_room_size(app->nsp, room.data))
            continue;
        char *chat_id = xstrndup(id, m->len - (size_t)(id - m->str));
        p.chat_id = chat_id;
        p.pos = (long long)i + 1;
        p.eta = q_eta_seconds(p.pos, sc->snap.available, sc->snap.avg_handle_s);
        sio_room_foreach(app->nsp, room.data, push_one, &p);
        free(chat_id);
    }
    buf_free(&room);
    pushed_map_free(strmap_put(&qm->pushed, sc->org, olen, p.next));
out:
    snap_ctx_free(sc);
}

/* Snapshot of an org's queue: positions to push (push) and/or the rebuild check (pg_count >= 0). */
static void snapshot(chat_app *app, const char *org, long long pg_count, bool push)
{
    if (!redis_up(app))
        return;
    rk_argv a;
    rk_argv_init(&a, RK_SCRIPT_QUEUE_SNAPSHOT);
    if (q_build_snapshot(&a, org, app->cfg->default_handle_time_s, 0, 0) != RK_OK) {
        rk_argv_free(&a);
        return;
    }
    struct snap_ctx *sc = xcalloc(1, sizeof *sc);
    sc->app = app;
    sc->org = xstrdup(org);
    sc->pg_count = pg_count;
    sc->push = push;
    redis_eval(app->redis, &a, on_snapshot, sc);
    if (push) {
        rk_argv_reset(&a, RK_NO_SCRIPT);
        buf_t k;
        buf_init(&k);
        rk_key(&k, org, "queue");
        rk_argv_args(&a, "ZRANGE");
        rk_argv_arg(&a, k.data, k.len);
        rk_argv_args(&a, "0");
        rk_argv_argll(&a, SNAPSHOT_LIMIT - 1);
        buf_free(&k);
        redis_eval(app->redis, &a, on_ranks, sc);
    }
    rk_argv_free(&a);
}

static void on_push_timer(uv_timer_t *t)
{
    queue_mod *qm = t->data;
    size_t i;
    for (strmap_entry *e = strmap_first(&qm->dirty, &i); e; e = strmap_next(&qm->dirty, e, &i)) {
        char *org = xstrndup(e->key, e->klen);
        if (has_local_customers(qm->app, org))
            snapshot(qm->app, org, -1, true);
        free(org);
    }
    strmap_free(&qm->dirty);
    strmap_init(&qm->dirty);
}

void queue__changed(chat_app *app, const char *org)
{
    queue_mod *qm = qmod(app);
    if (!qm || qm->closing)
        return;
    strmap_put(&qm->dirty, org, strlen(org), (void *)1);
    if (!uv_is_active((uv_handle_t *)&qm->push))
        uv_timer_start(&qm->push, on_push_timer, PUSH_DEBOUNCE_MS, 0);
}

/* ---- rebuild from PostgreSQL ------------------------------------------------------------------
 */

struct rebuild_row {
    char *id, *skills;
    int priority;
    long long enq;
};

struct rebuild_ctx {
    chat_app *app;
    char *org;
    bool lost; /* the Redis queue key is missing: restore loads and assignments too */
    struct rebuild_row *rows;
    size_t n, next;
    int pending; /* enqueues of the current batch without a reply */
};

#define REBUILD_BATCH 200

static void rebuild_ctx_free(struct rebuild_ctx *rc)
{
    queue_mod *qm = qmod(rc->app);
    if (qm)
        strmap_del(&qm->rebuilding, rc->org, strlen(rc->org));
    for (size_t i = 0; i < rc->n; i++) {
        free(rc->rows[i].id);
        free(rc->rows[i].skills);
    }
    free(rc->rows);
    free(rc->org);
    free(rc);
}

static void rebuild_batch(struct rebuild_ctx *rc);

/* Stale Redis entries (a dequeue lost while Redis or the node was down): the chats of the
 * Redis queue that PostgreSQL says are not queued are dequeued. Only chats PostgreSQL
 * confirms, so a chat being enqueued right now (PostgreSQL first) is never touched. */
struct prune_ctx {
    chat_app *app;
    char *org;
};

static void on_prune_confirmed(void *ctx, const PGresult *res, const char *err)
{
    struct prune_ctx *pc = ctx;
    if (!err && qmod(pc->app) && redis_up(pc->app)) {
        rk_argv a;
        rk_argv_init(&a, RK_SCRIPT_QUEUE_DEQUEUE);
        for (int r = 0; r < PQntuples(res); r++)
            if (q_build_dequeue(&a, pc->org, PQgetvalue(res, r, 0)) == RK_OK)
                redis_eval(pc->app->redis, &a, on_redis_logged, "prune stale entry");
        if (PQntuples(res))
            log_info("queue: org %s: %d stale entries dropped from Redis", pc->org, PQntuples(res));
        rk_argv_free(&a);
    }
    free(pc->org);
    free(pc);
}

static void on_prune_members(void *ctx, redisReply *reply, const char *err)
{
    struct prune_ctx *pc = ctx;
    if (!qmod(pc->app) || !reply || reply->type != REDIS_REPLY_ARRAY || !reply->elements) {
        free(pc->org);
        free(pc);
        return;
    }
    /* the ids as a PostgreSQL text[] literal */
    buf_t arr;
    buf_init(&arr);
    buf_putc(&arr, '{');
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *m = reply->element[i];
        if (m->type != REDIS_REPLY_STRING)
            continue;
        const char *colon = memchr(m->str, ':', m->len);
        const char *id = colon ? colon + 1 : m->str;
        if (arr.len > 1)
            buf_putc(&arr, ',');
        buf_putc(&arr, '"');
        for (const char *p = id; p < m->str + m->len; p++) {
            if (*p == '"' || *p == '\\')
                buf_putc(&arr, '\\');
            buf_putc(&arr, *p);
        }
        buf_putc(&arr, '"');
    }
    buf_putc(&arr, '}');
    const char *params[2] = {arr.data, pc->org};
    pg_query(pc->app->pg,
             "SELECT x.id FROM unnest($1::text[]) AS x(id) WHERE NOT EXISTS (SELECT 1 FROM chats c"
             " WHERE c.id = x.id AND c.org_id = $2 AND c.status = 'queued')",
             2, params, on_prune_confirmed, pc);
    buf_free(&arr);
}

static void prune_stale(chat_app *app, const char *org)
{
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    buf_t k;
    buf_init(&k);
    rk_key(&k, org, "queue");
    rk_argv_args(&a, "ZRANGE");
    rk_argv_arg(&a, k.data, k.len);
    rk_argv_args(&a, "0");
    rk_argv_args(&a, "-1");
    struct prune_ctx *pc = xcalloc(1, sizeof *pc);
    pc->app = app;
    pc->org = xstrdup(org);
    redis_eval(app->redis, &a, on_prune_members, pc);
    rk_argv_free(&a);
    buf_free(&k);
}

static void on_rebuild_enqueued(void *ctx, redisReply *reply, const char *err)
{
    struct rebuild_ctx *rc = ctx;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        log_warn("queue: rebuild enqueue: %s", err ? err : reply->str);
    if (--rc->pending == 0)
        rebuild_batch(rc);
}

/* Enqueues the next REBUILD_BATCH rows; the last reply of a batch sends the next one, so
 * a rebuild of 10,000 chats never queues 10,000 commands at once (a Redis command timeout
 * would take the connection down for everyone). */
static void rebuild_batch(struct rebuild_ctx *rc)
{
    chat_app *app = rc->app;
    if (!qmod(app) || !redis_up(app) || rc->next >= rc->n) {
        if (rc->n)
            log_info("queue: rebuild of org %s: %zu of %zu queued chats re-enqueued", rc->org,
                     rc->next, rc->n);
        queue__changed(app, rc->org);
        if (qmod(app) && redis_up(app))
            prune_stale(app, rc->org);
        rebuild_ctx_free(rc);
        return;
    }
    rk_argv a;
    rk_argv_init(&a, RK_SCRIPT_QUEUE_ENQUEUE);
    size_t end = rc->next + REBUILD_BATCH < rc->n ? rc->next + REBUILD_BATCH : rc->n;
    int sent = 0;
    rc->pending = 1; /* held while sending */
    for (; rc->next < end; rc->next++) {
        struct rebuild_row *r = &rc->rows[rc->next];
        /* idempotent: chats already queued keep their place */
        if (q_build_enqueue(&a, rc->org, r->id, r->priority, r->skills, r->enq, "",
                            app->cfg->default_handle_time_s) != RK_OK)
            continue;
        rc->pending++;
        redis_eval(app->redis, &a, on_rebuild_enqueued, rc);
        sent++;
    }
    rk_argv_free(&a);
    if (--rc->pending == 0) /* nothing sent in this batch */
        rebuild_batch(rc);
}

static void on_rebuild_rows(void *ctx, const PGresult *res, const char *err)
{
    struct rebuild_ctx *rc = ctx;
    chat_app *app = rc->app;
    if (err || !redis_up(app)) {
        if (err)
            log_warn("queue: rebuild of %s: %s", rc->org, err);
        goto out;
    }
    int n = PQntuples(res), queued = 0;
    rc->rows = xcalloc((size_t)n + 1, sizeof *rc->rows);
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    for (int r = 0; r < n; r++) {
        const char *status = PQgetvalue(res, r, 0), *id = PQgetvalue(res, r, 1);
        const char *skills = PQgetvalue(res, r, 3);
        int priority = atoi(PQgetvalue(res, r, 2));
        long long enq = atoll(PQgetvalue(res, r, 4));
        if (!strcmp(status, "queued")) {
            rc->rows[rc->n++] = (struct rebuild_row){xstrdup(id), xstrdup(skills), priority, enq};
            queued++;
        } else if (rc->lost) {
            /* assigned: the assignment record (HSETNX: never over a live one), then the load */
            const char *agent = PQgetvalue(res, r, 5);
            long long at = atoll(PQgetvalue(res, r, 6));
            buf_t k;
            buf_init(&k);
            rk_assign(&k, rc->org, id);
            rk_argv_reset(&a, RK_NO_SCRIPT);
            rk_argv_args(&a, "HSETNX");
            rk_argv_arg(&a, k.data, k.len);
            rk_argv_args(&a, "agent");
            rk_argv_args(&a, agent);
            redis_eval(app->redis, &a, on_redis_logged, "rebuild assignment");
            rk_argv_reset(&a, RK_NO_SCRIPT);
            rk_argv_args(&a, "HSET");
            rk_argv_arg(&a, k.data, k.len);
            rk_argv_args(&a, "assignedAt");
            rk_argv_argll(&a, at);
            rk_argv_args(&a, "priority");
            rk_argv_argll(&a, priority);
            rk_argv_args(&a, "enqueuedAt");
            rk_argv_argll(&a, enq);
            rk_argv_args(&a, "skills");
            rk_argv_args(&a, skills);
            redis_eval(app->redis, &a, on_redis_logged, "rebuild assignment");
            buf_free(&k);
        }
    }
    if (rc->lost) {
        /* loads: assigned chats per agent (HSETNX: a pick since the loss counted already) */
        int m = 0;
        for (int r = 0; r < n; r++) {
            if (strcmp(PQgetvalue(res, r, 0), "assigned") != 0)
                continue;
            const char *agent = PQgetvalue(res, r, 5);
            bool seen = false;
            for (int q = 0; q < r && !seen; q++)
                seen = !strcmp(PQgetvalue(res, q, 0), "assigned") &&
                       !strcmp(PQgetvalue(res, q, 5), agent);
            if (seen)
                continue;
            int cnt = 0;
            for (int q = r; q < n; q++)
                cnt += !strcmp(PQgetvalue(res, q, 0), "assigned") &&
                       !strcmp(PQgetvalue(res, q, 5), agent);
            buf_t k;
            buf_init(&k);
            rk_key(&k, rc->org, "agentload");
            rk_argv_reset(&a, RK_NO_SCRIPT);
            rk_argv_args(&a, "HSETNX");
            rk_argv_arg(&a, k.data, k.len);
            rk_argv_args(&a, agent);
            rk_argv_argll(&a, cnt);
            redis_eval(app->redis, &a, on_redis_logged, "rebuild load");
            buf_free(&k);
            m++;
        }
        log_info("queue: rebuilding org %s from PostgreSQL: %d queued chats, loads of %d agents",
                 rc->org, queued, m);
    }
    rk_argv_free(&a);
    rebuild_batch(rc);
    return;
out:
    rebuild_ctx_free(rc);
}

static const char REBUILD_SQL[] =
    "SELECT status, id, priority, array_to_string(skills, ','),"
    " (extract(epoch FROM coalesce(enqueued_at, created_at)) * 1000)::bigint,"
    " agent_id, (extract(epoch FROM coalesce(assigned_at, now())) * 1000)::bigint"
    " FROM chats WHERE org_id = $1 AND (status = 'queued' OR ($2 AND status = 'assigned'))"
    " ORDER BY enqueued_at, id";

static void on_org_aht(void *ctx, const PGresult *res, const char *err)
{
    struct due_ctx *d = ctx;
    if (!err && PQntuples(res) == 1 && qmod(d->app) && redis_up(d->app)) {
        buf_t k;
        buf_init(&k);
        rk_key(&k, d->org, "aht");
        redis_cmd(d->app->redis, on_redis_logged, "seed average handle time", "SET", k.data,
                  PQgetvalue(res, 0, 0), "NX", NULL);
        buf_free(&k);
    }
    free(d->org);
    free(d);
}

static void rebuild(chat_app *app, const char *org, bool lost)
{
    queue_mod *qm = qmod(app);
    if (strmap_get(&qm->rebuilding, org, strlen(org)))
        return; /* one at a time per org and node */
    strmap_put(&qm->rebuilding, org, strlen(org), (void *)1);
    struct rebuild_ctx *rc = xcalloc(1, sizeof *rc);
    rc->app = app;
    rc->org = xstrdup(org);
    rc->lost = lost;
    const char *params[2] = {org, lost ? "true" : "false"};
    pg_query(app->pg, REBUILD_SQL, 2, params, on_rebuild_rows, rc);
    if (lost) {
        /* the average handle time went with the rest: seed it from org_stats (kept by
         * chat_close) until the next close feeds the Redis window again */
        struct due_ctx *d = xcalloc(1, sizeof *d);
        d->app = app;
        d->org = xstrdup(org);
        pg_query(app->pg,
                 "SELECT round(avg_handle_time_s)::bigint FROM org_stats"
                 " WHERE org_id = $1 AND avg_handle_time_s IS NOT NULL",
                 1, params, on_org_aht, d);
    }
}

struct mismatch {
    int polls;
    long long pg, redis;
};

/* Rebuilds after REBUILD_AFTER_POLLS polls in a row that saw the same two different counts:
 * picks and enqueues in flight make the counts differ for a moment, never stably. */
static void maybe_rebuild(chat_app *app, const char *org, long long pg_count, long long redis_count)
{
    queue_mod *qm = qmod(app);
    size_t olen = strlen(org);
    struct mismatch *m = strmap_get(&qm->mismatch, org, olen);
    if (pg_count == redis_count) {
        free(strmap_del(&qm->mismatch, org, olen));
        return;
    }
    if (!m || m->pg != pg_count || m->redis != redis_count) {
        if (!m) {
            m = xcalloc(1, sizeof *m);
            strmap_put(&qm->mismatch, org, olen, m);
        }
        *m = (struct mismatch){1, pg_count, redis_count};
        return;
    }
    if (++m->polls < REBUILD_AFTER_POLLS)
        return;
    free(strmap_del(&qm->mismatch, org, olen));
    log_warn("queue: org %s has %lld queued chats in PostgreSQL and %lld in Redis: rebuilding", org,
             pg_count, redis_count);
    rebuild(app, org, redis_count == 0);
}

/* The rebuild check: queued chats per org in PostgreSQL against the Redis queue lengths. */
static void on_poll_orgs(void *ctx, const PGresult *res, const char *err)
{
    chat_app *app = ctx;
    queue_mod *qm = qmod(app);
    if (!qm)
        return;
    qm->polling = false;
    if (err) {
        log_debug("queue: poll: %s", err);
        return;
    }
    for (int r = 0; r < PQntuples(res); r++)
        snapshot(app, PQgetvalue(res, r, 0), atoll(PQgetvalue(res, r, 1)), false);
}

/* Every poll_ms: queue-position for the orgs with customers on this node (Redis only),
 * the no-reply reconciler, and every check_ms the rebuild check (one PostgreSQL query over
 * the queued chats, kept off the hot path: it shares the pool with pick-next). */
static void on_poll(uv_timer_t *t)
{
    queue_mod *qm = t->data;
    chat_app *app = qm->app;
    if (!redis_up(app))
        return;
    reconcile_replies(app);
    /* orgs with customers on this node, in one pass over the sockets */
    strmap local;
    strmap_init(&local);
    size_t i;
    for (strmap_entry *e = strmap_first(&app->sockets, &i); e;
         e = strmap_next(&app->sockets, e, &i)) {
        chat_sock *cs = e->value;
        if (cs && cs->p.role == AUTH_ROLE_CUSTOMER &&
            !strmap_get(&local, cs->p.org, strlen(cs->p.org))) {
            strmap_put(&local, cs->p.org, strlen(cs->p.org), (void *)1);
            snapshot(app, cs->p.org, -1, true);
        }
    }
    /* orgs without customers here any more: forget what was pushed there */
    strmap gone;
    strmap_init(&gone);
    for (strmap_entry *e = strmap_first(&qm->pushed, &i); e; e = strmap_next(&qm->pushed, e, &i))
        if (!strmap_get(&local, e->key, e->klen))
            strmap_put(&gone, e->key, e->klen, e->value);
    for (strmap_entry *e = strmap_first(&gone, &i); e; e = strmap_next(&gone, e, &i)) {
        strmap_del(&qm->pushed, e->key, e->klen);
        pushed_map_free(e->value);
    }
    strmap_free(&gone);
    strmap_free(&local);

    uint64_t now = uv_now(app->loop);
    if (qm->polling || !pg_is_ready(app->pg) || now - qm->last_check < (uint64_t)qm->check_ms)
        return;
    qm->last_check = now;
    qm->polling = true;
    pg_query(app->pg, "SELECT org_id, count(*) FROM chats WHERE status = 'queued' GROUP BY org_id",
             0, NULL, on_poll_orgs, app);
}

/* ---- start / stop --------------------------------------------------------------------------- */

void queue_start(chat_app *app)
{
    queue_mod *qm = xcalloc(1, sizeof *qm);
    qm->app = app;
    const char *env = getenv("CHATD_QUEUE_POLL_MS");
    qm->poll_ms = env && atoi(env) > 0 ? atoi(env) : 500;
    env = getenv("CHATD_QUEUE_CHECK_MS");
    qm->check_ms = env && atoi(env) > 0 ? atoi(env) : 2000;
    strmap_init(&qm->dirty);
    strmap_init(&qm->pushed);
    strmap_init(&qm->mismatch);
    strmap_init(&qm->rebuilding);
    strmap_init(&qm->reply_orgs);
    uv_timer_init(app->loop, &qm->poll);
    uv_timer_init(app->loop, &qm->push);
    qm->poll.data = qm->push.data = qm;
    uv_timer_start(&qm->poll, on_poll, 200, (uint64_t)qm->poll_ms);
    app->queue = qm;
}

static void on_handle_closed(uv_handle_t *h)
{
    queue_mod *qm = h->data;
    if (--qm->closing > 0)
        return;
    size_t i;
    for (strmap_entry *e = strmap_first(&qm->pushed, &i); e; e = strmap_next(&qm->pushed, e, &i))
        pushed_map_free(e->value);
    strmap_free(&qm->pushed);
    strmap_free(&qm->dirty);
    for (strmap_entry *e = strmap_first(&qm->mismatch, &i); e;
         e = strmap_next(&qm->mismatch, e, &i))
        free(e->value);
    strmap_free(&qm->mismatch);
    strmap_free(&qm->rebuilding);
    strmap_free(&qm->reply_orgs);
    free(qm);
}

void queue_stop(chat_app *app)
{
    queue_mod *qm = qmod(app);
    if (!qm)
        return;
    app->queue = NULL; /* late callbacks see no module and stop there */
    qm->closing = 2;
    uv_close((uv_handle_t *)&qm->poll, on_handle_closed);
    uv_close((uv_handle_t *)&qm->push, on_handle_closed);
}
