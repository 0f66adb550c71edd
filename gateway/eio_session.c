/* Engine.IO v4 sessions: handshake, HTTP long-polling, WebSocket, upgrade,
 * heartbeats and the bounded outbound queue shared by both transports.
 *
 * Lifetime: a session holds one reference for itself (dropped when it closes)
 * plus one per transport connection pointing at it (pending GET, WebSocket,
 * upgrade probe). Memory is freed when the last reference is gone and both
 * timers have been closed by libuv. Transports detach (NULL their pointer) in
 * their close callbacks, so a late event never touches freed memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <libwebsockets.h>

#include "common/log.h"
#include "common/strmap.h"
#include "common/xalloc.h"
#include "gateway/eio.h"
#include "gateway/eio_packet.h"
#include "gateway/wsframe.h"

#define MAX_ENDPOINTS 4
#define UPGRADE_HOLD_MS 50 /* a GET during an upgrade waits this long for "5" */
/* Frames queued for one WebSocket go out as one write of consecutive frames,
 * at most this many bytes (a bigger single frame goes alone). */
#define WS_BATCH_BYTES (64 * 1024)
#define WS_BATCHES_PER_WRITEABLE 4

struct endpoint {
    char *path;
    eio_app app;
    eio_server *srv;
};

struct eio_server {
    uv_loop_t *loop;
    eio_options opt;
    strmap sessions; /* sid -> eio_sock */
    struct endpoint eps[MAX_ENDPOINTS];
    int neps;
    buf_t scratch;
    gw_frame *f_ping, *f_noop, *f_close, *f_probe;
    size_t live; /* sessions not yet freed */
    strmap conn_buckets; /* peer address -> struct bucket (new-session rate limit) */
    /* WebSocket sessions with frames to write at the end of this loop
     * iteration (FIFO, each holds a session reference), see on_flush_prep */
    eio_sock *dirty_head, **dirty_tail;
    uv_prepare_t *flush_prep; /* created on first use, closed by eio_close_all */
    bool coalesce_off;        /* shutting down: write at once as before */
    buf_t wsout;              /* one coalesced write */
};

/* Token bucket of new sessions per peer address. */
struct bucket {
    double tokens;
    uint64_t at_ms;
};

/* True when `peer` may open one more session now (SPEC §11: per-IP connection
 * limit, burst 4x so a page with many tabs never trips it). */
static bool conn_allowed(eio_server *srv, const char *peer)
{
    double rate = srv->opt.conn_rate_per_s;
    if (rate <= 0 || !peer || !*peer)
        return true;
    uint64_t now = uv_now(srv->loop);
    size_t len = strlen(peer);
    struct bucket *b = strmap_get(&srv->conn_buckets, peer, len);
    if (!b) {
        if (srv->conn_buckets.count > 65536) {
            /* forget addresses idle long enough to be full again */
            size_t it, n = 0;
            char **old = xmalloc(srv->conn_buckets.count * sizeof *old);
            for (strmap_entry *e = strmap_first(&srv->conn_buckets, &it); e;
                 e = strmap_next(&srv->conn_buckets, e, &it))
                if (now - ((struct bucket *)e->value)->at_ms > 10000)
                    old[n++] = e->key;
            for (size_t i = 0; i < n; i++)
                free(strmap_del(&srv->conn_buckets, old[i], strlen(old[i])));
            free(old);
        }
        b = xmalloc(sizeof *b);
        b->tokens = 4 * rate;
        b->at_ms = now;
        strmap_put(&srv->conn_buckets, peer, len, b);
    }
    b->tokens += (double)(now - b->at_ms) * rate / 1000.0;
    if (b->tokens > 4 * rate)
        b->tokens = 4 * rate;
    b->at_ms = now;
    if (b->tokens < 1)
        return false;
    b->tokens -= 1;
    return true;
}

enum transport { T_POLLING, T_WEBSOCKET };

struct qitem {
    gw_frame *f;
    unsigned flags;
};

struct eio_sock {
    eio_server *srv;
    struct endpoint *ep;
    char sid[24];
    char peer[64];
    enum transport transport;
    bool closed;
    unsigned refs;
    /* outbound queue (ring) */
    struct qitem *q;
    size_t qhead, qlen, qcap;
    int64_t qbytes;
    bool dirty;        /* on srv's dirty list */
    eio_sock *dirty_next;
    /* polling */
    http_req *get;     /* pending long-poll GET */
    http_req *post;    /* the POST whose body is still arriving, or NULL */
    bool get_is_hold;  /* arrived during an upgrade */
    /* websocket */
    eio_ws *ws;        /* active WebSocket transport */
    eio_ws *probe;     /* WebSocket being probed during an upgrade */
    bool probed;       /* "2probe" seen */
    /* heartbeat */
    uv_timer_t hb;
    uv_timer_t hold;
    uv_timer_t upgrade; /* a probe that has not upgraded in time is dropped (on_upgrade_timeout) */
    int handles_open;
    bool awaiting_pong;
    bool grace_used;
    uint64_t ping_due; /* loop ms at which the next ping is due */
    uint64_t deadline; /* loop ms at which a missing pong kills the session */
    void *user;
};

