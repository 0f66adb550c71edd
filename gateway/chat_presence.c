/* Presence of /chat sockets and identities in Redis (SPEC §4 set-status /
 * presence, §7, §12.10, §12.15; key layout in store/keys.h).
 *
 * Every accepted socket (agents and customers) is registered with the
 * presence_add script: a key chat:{org}:sock:SID with a TTL of pingInterval +
 * pingTimeout, its id in the identity's set (all nodes) and in the sockident
 * hash, and the identity's status (online unless it was already online or
 * away: a new tab never resets away). One repeating timer per node refreshes
 * the TTL of all of this node's sockets every pingInterval (one pipelined
 * EVALSHA each); a socket whose registration vanished meanwhile (Redis
 * restarted, or the node stalled past the TTL and was swept) is registered
 * again. A socket that closes is removed with presence_remove.
 *
 * When a node dies its socket keys expire: every node sees the keyspace
 * `expired` event, presence_expired claims the cleanup (exactly one node acts)
 * and an identity left without sockets goes offline. The reconciler (engine in
 * presence/presence_redis.c, every pingInterval but at most every
 * PRESENCE_RECONCILE_MS, and once right after
 * start) sweeps sockets whose expiry notification was missed.
 *
 * `presence` {identity:{type,id}, status} goes to agents:{org} on every node
 * (chat_emit_room) and only for agents (SPEC 12.15); each change is decided by
 * one atomic script, so it is announced once, whatever the number of tabs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "gateway/chat_hooks.h"
#include "gateway/presence_internal.h"
#include "presence/presence.h"

/* Module state, one per process (app->presence). Freed once closing and the
 * last uv handle and Redis call are done, so late callbacks never see freed
 * memory (STYLE §13-14). */
typedef struct presence {
    chat_app *app;
    pres_engine *engine;
    uv_timer_t beat; /* TTL refresh of this node's sockets, every ping interval */
    uv_timer_t kick; /* watches Redis readiness (on_kick) */
    long long ttl_ms;
    int handles; /* uv handles not closed yet */
    int pending; /* Redis calls in flight */
    bool closing;
    bool was_ready; /* Redis was ready at the last kick */
    rk_argv argv;   /* scratch; redis_eval copies it */
} presence;

enum pcall_kind { PC_ADD, PC_REMOVE, PC_BEAT, PC_STATUS };

/* One Redis call in flight. Carries copies, never a chat_sock (the socket may
 * be gone when the reply comes: it is looked up again by id). */
typedef struct pcall {
    presence *ps;
    enum pcall_kind kind;
    char *org, *type, *id, *sid;
    chat_op *op; /* set-status: the socket and ack id */
} pcall;

static void on_reply(void *ctx, redisReply *reply, const char *err);

static void maybe_free(presence *ps)
{
    if (ps->closing && ps->handles == 0 && ps->pending == 0) {
        rk_argv_free(&ps->argv);
        free(ps);
    }
}

static pcall *pcall_new(presence *ps, enum pcall_kind kind, const char *org, const char *type,
                        const char *id, const char *sid)
{
    pcall *c = xcalloc(1, sizeof *c);
    c->ps = ps;
    c->kind = kind;
    c->org = xstrdup(org);
    c->type = type ? xstrdup(type) : NULL;
    c->id = id ? xstrdup(id) : NULL;
    c->sid = sid ? xstrdup(sid) : NULL;
    return c;
}

static void pcall_free(pcall *c)
{
    free(c->org);
    free(c->type);
    free(c->id);
    free(c->sid);
    chat_op_free(c->op);
    free(c);
}

/* Sends ps->argv for c (c is freed by on_reply). */
static void pcall_send(pcall *c)
{
    c->ps->pending++;
    redis_eval(c->ps->app->redis, &c->ps->argv, on_reply, c);
}

/* `presence` to agents:{org} on every node. Agents only (SPEC 12.15).
 *
 * Ordering: each change is decided by one script, so Redis orders them; but
 * a node delivering its own changes locally at once (chat_emit_room) would
 * let an observer on node B see B's `online` before A's earlier `offline`
 * still crossing Redis (last tab closed on A, new tab on B a moment later),
 * and keep the wrong final state. So presence events are only published, as
 * a fan-out room event (format at the top of chat_core.c) with the node field
 * "*", which every node, this one included, delivers when it comes back from
 * Redis: all observers see one order, the order of the PUBLISHes. Without
 * Redis (no change can be decided then anyway) it falls back to
 * chat_emit_room. */
