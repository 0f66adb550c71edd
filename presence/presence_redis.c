/* Presence/timer engine: expired-key dispatch and the reconciler (see
 * presence_redis.h). Every Redis call carries a pe_req that is linked in the
 * engine's pending list, so pres_engine_free can detach them all (STYLE §14). */
#include "presence/presence_redis.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/strmap.h"
#include "presence/presence.h"

#define DUE_BATCH 100
#define SWEEP_COUNT 200

enum pe_kind { PE_SOCK, PE_TIMER, PE_TRACK, PE_ORGS, PE_DUE, PE_SWEEP };

typedef struct pe_req {
    struct pres_engine *e;
    enum pe_kind kind;
    redis_op *op;
    char *org;
    bool in_cycle; /* counts in e->cycle_outstanding */
    struct pe_req *prev, *next;
} pe_req;

struct pres_engine {
    uv_loop_t *loop;
    redis_client *r;
    pres_engine_cbs cbs;
    uv_timer_t timer;
    int interval_ms;
    long long grace_ms;
    strmap orgs; /* orgs already added to chat:orgs by this process */
    pe_req *pending;
    bool closing;
    bool cycle_running;
    int cycle_outstanding;
    unsigned long passes;
    rk_argv argv; /* scratch; redis_eval copies it */
};

static void on_reply(void *ctx, redisReply *reply, const char *err);

static pe_req *req_new(pres_engine *e, enum pe_kind kind, const char *org)
{
    pe_req *q = xcalloc(1, sizeof(*q));
    q->e = e;
    q->kind = kind;
    q->org = org ? xstrdup(org) : NULL;
    q->next = e->pending;
    if (e->pending)
        e->pending->prev = q;
    e->pending = q;
    return q;
}

static void req_unlink(pe_req *q)
{
    pres_engine *e = q->e;
    if (q->prev)
        q->prev->next = q->next;
    else if (e->pending == q)
        e->pending = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->prev = q->next = NULL;
}

static void req_free(pe_req *q)
{
    free(q->org);
    free(q);
}

/* Sends e->argv for q. */
static void req_send(pe_req *q)
{
    q->op = redis_eval(q->e->r, &q->e->argv, on_reply, q);
}

static void cycle_done_one(pres_engine *e)
{
    if (--e->cycle_outstanding <= 0) {
        e->cycle_outstanding = 0;
        e->cycle_running = false;
        e->passes++;
    }
}

static void start_due(pres_engine *e, const char *org)
{
    if (pres_timer_build_due(&e->argv, org, DUE_BATCH, e->grace_ms) != RK_OK)
        return;
    pe_req *q = req_new(e, PE_DUE, org);
    q->in_cycle = true;
    e->cycle_outstanding++;
    req_send(q);
}

static void start_sweep(pres_engine *e, const char *org, const char *cursor)
{
    if (pres_build_sweep(&e->argv, org, cursor, SWEEP_COUNT) != RK_OK)
        return;
    pe_req *q = req_new(e, PE_SWEEP, org);
    q->in_cycle = true;
    e->cycle_outstanding++;
    req_send(q);
}

static void report_offline(pres_engine *e, const char *org, const char *identity)
{
    char *type, *id;
    if (!pres_identity_split(identity, &type, &id))
        return;
    if (e->cbs.on_offline)
        e->cbs.on_offline(e->cbs.ctx, org, type, id);
    free(type);
    free(id);
}

static void handle(pe_req *q, redisReply *reply)
{
    pres_engine *e = q->e;
    switch (q->kind) {
    case PE_SOCK: {
        pres_expired_result x;
        if (pres_decode_expired(reply, &x) != RK_OK)
            break;
        if (x.acted && x.went_offline)
            report_offline(e, q->org, x.identity);
        pres_expired_result_free(&x);
        break;
    }
    case PE_TIMER:
        break; /* handled in on_reply (needs kind and chat id) */
    case PE_TRACK:
        if (!reply || reply->type == REDIS_REPLY_ERROR) /* retry at the next track call */
            strmap_del(&e->orgs, q->org, strlen(q->org));
        break;
    case PE_ORGS:
        if (reply && reply->type == REDIS_REPLY_ARRAY) {
            for (size_t i = 0; i < reply->elements && !e->closing; i++) {
                redisReply *o = reply->element[i];
                if (o->type != REDIS_REPLY_STRING)
                    continue;
                char *org = xstrndup(o->str, o->len);
                start_due(e, org);
                start_sweep(e, org, "0");
                free(org);
            }
        }
        break;
    case PE_DUE: {
        pres_timer_due d;
        if (pres_timer_decode_due(reply, &d) != RK_OK)
            break;
        for (size_t i = 0; i < d.n && !e->closing; i++)
            if (e->cbs.on_timer)
                e->cbs.on_timer(e->cbs.ctx, q->org, d.items[i].kind, d.items[i].chat_id,
                                d.items[i].deadline_ms);
        if (d.n == DUE_BATCH && !e->closing)
            start_due(e, q->org); /* more overdue timers */
        pres_timer_due_free(&d);
        break;
    }
    case PE_SWEEP: {
        pres_sweep_result s;
        if (pres_decode_sweep(reply, &s) != RK_OK)
            break;
        for (size_t i = 0; i < s.n && !e->closing; i++)
            if (s.went_offline[i])
                report_offline(e, q->org, s.identities[i]);
        if (strcmp(s.cursor, "0") != 0 && !e->closing)
            start_sweep(e, q->org, s.cursor);
        pres_sweep_result_free(&s);
        break;
    }
    }
}