static void sock_unref(eio_sock *s);
static void session_close(eio_sock *s, const char *reason, bool flush, const char *poll_answer);
static void flush(eio_sock *s);
static void on_upgrade_timeout(uv_timer_t *t);
static uint64_t upgrade_timeout_ms(const eio_server *srv);
static void flush_ws(eio_sock *s, bool now);
static void flush_dirty(eio_server *srv);

/* ---- server ---------------------------------------------------------------- */

eio_server *eio_server_new(uv_loop_t *loop, const eio_options *opt)
{
    eio_server *srv = xcalloc(1, sizeof *srv);
    srv->loop = loop;
    srv->opt = *opt;
    strmap_init(&srv->sessions);
    strmap_init(&srv->conn_buckets);
    buf_init(&srv->scratch);
    buf_init(&srv->wsout);
    srv->dirty_tail = &srv->dirty_head;
    srv->f_ping = frame_new("2", 1, false);
    srv->f_noop = frame_new("6", 1, false);
    srv->f_close = frame_new("1", 1, false);
    srv->f_probe = frame_new("3probe", 6, false);
    return srv;
}

size_t eio_session_count(const eio_server *srv)
{
    return srv->sessions.count;
}

static void on_prep_closed(uv_handle_t *h)
{
    free(h);
}

void eio_close_all(eio_server *srv, const char *reason)
{
    /* Shutting down: what waits for the end of this iteration goes out now and
     * the flush handle closes, so the loop can drain and end (main.c runs it
     * before freeing the server); later frames take the WRITEABLE path. */
    flush_dirty(srv);
    srv->coalesce_off = true;
    if (srv->flush_prep) {
        uv_close((uv_handle_t *)srv->flush_prep, on_prep_closed);
        srv->flush_prep = NULL;
    }
    /* Collect first: closing edits the map. */
    size_t n = srv->sessions.count, i = 0, it;
    eio_sock **all = xmalloc((n ? n : 1) * sizeof *all);
    for (strmap_entry *e = strmap_first(&srv->sessions, &it); e; e = strmap_next(&srv->sessions, e, &it))
        all[i++] = e->value;
    for (i = 0; i < n; i++)
        session_close(all[i], reason, true, "1");
    free(all);
}

void eio_server_free(eio_server *srv)
{
    if (!srv)
        return;
    if (srv->live)
        log_warn("eio: %zu sessions still alive at free", srv->live);
    for (int i = 0; i < srv->neps; i++)
        free(srv->eps[i].path);
    strmap_free(&srv->sessions);
    size_t it;
    for (strmap_entry *e = strmap_first(&srv->conn_buckets, &it); e;
         e = strmap_next(&srv->conn_buckets, e, &it))
        free(e->value);
    strmap_free(&srv->conn_buckets);
    buf_free(&srv->scratch);
    buf_free(&srv->wsout);
    frame_unref(srv->f_ping);
    frame_unref(srv->f_noop);
    frame_unref(srv->f_close);
    frame_unref(srv->f_probe);
    free(srv);
}

/* ---- small accessors ------------------------------------------------------- */

void *eio_get_user(const eio_sock *s) { return s->user; }
void eio_set_user(eio_sock *s, void *user) { s->user = user; }
const char *eio_sid(const eio_sock *s) { return s->sid; }
bool eio_is_closed(const eio_sock *s) { return s->closed; }

/* ---- queue ------------------------------------------------------------------- */

static void q_push(eio_sock *s, gw_frame *f, unsigned flags)
{
    if (s->qlen == s->qcap) {
        size_t ncap = s->qcap ? s->qcap * 2 : 8;
        struct qitem *nq = xmalloc(ncap * sizeof *nq);
        for (size_t i = 0; i < s->qlen; i++)
            nq[i] = s->q[(s->qhead + i) % s->qcap];
        free(s->q);
        s->q = nq;
        s->qcap = ncap;
        s->qhead = 0;
    }
    s->q[(s->qhead + s->qlen) % s->qcap] = (struct qitem){frame_ref(f), flags};
    s->qlen++;
    s->qbytes += (int64_t)f->len;
}

static gw_frame *q_pop(eio_sock *s)
{
    if (!s->qlen)
        return NULL;
    gw_frame *f = s->q[s->qhead].f;
    s->qhead = (s->qhead + 1) % s->qcap;
    s->qlen--;
    s->qbytes -= (int64_t)f->len;
    return f; /* the caller owns the queue's reference */
}

static void q_clear(eio_sock *s)
{
    gw_frame *f;
    while ((f = q_pop(s)))
        frame_unref(f);
}

/* Drops every queued volatile frame (slow consumer relief, SPEC §6). */
static void q_drop_volatile(eio_sock *s)
{
    size_t keep = 0;
    for (size_t i = 0; i < s->qlen; i++) {
        struct qitem it = s->q[(s->qhead + i) % s->qcap];
        if (it.flags & EIO_SEND_VOLATILE) {
            s->qbytes -= (int64_t)it.f->len;
            frame_unref(it.f);
        } else {
            s->q[(s->qhead + keep) % s->qcap] = it;
            keep++;
        }
    }
    s->qlen = keep;
}

