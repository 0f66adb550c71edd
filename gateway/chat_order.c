/* Per-node, per-chat delivery order. Messages of one chat can reach a node out
 * of seq order: this node's own commits are delivered at once while another
 * node's earlier commit is still on its way through Redis. Every persisted
 * message therefore passes here: in order it goes out, ahead of a gap it waits
 * (ORDER_GAP_MS), then the gap is read from PostgreSQL, so every socket sees
 * each chat's seq stream in order and without holes (SPEC §6).
 *
 * `last` is the last seq this node delivered to the chat's room. It starts at
 * what a joining socket was told (order_seen: session, open, observe); when
 * nothing is known the first message seen starts the stream. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "gateway/chat.h"
#include "store/messages.h"

#define ORDER_GAP_MS 300
#define ORDER_TICK_MS 100
#define ORDER_IDLE_MS 60000
/* A gap read that fails is retried (every ORDER_GAP_MS) this many times; then the chat's local
 * readers are cut off (their transports closed): they reconnect and catch up from what they
 * have, and the order moves on. Skipping the gap at once lost it for good: each socket's log
 * said it had what followed, so neither recovery nor lastSeq asked for it (found by a review). */
#define ORDER_GAP_TRIES 10

struct pend {
    int64_t seq;
    gw_frame *frame;
};

struct ochat {
    char *chat_id;
    char *room;
    int64_t last; /* -1: unknown */
    bool delivered; /* this node delivered a message of it (else `last` is only where sockets joined) */
    struct pend *pend; /* sorted by seq */
    size_t n, cap;
    uint64_t wait_since;
    uint64_t touched;
    bool fetching;
    int gap_failures; /* reads of the current gap that failed */
};

static void ochat_free(struct ochat *c);

struct chat_order {
    chat_app *app;
    strmap chats;
    uv_timer_t tick;
    uint64_t last_gc;
    int inflight;       /* gap reads not answered yet */
    bool closing, tick_closed;
};

static void order_free(struct chat_order *o)
{
    size_t it;
    for (strmap_entry *e = strmap_first(&o->chats, &it); e; e = strmap_next(&o->chats, e, &it))
        ochat_free(e->value);
    strmap_free(&o->chats);
    free(o);
}

/* The module is freed once stopped, its timer closed and no read is pending. */
static void maybe_free(struct chat_order *o)
{
    if (o->closing && o->tick_closed && o->inflight == 0)
        order_free(o);
}

static struct ochat *get(struct chat_order *o, const char *chat_id, bool create)
{
    struct ochat *c = strmap_get(&o->chats, chat_id, strlen(chat_id));
    if (c || !create)
        return c;
    c = xcalloc(1, sizeof *c);
    c->chat_id = xstrdup(chat_id);
    c->last = -1;
    strmap_put(&o->chats, chat_id, strlen(chat_id), c);
    return c;
}

static void ochat_free(struct ochat *c)
{
    for (size_t i = 0; i < c->n; i++)
        frame_unref(c->pend[i].frame);
    free(c->pend);
    free(c->room);
    free(c->chat_id);
    free(c);
}

void chat_order_seen(chat_app *app, const char *room, const char *chat_id, int64_t last_seq)
{
    struct chat_order *o = app->order;
    struct ochat *c = get(o, chat_id, true);
    /* the room from the start: the idle sweep forgets a chat only when no local socket is in
     * its room, and without the name it forgot chats whose readers were there but had not
     * received a message on this node yet (the next message then restarted the order at its
     * own seq, and a missing one was skipped; found by a review) */
    if (!c->room && room)
        c->room = xstrdup(room);
    /* Until this node has delivered a message of the chat, `last` is the
     * lowest point a local socket joined at: joins decided on other nodes
     * arrive late (a customer's J after an agent's observe here), and their
     * sockets need what follows their own point. Sockets that joined later
     * skip what they have (chat_core's per-socket log). */
    if (!c->delivered && (c->last < 0 || last_seq < c->last))
        c->last = last_seq;
    c->touched = uv_now(app->loop);
}