static void announce(chat_app *app, const char *org, const char *type, const char *id,
                     const char *status)
{
    if (strcmp(type, "agent") != 0)
        return;
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{\"identity\":{\"type\":\"agent\",\"id\":");
    buf_json_str(&b, id, strlen(id));
    buf_puts(&b, "},\"status\":");
    buf_json_str(&b, status, strlen(status));
    buf_putc(&b, '}');
    char room[300];
    snprintf(room, sizeof room, "agents:%s", org);
    if (!redis_is_ready(app->redis)) {
        chat_emit_room(app, room, "presence", b.data, NULL, false);
    } else {
        buf_t msg;
        buf_init(&msg);
        buf_printf(&msg, "E\n*\n%s\n0\n[\"presence\",", room);
        buf_append(&msg, b.data, b.len);
        buf_putc(&msg, ']');
        redis_publish(app->redis, CHAT_FANOUT_CHANNEL, msg.data, msg.len, NULL, NULL);
        buf_free(&msg);
    }
    buf_free(&b);
}

/* Registers a socket (connect, or again after its registration vanished). */
static void send_add(presence *ps, chat_sock *cs)
{
    const char *sid = sio_id(cs->s);
    int max_chats = cs->p.role == AUTH_ROLE_AGENT ? cs->p.max_chats : -1;
    if (pres_build_add(&ps->argv, cs->p.org, sid, cs->role, cs->p.key, ps->ttl_ms, ps->app->node_id,
                       max_chats) != RK_OK) {
        log_warn("presence: cannot register socket %s (bad identity)", sid);
        return;
    }
    pcall_send(pcall_new(ps, PC_ADD, cs->p.org, cs->role, cs->p.key, sid));
}

static void on_reply(void *ctx, redisReply *reply, const char *err)
{
    pcall *c = ctx;
    presence *ps = c->ps;
    ps->pending--;
    chat_app *app = ps->app;
    switch (c->kind) {
    case PC_ADD: {
        pres_add_result r;
        enum rk_status st = pres_decode_add(reply, &r);
        if (st == RK_ERR_UNAVAILABLE) /* Redis down: registered by the beat once it is back */
            log_debug("presence: add %s failed: %s", c->sid, err ? err : rk_strerror(st));
        else if (st != RK_OK)
            log_warn("presence: add %s failed: %s", c->sid, err ? err : rk_strerror(st));
        else if (r.became_online && !ps->closing)
            announce(app, c->org, c->type, c->id, pres_status_str(r.status));
        break;
    }
    case PC_REMOVE: {
        pres_remove_result r;
        enum rk_status st = pres_decode_remove(reply, &r);
        if (st != RK_OK)
            log_debug("presence: remove %s failed (its key expires): %s", c->sid,
                      err ? err : rk_strerror(st));
        else if (r.went_offline && !ps->closing)
            announce(app, c->org, c->type, c->id, "offline");
        break;
    }
    case PC_BEAT: {
        bool alive;
        if (pres_decode_heartbeat(reply, &alive) != RK_OK || alive || ps->closing)
            break;
        /* cleaned up meanwhile (swept, expired, Redis restarted): register again */
        chat_sock *cs = strmap_get(&app->sockets, c->sid, strlen(c->sid));
        if (cs)
            send_add(ps, cs);
        break;
    }
    case PC_STATUS: {
        pres_status_result r;
        enum rk_status st = pres_decode_status(reply, &r);
        chat_sock *cs = chat_op_sock(c->op);
        if (st != RK_OK) {
            chat_ack_err(c->op->s, c->op->ack_id, "unavailable", "presence unavailable, try again");
        } else if (r.status == PRES_OFFLINE) {
            /* not registered (Redis lost it): register again, let the client retry */
            if (cs && !ps->closing)
                send_add(ps, cs);
            chat_ack_err(c->op->s, c->op->ack_id, "unavailable", "presence not ready, try again");
        } else {
            char fields[40];
            snprintf(fields, sizeof fields, "\"status\":\"%s\"", pres_status_str(r.status));
            chat_ack_ok(c->op->s, c->op->ack_id, fields);
            if (r.changed && !ps->closing)
                announce(app, c->org, "agent", c->id, pres_status_str(r.status));
        }
        break;
    }
    }
    pcall_free(c);
    maybe_free(ps);
}

/* ---- engine callbacks --------------------------------------------------------------- */

static void on_offline(void *ctx, const char *org, const char *type, const char *id)
{
    announce(ctx, org, type, id, "offline");
}

static void on_timer(void *ctx, const char *org, const char *kind, const char *chat_id,
                     long long deadline_ms)
{
    timers__fire(ctx, org, kind, chat_id, deadline_ms);
}

pres_engine *presence__engine(chat_app *app)
{
    presence *ps = app->presence;
    return ps && !ps->closing ? ps->engine : NULL;
}

/* ---- timers ------------------------------------------------------------------------- */

static void on_beat(uv_timer_t *t)
{
    presence *ps = t->data;
    chat_app *app = ps->app;
    if (!redis_is_ready(app->redis))
        return; /* the keys outlive a short outage; re-registered if they did not */
    size_t i;
    for (strmap_entry *e = strmap_first(&app->sockets, &i); e;
         e = strmap_next(&app->sockets, e, &i)) {
        chat_sock *cs = e->value;
        const char *sid = sio_id(cs->s);
        if (pres_build_heartbeat(&ps->argv, cs->p.org, sid, ps->ttl_ms) == RK_OK)
            pcall_send(pcall_new(ps, PC_BEAT, cs->p.org, NULL, NULL, sid));
    }
}