int eio_send_frame(eio_sock *s, gw_frame *f, unsigned flags)
{
    if (s->closed)
        return -1;
    int64_t bound = s->srv->opt.max_outbound;
    /* An empty queue always takes one frame: only a backlog is a slow consumer.
     * Frames only waiting for the end of this iteration are no backlog: they
     * go to the kernel first, and only what it refuses counts. */
    if (bound > 0 && s->qlen && s->qbytes + (int64_t)f->len > bound && s->dirty)
        flush_ws(s, true);
    if (bound > 0 && s->qlen && s->qbytes + (int64_t)f->len > bound) {
        if (flags & EIO_SEND_VOLATILE)
            return 1;
        q_drop_volatile(s);
        if (s->qlen && s->qbytes + (int64_t)f->len > bound) {
            log_info("eio %s: outbound queue over %lld bytes, disconnecting", s->sid,
                     (long long)bound);
            session_close(s, "slow consumer", false, "1");
            return -1;
        }
    }
    q_push(s, f, flags);
    flush(s);
    return 0;
}

int eio_send_message(eio_sock *s, const char *data, size_t len)
{
    gw_frame *f = frame_new_prefixed("4", data, len);
    int rc = eio_send_frame(s, f, 0);
    frame_unref(f);
    return rc;
}

/* ---- polling responses ----------------------------------------------------- */

static void get_release(eio_sock *s)
{
    http_req *req = s->get;
    if (!req)
        return;
    s->get = NULL;
    s->get_is_hold = false;
    req->on_abort = NULL;
    req->user = NULL;
    http_req_unref(req);
    sock_unref(s);
}

static void get_answer_text(eio_sock *s, const char *body)
{
    if (!s->get)
        return;
    http_respond(s->get, 200, "text/plain; charset=UTF-8", body, strlen(body));
    get_release(s);
}

static void get_answer_error(eio_sock *s, int status, int code, const char *msg)
{
    if (!s->get)
        return;
    char b[128];
    int n = snprintf(b, sizeof b, "{\"code\":%d,\"message\":\"%s\"}", code, msg);
    http_respond(s->get, status, "application/json", b, (size_t)n);
    get_release(s);
}

/* Answers the pending GET with every queued packet. */
static void get_answer_queue(eio_sock *s)
{
    buf_t *out = &s->srv->scratch;
    buf_reset(out);
    gw_frame *f;
    while ((f = q_pop(s))) {
        eio_payload_append(out, (const char *)frame_data(f), f->len, f->binary);
        frame_unref(f);
    }
    http_respond(s->get, 200, "text/plain; charset=UTF-8", out->data, out->len);
    get_release(s);
}

/* ---- WebSocket writes --------------------------------------------------------
 * A frame for an idle WebSocket is not written at once: its session joins the
 * server's dirty list, and at the end of the loop iteration every frame queued
 * for it meanwhile goes out in one write of consecutive WebSocket frames (a
 * broadcast storm, or an ack followed by the broadcast of the same message,
 * costs one send() per socket instead of one per frame). A socket that lws is
 * still draining (partial write) waits for WRITEABLE as before. */