int64_t chat_order_last(chat_app *app, const char *chat_id)
{
    struct ochat *c = app->order ? get(app->order, chat_id, false) : NULL;
    return c ? c->last : -1;
}

bool chat_order_passed(chat_app *app, const char *chat_id, int64_t seq)
{
    struct ochat *c = app->order ? get(app->order, chat_id, false) : NULL;
    return c && c->delivered && c->last > seq;
}

/* Delivers consecutive pending messages. */
static void drain(struct chat_order *o, struct ochat *c)
{
    size_t k = 0;
    while (k < c->n && c->pend[k].seq <= c->last + 1) {
        if (c->pend[k].seq == c->last + 1) {
            chat_deliver_frame(o->app, c->room, c->chat_id, c->pend[k].seq, c->pend[k].frame);
            c->last = c->pend[k].seq;
            c->delivered = true;
        }
        frame_unref(c->pend[k].frame);
        k++;
    }
    memmove(c->pend, c->pend + k, (c->n - k) * sizeof *c->pend);
    c->n -= k;
    c->wait_since = c->n ? uv_now(o->app->loop) : 0;
}

void chat_order_deliver(chat_app *app, const char *room, const char *chat_id, int64_t seq,
                        gw_frame *f)
{
    struct chat_order *o = app->order;
    struct ochat *c = get(o, chat_id, true);
    c->touched = uv_now(app->loop);
    if (!c->room || strcmp(c->room, room) != 0) {
        free(c->room);
        c->room = xstrdup(room);
    }
    if (c->last < 0)
        c->last = seq - 1; /* nothing known: this message starts the stream */
    if (seq <= c->last)
        return; /* delivered already (a gap filled from the database) */
    if (seq == c->last + 1 && !c->n) {
        chat_deliver_frame(app, room, chat_id, seq, f);
        c->last = seq;
        c->delivered = true;
        return;
    }
    /* ahead of a gap: keep it, sorted */
    size_t i = c->n;
    while (i > 0 && c->pend[i - 1].seq > seq)
        i--;
    if (i > 0 && c->pend[i - 1].seq == seq)
        return;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->pend = xrealloc(c->pend, c->cap * sizeof *c->pend);
    }
    memmove(c->pend + i + 1, c->pend + i, (c->n - i) * sizeof *c->pend);
    c->pend[i] = (struct pend){seq, frame_ref(f)};
    c->n++;
    if (!c->wait_since)
        c->wait_since = uv_now(app->loop);
    drain(o, c);
}

struct fetch {
    struct chat_order *o;
    char *chat_id;
};

struct readers {
    sio_socket **s;
    size_t n;
};

static void collect_reader(void *ctx, sio_socket *s)
{
    struct readers *r = ctx;
    r->s = xrealloc(r->s, (r->n + 1) * sizeof *r->s);
    sio_socket_ref(s);
    r->s[r->n++] = s;
}

/* Closes the transports of the chat's local readers (collected first: closing one changes the
 * room); they reconnect by themselves and catch up from their own last seq. */
static void cut_readers(struct chat_order *o, struct ochat *c)
{
    struct readers r = {0};
    if (c->room)
        sio_room_foreach(o->app->nsp, c->room, collect_reader, &r);
    for (size_t i = 0; i < r.n; i++) {
        if (sio_connected(r.s[i]))
            eio_abort(sio_eio(r.s[i]), "transport close");
        sio_socket_unref(r.s[i]);
    }
    free(r.s);
}