/* Timer claims keep kind and chat id next to the org. */
typedef struct pe_timer_req {
    pe_req base;
    char *kind;
    char *chat_id;
} pe_timer_req;

static void on_reply(void *ctx, redisReply *reply, const char *err)
{
    pe_req *q = ctx;
    pres_engine *e = q->e;
    req_unlink(q);
    if (!e->closing) {
        if (q->kind == PE_TIMER) {
            pe_timer_req *t = (pe_timer_req *)q;
            pres_timer_claim c;
            if (pres_timer_decode_claim(reply, &c) == RK_OK && c.claimed && e->cbs.on_timer)
                e->cbs.on_timer(e->cbs.ctx, q->org, t->kind, t->chat_id, c.deadline_ms);
        } else {
            handle(q, reply);
        }
        if (!reply && q->kind != PE_TRACK)
            log_debug("presence: redis call failed: %s", err ? err : "?");
    }
    if (q->in_cycle && !e->closing)
        cycle_done_one(e);
    if (q->kind == PE_TIMER) {
        pe_timer_req *t = (pe_timer_req *)q;
        free(t->kind);
        free(t->chat_id);
    }
    req_free(q);
}

bool pres_engine_on_expired(pres_engine *e, const char *key, size_t len)
{
    rk_parsed p;
    enum rk_key_kind k = rk_parse_key(key, len, &p);
    if (k == RK_KEY_OTHER)
        return false;
    if (e->closing) {
        rk_parsed_free(&p);
        return true;
    }
    if (k == RK_KEY_SOCK) {
        if (pres_build_expired(&e->argv, p.org, p.id) == RK_OK)
            req_send(req_new(e, PE_SOCK, p.org));
    } else if (pres_timer_build_claim(&e->argv, p.org, p.type, p.id) == RK_OK) {
        pe_timer_req *t = xcalloc(1, sizeof(*t));
        pe_req *q = &t->base;
        q->e = e;
        q->kind = PE_TIMER;
        q->org = xstrdup(p.org);
        t->kind = xstrdup(p.type);
        t->chat_id = xstrdup(p.id);
        q->next = e->pending;
        if (e->pending)
            e->pending->prev = q;
        e->pending = q;
        req_send(q);
    }
    rk_parsed_free(&p);
    return true;
}

void pres_engine_track_org(pres_engine *e, const char *org)
{
    if (e->closing || !org || !*org)
        return;
    size_t n = strlen(org);
    if (strmap_get(&e->orgs, org, n))
        return;
    strmap_put(&e->orgs, org, n, e);
    pe_req *q = req_new(e, PE_TRACK, org);
    q->op = redis_cmd(e->r, on_reply, q, "SADD", RK_ORGS_KEY, org, NULL);
}

void pres_engine_reconcile_now(pres_engine *e)
{
    if (e->closing || e->cycle_running || !redis_is_ready(e->r))
        return;
    e->cycle_running = true;
    e->cycle_outstanding = 1;
    pe_req *q = req_new(e, PE_ORGS, NULL);
    q->in_cycle = true;
    q->op = redis_cmd(e->r, on_reply, q, "SMEMBERS", RK_ORGS_KEY, NULL);
}

unsigned long pres_engine_passes(const pres_engine *e)
{
    return e->passes;
}

static void on_tick(uv_timer_t *t)
{
    pres_engine_reconcile_now(t->data);
}

pres_engine *pres_engine_new(uv_loop_t *loop, redis_client *r, const pres_engine_cbs *cbs,
                             int reconcile_interval_ms, long long grace_ms)
{
    pres_engine *e = xcalloc(1, sizeof(*e));
    e->loop = loop;
    e->r = r;
    if (cbs)
        e->cbs = *cbs;
    e->interval_ms = reconcile_interval_ms;
    e->grace_ms = grace_ms < 0 ? 0 : grace_ms;
    strmap_init(&e->orgs);
    rk_argv_init(&e->argv, RK_NO_SCRIPT);
    uv_timer_init(loop, &e->timer);
    e->timer.data = e;
    if (reconcile_interval_ms > 0)
        uv_timer_start(&e->timer, on_tick, (uint64_t)reconcile_interval_ms,
                       (uint64_t)reconcile_interval_ms);
    return e;
}

static void on_closed(uv_handle_t *h)
{
    pres_engine *e = h->data;
    strmap_free(&e->orgs);
    rk_argv_free(&e->argv);
    free(e);
}

void pres_engine_free(pres_engine *e)
{
    if (!e || e->closing)
        return;
    e->closing = true;
    pe_req *q = e->pending;
    e->pending = NULL;
    while (q) {
        pe_req *next = q->next;
        redis_op_detach(q->op);
        if (q->kind == PE_TIMER) {
            pe_timer_req *t = (pe_timer_req *)q;
            free(t->kind);
            free(t->chat_id);
        }
        req_free(q);
        q = next;
    }
    uv_timer_stop(&e->timer);
    uv_close((uv_handle_t *)&e->timer, on_closed);
}