static int ws_write(struct lws *wsi, gw_frame *f)
{
    int n = lws_write(wsi, frame_data(f), f->len, f->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
    return n < (int)f->len ? -1 : 0;
}

/* Pops as many queued frames as fit in WS_BATCH_BYTES (at least one) and
 * writes them with one lws_write. Returns 0, or -1 on a write error. */
static int ws_write_batch(struct lws *wsi, eio_sock *s)
{
    gw_frame *f = s->q[s->qhead].f;
    gw_frame *f2 = s->qlen > 1 ? s->q[(s->qhead + 1) % s->qcap].f : NULL;
    if (!f2 || f->len + f2->len + 2 * WSFRAME_MAX_HEADER > WS_BATCH_BYTES) {
        /* one frame: lws puts the header in its headroom, no copy */
        f = q_pop(s);
        int rc = ws_write(wsi, f);
        frame_unref(f);
        return rc;
    }
    buf_t *out = &s->srv->wsout;
    buf_reset(out);
    while (s->qlen) {
        f = s->q[s->qhead].f;
        if (out->len && out->len + WSFRAME_MAX_HEADER + f->len > WS_BATCH_BYTES)
            break;
        q_pop(s);
        wsframe_append(out, frame_data(f), f->len, f->binary);
        frame_unref(f);
    }
    /* LWS_WRITE_RAW on a WebSocket goes straight to lws_issue_raw (lws 4.1
     * lib/roles/ws/ops-ws.c: `goto send_raw`, no framing, no extension: none
     * is negotiated). Like a framed write, an unsent tail stays in lws's
     * buflist_out (lws_partial_buffered) and later writes and lws's own
     * control frames queue behind it, so frames are never interleaved. */
    int n = lws_write(wsi, (unsigned char *)out->data, out->len, LWS_WRITE_RAW);
    return n < (int)out->len ? -1 : 0;
}

/* Writes queued frames while lws holds no unsent tail; what remains waits
 * for WRITEABLE. A write error closes the connection from WRITEABLE. */
static void ws_write_now(eio_sock *s, eio_ws *c)
{
    while (s->qlen && !lws_partial_buffered(c->wsi)) {
        if (ws_write_batch(c->wsi, s)) {
            c->kill = true;
            break;
        }
    }
    if (s->qlen || c->kill) {
        c->want_write = true;
        lws_callback_on_writable(c->wsi);
    }
}

static void on_flush_prep(uv_prepare_t *h);

/* Puts s on the dirty list; false when coalescing is off (shutdown). */
static bool defer_write(eio_sock *s)
{
    eio_server *srv = s->srv;
    if (s->dirty)
        return true;
    if (srv->coalesce_off)
        return false;
    if (!srv->flush_prep) {
        srv->flush_prep = xmalloc(sizeof *srv->flush_prep);
        uv_prepare_init(srv->loop, srv->flush_prep);
        srv->flush_prep->data = srv;
    }
    if (!srv->dirty_head)
        uv_prepare_start(srv->flush_prep, on_flush_prep);
    s->dirty = true;
    s->refs++; /* the list's reference: a session closed meanwhile stays valid */
    *srv->dirty_tail = s;
    srv->dirty_tail = &s->dirty_next;
    return true;
}

/* Moves queued packets to whichever transport can take them. An idle
 * WebSocket is written at the end of the iteration, or at once with `now`
 * (the end of the iteration, or queued bytes over the bound). */
static void flush_ws(eio_sock *s, bool now)
{
    if (!s->qlen)
        return;
    if (s->transport == T_WEBSOCKET) {
        eio_ws *c = s->ws;
        if (!c || !c->wsi || !c->established)
            return;
        if (!c->want_write && !c->kill && !lws_partial_buffered(c->wsi)) {
            if (now || !defer_write(s))
                ws_write_now(s, c);
            return;
        }
        c->want_write = true;
        lws_callback_on_writable(c->wsi);
        return;
    }
    /* Polling: during an upgrade probe, data waits for the new transport. */
    if (s->get && !s->probed)
        get_answer_queue(s);
}

static void flush(eio_sock *s)
{
    flush_ws(s, false);
}

static void flush_dirty(eio_server *srv)
{
    eio_sock *s = srv->dirty_head;
    srv->dirty_head = NULL;
    srv->dirty_tail = &srv->dirty_head;
    while (s) {
        eio_sock *next = s->dirty_next;
        s->dirty_next = NULL;
        s->dirty = false;
        flush_ws(s, true);
        sock_unref(s);
        s = next;
    }
}

/* A uv_prepare handle, not uv_check: libuv runs prepare handles right before
 * it blocks in epoll, after the timers, idle handles and the previous pass's
 * I/O callbacks, so frames queued by any of them (a broadcast from a socket's
 * message, a ping from a timer, a reply from Redis or PostgreSQL) go out
 * before the loop sleeps. A check handle runs after the I/O callbacks but
 * before the next pass's timers, whose frames would then wait for the next
 * wake-up. The handle is only active while the list is not empty. */
static void on_flush_prep(uv_prepare_t *h)
{
    eio_server *srv = h->data;
    flush_dirty(srv);
    if (!srv->dirty_head)
        uv_prepare_stop(h);
}

/* ---- heartbeat --------------------------------------------------------------- */

static void on_hb(uv_timer_t *t);

static void hb_start(eio_sock *s, int ms)
{
    uv_timer_start(&s->hb, on_hb, (uint64_t)ms, 0);
}

static void hb_arm_ping(eio_sock *s)
{
    s->awaiting_pong = false;
    s->grace_used = false;
    s->ping_due = uv_now(s->srv->loop) + (uint64_t)s->srv->opt.ping_interval_ms;
    hb_start(s, s->srv->opt.ping_interval_ms);
}

static void on_hb(uv_timer_t *t)
{
    eio_sock *s = t->data;
    if (s->closed)
        return;
    if (!s->awaiting_pong) {
        /* the deadline counts from when the ping was due, not from a late timer */
        uint64_t now = uv_now(s->srv->loop);
        s->awaiting_pong = true;
        s->deadline = s->ping_due + (uint64_t)s->srv->opt.ping_timeout_ms;
        hb_start(s, s->deadline > now ? (int)(s->deadline - now) : 0);
        eio_send_frame(s, s->srv->f_ping, 0);
        return;
    }
    session_close(s, "ping timeout", false, NULL);
}

static void on_pong(eio_sock *s)
{
    if (s->awaiting_pong)
        hb_arm_ping(s);
}

/* Any packet while a pong is due shows the peer is alive: extend once (as the
 * reference server does), so a burst that crosses the ping is not cut. */
static void on_activity(eio_sock *s)
{
    if (s->awaiting_pong && !s->grace_used) {
        s->grace_used = true;
        s->deadline = uv_now(s->srv->loop) + (uint64_t)s->srv->opt.ping_timeout_ms;
        hb_start(s, s->srv->opt.ping_timeout_ms);
    }
}

/* A session whose pong is overdue is dead even if its timer has not run yet. */
static bool expired(eio_sock *s)
{
    if (s->closed)
        return true;
    uv_update_time(s->srv->loop);
    uint64_t dead_at = s->awaiting_pong ? s->deadline
                                         : s->ping_due + (uint64_t)s->srv->opt.ping_timeout_ms;
    if (uv_now(s->srv->loop) >= dead_at) {
        session_close(s, "ping timeout", false, NULL);
        return true;
    }
    return false;
}

/* ---- lifetime ------------------------------------------------------------------ */

static void on_handle_closed(uv_handle_t *h)
{
    eio_sock *s = h->data;
    if (--s->handles_open == 0) {
        s->srv->live--;
        free(s);
    }
}

static void sock_unref(eio_sock *s)
{
    if (--s->refs)
        return;
    q_clear(s);
    free(s->q);
    s->q = NULL;
    uv_close((uv_handle_t *)&s->hb, on_handle_closed);
    uv_close((uv_handle_t *)&s->hold, on_handle_closed);
    uv_close((uv_handle_t *)&s->upgrade, on_handle_closed);
}

static void on_hold(uv_timer_t *t);

static eio_sock *session_new(struct endpoint *ep, enum transport tr, const char *peer)
{
    eio_server *srv = ep->srv;
    eio_sock *s = xcalloc(1, sizeof *s);
    s->srv = srv;
    s->ep = ep;
    s->transport = tr;
    s->refs = 1;
    snprintf(s->peer, sizeof s->peer, "%s", peer ? peer : "");
    /* 15 random bytes -> 20 URL-safe characters */
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char rnd[20];
    do {
        if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
            for (size_t i = 0; i < sizeof rnd; i++)
                rnd[i] = (unsigned char)rand();
        for (int i = 0; i < 20; i++)
            s->sid[i] = abc[rnd[i] & 63];
        s->sid[20] = '\0';
    } while (strmap_get(&srv->sessions, s->sid, 20));
    uv_timer_init(srv->loop, &s->hb);
    uv_timer_init(srv->loop, &s->hold);
    uv_timer_init(srv->loop, &s->upgrade);
    s->hb.data = s->hold.data = s->upgrade.data = s;
    s->handles_open = 3;
    strmap_put(&srv->sessions, s->sid, 20, s);
    srv->live++;
    hb_arm_ping(s);
    return s;
}

/* poll_answer: what a pending GET receives ("1" server close, "6" client close,
 * NULL = nothing more for this session: it is answered with an error). */
static void session_close(eio_sock *s, const char *reason, bool flush_ws, const char *poll_answer)
{
    if (s->closed)
        return;
    s->closed = true;
    strmap_del(&s->srv->sessions, s->sid, strlen(s->sid));
    uv_timer_stop(&s->hb);
    uv_timer_stop(&s->hold);
    uv_timer_stop(&s->upgrade);
    log_debug("eio %s: close (%s)", s->sid, reason);
    if (s->ep->app.on_close)
        s->ep->app.on_close(s->ep->app.ctx, s, reason);
    if (s->get) {
        if (poll_answer)
            get_answer_text(s, poll_answer);
        else
            get_answer_error(s, 400, 1, "Session ID unknown");
    }
    if (s->probe) {
        s->probe->kill = true;
        lws_callback_on_writable(s->probe->wsi);
    }
    if (s->ws) {
        if (!flush_ws) {
            q_clear(s);
            s->ws->kill = true;
        }
        lws_callback_on_writable(s->ws->wsi);
    }
    sock_unref(s); /* the session's own reference */
}

void eio_close(eio_sock *s, const char *reason)
{
    session_close(s, reason, true, "1");
}

void eio_abort(eio_sock *s, const char *reason)
{
    session_close(s, reason, false, NULL);
}

/* ---- packets from either transport ------------------------------------------- */

/* Returns 0, or -1 when the session was closed by this packet. */
static int on_packet(eio_sock *s, const eio_packet *p)
{
    if (s->closed)
        return -1;
    switch (p->type) {
    case EIO_MESSAGE:
        on_activity(s);
        if (s->ep->app.on_message)
            s->ep->app.on_message(s->ep->app.ctx, s, p->data, p->len, p->binary);
        return s->closed ? -1 : 0;
    case EIO_PONG:
        on_pong(s);
        return 0;
    case EIO_CLOSE:
        session_close(s, "transport close", false, "6");
        return -1;
    case EIO_NOOP:
        return 0;
    case EIO_PING:    /* wrong heartbeat direction in v4 */
    case EIO_OPEN:
    case EIO_UPGRADE: /* only valid on a probing WebSocket */
    default:
        session_close(s, "parse error", false, NULL);
        return -1;
    }
}

/* ---- HTTP long-polling ------------------------------------------------------- */

static void send_error(http_req *req, int status, int code, const char *msg)
{
    char b[128];
    int n = snprintf(b, sizeof b, "{\"code\":%d,\"message\":\"%s\"}", code, msg);
    http_respond(req, status, "application/json", b, (size_t)n);
}

/* The connection of a pending long-poll closed before its answer: the client
 * (or the network) is gone. As in the Node server ("poll connection closed
 * prematurely") the session ends now with "transport error", not a ping
 * timeout later, so what depends on it (presence, recovery) happens at once.
 * A GET held mid-upgrade only goes: the WebSocket may still take over. */
static void on_get_abort(http_req *req)
{
    eio_sock *s = req->user;
    if (!s || s->get != req)
        return;
    bool end = !s->get_is_hold && !s->closed;
    if (end) /* closing first: the session answers no GET, and keeps its reference */
        session_close(s, "transport error", false, NULL);
    get_release(s);
}

static void on_hold(uv_timer_t *t)
{
    eio_sock *s = t->data;
    if (s->get && s->get_is_hold) {
        if (s->qlen && !s->probed)
            get_answer_queue(s);
        else
            get_answer_text(s, "6");
    }
}

static void poll_get(eio_sock *s, http_req *req)
{
    if (s->get) {
        /* Two GETs at once: protocol violation, the session ends (E12). */
        session_close(s, "multiple pending GET", false, "1");
        send_error(req, 400, 3, "Bad request");
        return;
    }
    http_req_ref(req);
    s->refs++;
    s->get = req;
    req->user = s;
    req->on_abort = on_get_abort;
    if (s->probe) {
        /* Mid-upgrade: wait briefly, the WebSocket may finish it (then 400). */
        s->get_is_hold = true;
        uv_timer_start(&s->hold, on_hold, UPGRADE_HOLD_MS, 0);
        return;
    }
    if (s->qlen)
        get_answer_queue(s);
}

static int post_packet_cb(void *ctx, const eio_packet *p)
{
    return on_packet(ctx, p) ? 1 : 0;
}

static void on_post_body(http_req *req)
{
    eio_sock *s = req->user;
    req->user = NULL;
    if (!s)
        return;
    if (s->post == req)
        s->post = NULL;
    if (req->body_too_large) {
        http_respond_error(req, 413, "payload_too_large", "payload over maxPayload");
    } else if (s->closed) {
        send_error(req, 400, 1, "Session ID unknown");
    } else {
        buf_t scratch;
        buf_init(&scratch);
        int rc = eio_decode_payload(req->body.data ? req->body.data : "", req->body.len,
                                    &scratch, post_packet_cb, s);
        buf_free(&scratch);
        if (rc != EIO_OK && rc != EIO_ERR_ABORTED) {
            session_close(s, "parse error", false, NULL);
            send_error(req, 400, 3, "Bad request");
        } else {
            /* also when a packet closed the session: the POST itself was fine */
            http_respond(req, 200, "text/plain; charset=UTF-8", "ok", 2);
        }
    }
    sock_unref(s);
}

static void on_post_abort(http_req *req)
{
    eio_sock *s = req->user;
    req->user = NULL;
    if (!s)
        return;
    if (s->post == req)
        s->post = NULL;
    sock_unref(s);
}

static void handshake_polling(struct endpoint *ep, http_req *req)
{
    eio_sock *s = session_new(ep, T_POLLING, req->peer);
    buf_t b;
    buf_init(&b);
    eio_open_packet(&b, s->sid, true, ep->srv->opt.ping_interval_ms,
                    ep->srv->opt.ping_timeout_ms, ep->srv->opt.max_payload);
    http_respond(req, 200, "text/plain; charset=UTF-8", b.data, b.len);
    buf_free(&b);
    if (ep->app.on_open)
        ep->app.on_open(ep->app.ctx, s);
}

/* Every request under an endpoint's path. */
static void on_endpoint_request(void *ctx, http_req *req)
{
    struct endpoint *ep = ctx;
    eio_server *srv = ep->srv;
    char eio[8], transport[16], sid[64];
    if (!http_query_get(req->query, "EIO", eio, sizeof eio) || strcmp(eio, "4") != 0) {
        send_error(req, 400, 5, "Unsupported protocol version");
        return;
    }
    if (!http_query_get(req->query, "transport", transport, sizeof transport) ||
        (strcmp(transport, "polling") != 0 && strcmp(transport, "websocket") != 0)) {
        send_error(req, 400, 0, "Transport unknown");
        return;
    }
    if (strcmp(transport, "polling") != 0) {
        /* a websocket request that reached plain HTTP: no Upgrade header */
        send_error(req, 400, 3, "Bad request");
        return;
    }
    if (!http_query_get(req->query, "sid", sid, sizeof sid)) {
        if (req->method != HTTP_GET) {
            send_error(req, 400, 2, "Bad handshake method");
            return;
        }
        if (!conn_allowed(srv, req->peer)) {
            http_respond_error(req, 429, "rate_limited", "too many new connections");
            return;
        }
        handshake_polling(ep, req);
        return;
    }
    eio_sock *s = strmap_get(&srv->sessions, sid, strlen(sid));
    if (!s || s->ep != ep || expired(s)) {
        send_error(req, 400, 1, "Session ID unknown");
        return;
    }
    if (s->transport != T_POLLING) {
        send_error(req, 400, 3, "Bad request");
        return;
    }
    if (req->method == HTTP_GET) {
        poll_get(s, req);
    } else if (req->method == HTTP_POST) {
        if (s->post) {
            /* A second POST while one is still arriving: its packets would be handled in
             * the order the bodies complete, not as sent. A protocol violation, as for two
             * GETs (Node's engine.io: "data request overlap from client"). */
            session_close(s, "overlapping POST", false, "1");
            send_error(req, 400, 3, "Bad request");
            return;
        }
        s->post = req;
        s->refs++;
        req->user = s;
        req->max_body = srv->opt.max_payload;
        req->on_body = on_post_body;
        req->on_abort = on_post_abort;
    } else {
        send_error(req, 400, 2, "Bad handshake method");
    }
}

void eio_add_endpoint(eio_server *srv, const char *path, const eio_app *app)
{
    if (srv->neps == MAX_ENDPOINTS)
        abort();
    struct endpoint *ep = &srv->eps[srv->neps++];
    ep->path = xstrdup(path);
    ep->app = *app;
    ep->srv = srv;
    http_route_add(path, on_endpoint_request, ep);
}

/* ---- WebSocket ------------------------------------------------------------------- */

static struct endpoint *endpoint_for(eio_server *srv, const char *path)
{
    for (int i = 0; i < srv->neps; i++)
        if (!strncmp(path, srv->eps[i].path, strlen(srv->eps[i].path)))
            return &srv->eps[i];
    return NULL;
}

int eio_ws_filter(eio_server *srv, eio_ws *c, struct lws *wsi)
{
    memset(c, 0, sizeof *c);
    c->wsi = wsi;
    c->srv = srv;
    buf_init(&c->rx);
    char path[256], eio[8], transport[16], sid[64];
    if (lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI) <= 0)
        return 1;
    struct endpoint *ep = endpoint_for(srv, path);
    if (!ep)
        return 1;
    char *q = http_lws_query(wsi);
    int rc = 0;
    if (!http_query_get(q, "EIO", eio, sizeof eio) || strcmp(eio, "4") != 0 ||
        !http_query_get(q, "transport", transport, sizeof transport) ||
        strcmp(transport, "websocket") != 0) {
        rc = 1;
        goto out;
    }
    c->pending_ep = ep;
    if (http_query_get(q, "sid", sid, sizeof sid)) {
        eio_sock *s = strmap_get(&srv->sessions, sid, strlen(sid));
        if (!s || s->ep != ep || expired(s)) {
            rc = 1;
            goto out;
        }
        if (s->transport != T_POLLING || s->probe) {
            /* Already upgraded (or upgrading): complete the handshake, then
             * close this second WebSocket (E24). */
            c->kill = true;
            goto out;
        }
        c->s = s;
        c->is_probe = true;
        s->probe = c;
        s->refs++;
        uv_timer_start(&s->upgrade, on_upgrade_timeout, upgrade_timeout_ms(srv), 0);
    } else {
        char peer[64] = "";
        lws_get_peer_simple(wsi, peer, sizeof peer);
        if (!conn_allowed(srv, peer))
            rc = 1; /* refused before the upgrade: rate limited */
    }
out:
    free(q);
    return rc;
}