/* Every 100 ms: when the Redis command connection has just become ready (start,
 * or back after an outage), refresh every local socket at once (re-registering
 * those Redis lost, or that connected while it was down) and run a reconciler
 * pass, so timers that expired while no node was listening fire right away,
 * and re-arm the timers of assigned chats from PostgreSQL (timers__tick). */
static void on_kick(uv_timer_t *t)
{
    presence *ps = t->data;
    bool ready = redis_is_ready(ps->app->redis);
    if (ready && !ps->was_ready) {
        on_beat(&ps->beat);
        pres_engine_reconcile_now(ps->engine);
    }
    timers__tick(ps->app, ready, ready && !ps->was_ready);
    ps->was_ready = ready;
}

static void on_handle_closed(uv_handle_t *h)
{
    presence *ps = h->data;
    ps->handles--;
    maybe_free(ps);
}

/* ---- hooks -------------------------------------------------------------------------- */

void presence_start(chat_app *app)
{
    if (app->presence || !app->redis)
        return;
    presence *ps = xcalloc(1, sizeof *ps);
    ps->app = app;
    int interval = app->cfg->ping_interval_ms > 0 ? app->cfg->ping_interval_ms : 25000;
    int timeout = app->cfg->ping_timeout_ms > 500 ? app->cfg->ping_timeout_ms : 500;
    ps->ttl_ms = (long long)interval + timeout;
    rk_argv_init(&ps->argv, RK_NO_SCRIPT);
    pres_engine_cbs cbs = {.on_offline = on_offline, .on_timer = on_timer, .ctx = app};
    /* a dead socket is noticed at most one reconciler period after its TTL */
    int period = interval < PRESENCE_RECONCILE_MS ? interval : PRESENCE_RECONCILE_MS;
    if (period < 500)
        period = 500;
    ps->engine = pres_engine_new(app->loop, app->redis, &cbs, period, PRESENCE_RECONCILE_GRACE_MS);
    uv_timer_init(app->loop, &ps->beat);
    uv_timer_init(app->loop, &ps->kick);
    ps->beat.data = ps->kick.data = ps;
    ps->handles = 2;
    uv_timer_start(&ps->beat, on_beat, (uint64_t)interval, (uint64_t)interval);
    uv_timer_start(&ps->kick, on_kick, 0, 100);
    app->presence = ps;
}

void presence_stop(chat_app *app)
{
    presence *ps = app->presence;
    if (!ps)
        return;
    app->presence = NULL;
    ps->closing = true;
    pres_engine_free(ps->engine);
    ps->engine = NULL;
    uv_timer_stop(&ps->beat);
    uv_timer_stop(&ps->kick);
    uv_close((uv_handle_t *)&ps->beat, on_handle_closed);
    uv_close((uv_handle_t *)&ps->kick, on_handle_closed);
}

void presence_on_connect(chat_sock *cs)
{
    presence *ps = cs->app->presence;
    if (!ps || ps->closing)
        return;
    pres_engine_track_org(ps->engine, cs->p.org);
    send_add(ps, cs);
}

void presence_on_disconnect(chat_sock *cs)
{
    presence *ps = cs->app->presence;
    if (!ps || ps->closing)
        return;
    const char *sid = sio_id(cs->s);
    if (pres_build_remove(&ps->argv, cs->p.org, sid, cs->role, cs->p.key) == RK_OK)
        pcall_send(pcall_new(ps, PC_REMOVE, cs->p.org, cs->role, cs->p.key, sid));
}

bool presence_on_expired(chat_app *app, const char *key, size_t len)
{
    /* chat:{ORG}:sock:SID (an escaped org never contains '}') */
    if (len < 8 || memcmp(key, "chat:{", 6) != 0 || !memmem(key, len, "}:sock:", 7))
        return false;
    pres_engine *e = presence__engine(app);
    if (e)
        pres_engine_on_expired(e, key, len);
    return true;
}

/* set-status {status: "online" | "away"} (agents; the event table checks the role).
 * Ack {ok:true, status}. */
void chat_on_set_status(chat_sock *cs, const sio_event *ev)
{
    const char *status = chat_json_str(ev->args, "status");
    if (!status || (strcmp(status, "online") != 0 && strcmp(status, "away") != 0)) {
        chat_ack_err(cs->s, ev->ack_id, "bad_request", "need {status: \"online\" | \"away\"}");
        return;
    }
    presence *ps = cs->app->presence;
    if (!ps || ps->closing ||
        pres_build_status(&ps->argv, cs->p.org, "agent", cs->p.key, status) != RK_OK) {
        chat_ack_err(cs->s, ev->ack_id, "unavailable", "presence unavailable");
        return;
    }
    pcall *c = pcall_new(ps, PC_STATUS, cs->p.org, "agent", cs->p.key, sio_id(cs->s));
    c->op = chat_op_new(cs->s, ev->ack_id, NULL);
    pcall_send(c);
}