static void on_gap(void *ctx, const PGresult *res, const char *err)
{
    struct fetch *fe = ctx;
    struct chat_order *o = fe->o;
    o->inflight--;
    struct ochat *c = o->closing ? NULL : get(o, fe->chat_id, false);
    if (c) {
        c->fetching = false;
        if (!err) {
            buf_t b;
            buf_init(&b);
            for (int r = 0; r < PQntuples(res); r++) {
                pg_message m;
                if (pg_message_from_row(res, r, &m) != 0 || m.seq <= c->last)
                    continue;
                buf_reset(&b);
                chat_message_args_row(&b, &m);
                gw_frame *f;
                if (sio_event_frames(o->app->nsp, b.data, b.len, NULL, 0, &f, 1) == 1) {
                    chat_deliver_frame(o->app, c->room, c->chat_id, m.seq, f);
                    frame_unref(f);
                }
                c->last = m.seq;
                c->delivered = true;
            }
            buf_free(&b);
            c->gap_failures = 0;
        } else if (++c->gap_failures < ORDER_GAP_TRIES) {
            log_warn("chat order: gap read of %s failed (%d), retrying: %s", c->chat_id,
                     c->gap_failures, err);
            c->wait_since = uv_now(o->app->loop); /* on_tick tries again; the rest stays held */
            goto out;
        } else {
            log_warn("chat order: gap read of %s failed %d times, its readers reconnect: %s",
                     c->chat_id, c->gap_failures, err);
            c->gap_failures = 0;
            cut_readers(o, c);
        }
        /* whatever the database had, do not hold the rest any longer */
        if (c->n && c->pend[0].seq > c->last + 1)
            c->last = c->pend[0].seq - 1;
        drain(o, c);
    }
out:
    free(fe->chat_id);
    free(fe);
    maybe_free(o);
}

static void fetch_gap(struct chat_order *o, struct ochat *c)
{
    struct fetch *fe = xmalloc(sizeof *fe);
    fe->o = o;
    fe->chat_id = xstrdup(c->chat_id);
    char from[32], to[32];
    snprintf(from, sizeof from, "%lld", (long long)c->last);
    snprintf(to, sizeof to, "%lld", (long long)c->pend[0].seq);
    const char *params[3] = {c->chat_id, from, to};
    pg_query_opts q = {.sql = "SELECT " PG_MESSAGE_COLUMNS " FROM messages WHERE chat_id = $1"
                              " AND seq > $2::bigint AND seq < $3::bigint ORDER BY seq",
                       .nparams = 3, .params = params, .route_key = c->chat_id};
    c->fetching = true;
    o->inflight++;
    pg_query_ex(o->app->pg, &q, on_gap, fe);
}

static void on_tick(uv_timer_t *t)
{
    struct chat_order *o = t->data;
    uint64_t now = uv_now(o->app->loop);
    bool gc = now - o->last_gc > 10000;
    size_t it;
    char **idle = NULL;
    size_t nidle = 0;
    for (strmap_entry *e = strmap_first(&o->chats, &it); e; e = strmap_next(&o->chats, e, &it)) {
        struct ochat *c = e->value;
        if (c->n && !c->fetching && now - c->wait_since >= ORDER_GAP_MS)
            fetch_gap(o, c);
        else if (gc && !c->n && !c->fetching && now - c->touched > ORDER_IDLE_MS &&
                 (!c->room || sio_room_size(o->app->nsp, c->room) == 0)) {
            /* forgotten only when no local socket reads the chat any more */
            idle = xrealloc(idle, (nidle + 1) * sizeof *idle);
            idle[nidle++] = c->chat_id;
        }
    }
    for (size_t i = 0; i < nidle; i++)
        ochat_free(strmap_del(&o->chats, idle[i], strlen(idle[i])));
    free(idle);
    if (gc)
        o->last_gc = now;
}

void chat_order_start(chat_app *app)
{
    struct chat_order *o = xcalloc(1, sizeof *o);
    o->app = app;
    strmap_init(&o->chats);
    uv_timer_init(app->loop, &o->tick);
    o->tick.data = o;
    uv_timer_start(&o->tick, on_tick, ORDER_TICK_MS, ORDER_TICK_MS);
    app->order = o;
}

static void on_tick_closed(uv_handle_t *h)
{
    struct chat_order *o = h->data;
    o->tick_closed = true;
    maybe_free(o);
}

void chat_order_stop(chat_app *app)
{
    struct chat_order *o = app->order;
    if (!o)
        return;
    app->order = NULL;
    o->closing = true;
    uv_timer_stop(&o->tick);
    uv_close((uv_handle_t *)&o->tick, on_tick_closed);
}