void eio_ws_established(eio_ws *c)
{
    c->established = true;
    if (c->kill) {
        lws_callback_on_writable(c->wsi);
        return;
    }
    if (c->s)
        return; /* upgrade probe: waits for "2probe" */
    struct endpoint *ep = (struct endpoint *)c->pending_ep;
    char peer[64] = "";
    lws_get_peer_simple(c->wsi, peer, sizeof peer);
    eio_sock *s = session_new(ep, T_WEBSOCKET, peer);
    s->refs++;
    s->ws = c;
    c->s = s;
    buf_t b;
    buf_init(&b);
    eio_open_packet(&b, s->sid, false, ep->srv->opt.ping_interval_ms,
                    ep->srv->opt.ping_timeout_ms, ep->srv->opt.max_payload);
    gw_frame *f = frame_new(b.data, b.len, false);
    buf_free(&b);
    eio_send_frame(s, f, 0);
    frame_unref(f);
    if (ep->app.on_open)
        ep->app.on_open(ep->app.ctx, s);
}

/* How long a probe may take to upgrade: Node's upgradeTimeout (10 s), but no longer than the
 * ping interval: the ping is among the data a probe withholds from polling, and the session
 * must not time out because of it. */
static uint64_t upgrade_timeout_ms(const eio_server *srv)
{
    uint64_t ping = (uint64_t)srv->opt.ping_interval_ms;
    return ping < 10000 ? ping : 10000;
}

/* The probe did not upgrade in time: a WebSocket that says nothing, or a "2probe" whose
 * "3probe" never reached the client (a proxy that drops frames). While it lasted, polls were
 * held and data kept for the new transport; now the probe is closed and the session goes on
 * polling, with what it kept (the client may probe again). */
static void on_upgrade_timeout(uv_timer_t *t)
{
    eio_sock *s = t->data;
    eio_ws *c = s->probe;
    if (!c || s->closed)
        return;
    log_debug("eio %s: upgrade timed out", s->sid);
    s->probe = NULL;
    s->probed = false;
    c->kill = true;
    lws_callback_on_writable(c->wsi);
    flush(s);
}

static void finish_upgrade(eio_sock *s, eio_ws *c)
{
    s->transport = T_WEBSOCKET;
    s->probe = NULL;
    s->ws = c;
    c->is_probe = false;
    uv_timer_stop(&s->hold);
    uv_timer_stop(&s->upgrade);
    if (s->get) {
        if (s->get_is_hold)
            get_answer_error(s, 400, 3, "Bad request");
        else
            get_answer_text(s, "6");
    }
    flush(s);
}

/* One complete WebSocket message on a probing connection. */
static int probe_message(eio_ws *c, const char *data, size_t len, bool binary)
{
    eio_sock *s = c->s;
    if (!binary && len == 6 && !memcmp(data, "2probe", 6)) {
        s->probed = true;
        c->ctl = frame_ref(s->srv->f_probe);
        lws_callback_on_writable(c->wsi);
        if (s->get && !s->get_is_hold)
            get_answer_text(s, "6"); /* release the client's pending poll */
        return 0;
    }
    if (!binary && len == 1 && data[0] == '5' && s->probed) {
        finish_upgrade(s, c);
        return 0;
    }
    /* anything else aborts the upgrade; the polling session goes on */
    s->probe = NULL;
    s->probed = false;
    uv_timer_stop(&s->upgrade);
    c->kill = true;
    lws_callback_on_writable(c->wsi);
    return 0;
}

static int ws_message(eio_ws *c, const char *data, size_t len, bool binary)
{
    eio_sock *s = c->s;
    if (!s || s->closed || c->kill)
        return 0;
    if (c->is_probe)
        return probe_message(c, data, len, binary);
    if (binary) {
        eio_packet p = {EIO_MESSAGE, true, data, len};
        on_packet(s, &p);
        return 0;
    }
    eio_packet p;
    if (eio_decode_text(data, len, &p) != EIO_OK) {
        session_close(s, "parse error", false, NULL);
        return 0;
    }
    if (p.type == EIO_UPGRADE)
        return 0; /* harmless repeat */
    on_packet(s, &p);
    return 0;
}

int eio_ws_receive(eio_ws *c, const void *in, size_t len)
{
    if (c->kill || !c->s)
        return 0;
    struct lws *wsi = c->wsi;
    if (lws_is_first_fragment(wsi)) {
        buf_reset(&c->rx);
        c->rx_binary = lws_frame_is_binary(wsi);
        c->rx_overflow = false;
    }
    int64_t max = c->srv->opt.max_payload;
    if (c->rx_overflow || (max > 0 && (int64_t)(c->rx.len + len) > max)) {
        c->rx_overflow = true;
        buf_free(&c->rx);
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, (unsigned char *)"too big", 7);
        if (c->s && !c->is_probe)
            session_close(c->s, "message too big", false, NULL);
        return -1;
    }
    bool final = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
    if (final && c->rx.len == 0)
        return ws_message(c, in, len, c->rx_binary); /* common case: no copy */
    buf_append(&c->rx, in, len);
    if (!final)
        return 0;
    int rc = ws_message(c, c->rx.data, c->rx.len, c->rx_binary);
    buf_reset(&c->rx);
    return rc;
}

int eio_ws_writeable(eio_ws *c)
{
    c->want_write = false;
    if (c->ctl) {
        gw_frame *f = c->ctl;
        c->ctl = NULL;
        int rc = ws_write(c->wsi, f);
        frame_unref(f);
        if (rc)
            return -1;
        lws_callback_on_writable(c->wsi);
        return 0;
    }
    if (c->kill) {
        lws_close_reason(c->wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
        return -1;
    }
    eio_sock *s = c->s;
    if (!s || s->ws != c)
        return 0;
    for (int i = 0; i < WS_BATCHES_PER_WRITEABLE && s->qlen; i++) {
        if (ws_write_batch(c->wsi, s))
            return -1;
        if (lws_partial_buffered(c->wsi))
            break;
    }
    if (s->qlen) {
        c->want_write = true;
        lws_callback_on_writable(c->wsi);
        return 0;
    }
    if (s->closed) {
        lws_close_reason(c->wsi, LWS_CLOSE_STATUS_GOINGAWAY, NULL, 0);
        return -1;
    }
    return 0;
}

void eio_ws_closed(eio_ws *c)
{
    eio_sock *s = c->s;
    buf_free(&c->rx);
    frame_unref(c->ctl);
    c->ctl = NULL;
    c->wsi = NULL;
    if (!s)
        return;
    c->s = NULL;
    if (s->probe == c) {
        s->probe = NULL;
        s->probed = false;
        uv_timer_stop(&s->upgrade);
    }
    if (s->ws == c) {
        s->ws = NULL;
        session_close(s, "transport close", false, NULL);
    }
    sock_unref(s);
}
