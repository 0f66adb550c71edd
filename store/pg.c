/* Non-blocking libpq pool with pipeline mode on the libuv loop (see pg.h).
 *
 * Shape (after h2o:lib/common/redis.c and hiredis' libuv adapter): pg_client owns N pg_conn;
 * each pg_conn is a small state machine
 *
 *     BACKOFF --timer--> CONNECTING --PQconnectPoll OK--> READY --error/EOF--> BACKOFF
 *
 * Requests (pg_req) wait in the connection's `pending` FIFO; the uv_prepare handle (run once
 * per loop iteration, just before the loop blocks) sends everything pending as pipelined
 * queries, one PQpipelineSync per group (a group is one query, or up to max_batch adjacent
 * PG_Q_BATCH queries that share one implicit transaction). Sent requests move to `inflight`;
 * results are read in order and held on the request until the group's PGRES_PIPELINE_SYNC
 * arrives (only then is the group's transaction committed), then callbacks run.
 *
 * Memory: every pg_req is owned by exactly one list (pending, inflight or deliver) until its
 * callback has run; callbacks run after the request was unlinked, so they may submit or cancel
 * freely. uv_poll_t handles are heap-allocated per socket and freed in their close callback. */
#include "store/pg.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "store/pg_route.h"

enum conn_state { CONN_BACKOFF, CONN_CONNECTING, CONN_READY, CONN_CLOSED };

typedef struct req_list {
    struct pg_req *head, *tail;
    int n;
} req_list;

typedef struct pg_req {
    struct pg_req *next;
    pg_req_id id;
    pg_cb cb;
    pg_row_cb row_cb;   /* instead of cb when set */
    void *ctx;
    void (*on_cancel)(void *ctx);
    char *sql;          /* owned; query text (NULL for a prepared statement) */
    char *stmt;         /* owned; prepared statement name */
    int nparams;
    char **params;      /* owned block: pointer array followed by the strings */
    unsigned flags;
    bool solo;          /* re-run alone after a failed shared transaction */
    bool internal;      /* a PQsendPrepare of the pool itself */
    bool sync_after;    /* last of its group: a PGRES_PIPELINE_SYNC follows its results */
    bool failed;        /* got an error result (or PIPELINE_ABORTED) */
    uint64_t deadline_ms;  /* while pending on a connection that is not up */
    uint64_t sent_ms;
    PGresult *res;      /* held until the group's sync */
    char *combine_sql;  /* owned; combinable request (see pg_query_opts) */
    char *combine_stmt; /* owned; its prepared form, or NULL */
    char *item;         /* owned; its JSON item */
    bool carrier;       /* a combined query standing for `members` */
    req_list members;   /* carrier only: the combined requests, in item order */
    pg_client *owner;   /* routed requests: whose route table counts this one */
    uint32_t route_hash;
    bool unsent;        /* routed: still waiting in a pending list */
    uint64_t queued_ns; /* combinable: when it was queued (uv_hrtime), for pg_spread */
} pg_req;

typedef struct pg_conn {
    pg_client *pg;
    int index;
    enum conn_state state;
    PGconn *conn;
    uv_poll_t *poll;      /* heap; replaced when the socket changes */
    int poll_events;
    uv_timer_t timer;     /* connect timeout / backoff */
    uint64_t connect_deadline_ms;
    int backoff_ms;
    int nprepared;        /* registered statements already prepared on this connection */
    req_list pending;
    req_list inflight;
    pg_req *cur;          /* inflight request receiving results (NULL: waiting for a sync) */
    uint64_t progress_ms; /* when the server last answered anything (stuck-connection check) */
    uv_getaddrinfo_t gai; /* resolving pg->resolve_host for the next connect */
    bool resolving;
    bool await_sync;
    bool group_failed;
    bool ever_ready;
} pg_conn;

typedef struct pg_stmt {
    char *name;
    char *sql;
} pg_stmt;

struct pg_client {
    uv_loop_t *loop;
    char *conninfo;
    char *resolve_host;   /* the host name to resolve before each connect, or NULL (see pg_new) */
    pg_options opt;
    pg_conn *conns;
    int nconns;
    uv_prepare_t prepare;
    uv_timer_t tick;
    bool prepare_active;
    req_list failed;      /* to be failed from the prepare callback (never synchronously) */
    pg_stmt *stmts;
    int nstmts;
    pg_req_id next_id;
    int open_handles;     /* handles to close before the struct can go */
    bool closing;
    int rr;
    pg_routes routes;     /* route keys with queries outstanding: their connection */
    pg_spread spread;     /* routed keys' homes are hash % spread.active */
    bool spread_pinned;   /* pg_set_spread */
    uint64_t wait_ns;     /* this tick: total wait of the combinable requests sent */
    uint64_t wait_n;
    pg_stats stats;
};

/* ---------------------------------------------------------------- lists */

static void list_push(req_list *l, pg_req *r)
{
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static pg_req *list_pop(req_list *l)
{
    pg_req *r = l->head;
    if (r) {
        l->head = r->next;
        if (!l->head)
            l->tail = NULL;
        l->n--;
        r->next = NULL;
    }
    return r;
}

/* Moves all of src to the front of dst, keeping order. */
static void list_prepend_all(req_list *dst, req_list *src)
{
    if (!src->head)
        return;
    src->tail->next = dst->head;
    if (!dst->tail)
        dst->tail = src->tail;
    dst->head = src->head;
    dst->n += src->n;
    src->head = src->tail = NULL;
    src->n = 0;
}

/* Removes r from l (linear). */
static bool list_remove(req_list *l, pg_req *r)
{
    pg_req *prev = NULL;
    for (pg_req *it = l->head; it; prev = it, it = it->next) {
        if (it != r)
            continue;
        if (prev)
            prev->next = it->next;
        else
            l->head = it->next;
        if (l->tail == it)
            l->tail = prev;
        l->n--;
        it->next = NULL;
        return true;
    }
    return false;
}

/* Takes the head of c->pending to be sent. */
static pg_req *take_pending(pg_conn *c)
{
    pg_req *r = list_pop(&c->pending);
    if (r && r->owner && r->unsent) {
        r->unsent = false;
        pg_routes_mark(&c->pg->routes, r->route_hash, true);
    }
    if (r && r->queued_ns) {
        c->pg->wait_ns += uv_hrtime() - r->queued_ns;
        c->pg->wait_n++;
        r->queued_ns = 0; /* a retry is not counted again */
    }
    return r;
}

/* r no longer counts for its key's routing: it is being freed, or its results are all in and
 * its callback runs next (its key may then move before that callback has run: no later query
 * of the key can be answered before it). */
static void route_done(pg_req *r)
{
    if (r->owner) {
        pg_routes_release(&r->owner->routes, r->route_hash, r->unsent);
        r->owner = NULL;
    }
}

/* Puts sent requests back at the front of c->pending, in order (a retry). */
static void requeue_front(pg_conn *c, req_list *l)
{
    for (pg_req *r = l->head; r; r = r->next)
        if (r->owner && !r->unsent) {
            r->unsent = true;
            pg_routes_mark(&c->pg->routes, r->route_hash, false);
        }
    list_prepend_all(&c->pending, l);
}

static uint64_t now_ms(const pg_client *pg)
{
    return uv_now(pg->loop);
}

static void req_free(pg_req *r)
{
    if (!r)
        return;
    route_done(r);
    pg_req *m;
    while ((m = list_pop(&r->members)))
        req_free(m);
    PQclear(r->res);
    free(r->combine_sql);
    free(r->combine_stmt);
    free(r->item);
    free(r->sql);
    free(r->stmt);
    free(r->params);
    free(r);
}

/* Runs one request's callback (if still attached) with its row, and frees it. */
static void req_finish_row(pg_client *pg, pg_req *r, const PGresult *res, int row,
                           const char *err)
{
    if (!r->internal) {
        pg->stats.queries++;
        if (err)
            pg->stats.errors++;
    }
    if (r->row_cb)
        r->row_cb(r->ctx, res, row, err);
    else if (r->cb)
        r->cb(r->ctx, res, err);
    req_free(r);
}

/* Runs r's callback(s) and frees r. r must be unlinked already. A carrier passes the result
 * on to each member with its row (row -1 with err on failure). */
static void req_finish(pg_client *pg, pg_req *r, const PGresult *res, const char *err)
{
    if (!r->carrier) {
        req_finish_row(pg, r, res, err ? -1 : 0, err);
        return;
    }
    req_list members = r->members;
    memset(&r->members, 0, sizeof r->members);
    req_free(r);
    pg_req *m;
    for (int row = 0; (m = list_pop(&members)); row++)
        req_finish_row(pg, m, res, err ? -1 : row, err);
}

/* Fails and frees every request of l with res == NULL and err. */
static void fail_list(pg_client *pg, req_list *l, const char *err)
{
    req_list tmp = *l;
    l->head = l->tail = NULL;
    l->n = 0;
    pg_req *r;
    while ((r = list_pop(&tmp)))
        req_finish(pg, r, NULL, err);
}

/* ---------------------------------------------------------------- connection */

static void conn_connect(pg_conn *c);
static void conn_dispatch(pg_conn *c);
static pg_conn *pick_home(pg_client *pg, uint32_t hash);
static void on_poll(uv_poll_t *h, int status, int events);
static void schedule(pg_client *pg);

static void poll_close_cb(uv_handle_t *h)
{
    free(h);
}

static void conn_close_poll(pg_conn *c)
{
    if (c->poll) {
        uv_close((uv_handle_t *)c->poll, poll_close_cb);
        c->poll = NULL;
    }
    c->poll_events = 0;
}

/* (Re)creates the poll handle on the connection's current socket and watches `events`. */
static int conn_watch_new(pg_conn *c, int events)
{
    conn_close_poll(c);
    int fd = PQsocket(c->conn);
    if (fd < 0)
        return -1;
    c->poll = xmalloc(sizeof *c->poll);
    if (uv_poll_init(c->pg->loop, c->poll, fd) != 0) {
        free(c->poll);
        c->poll = NULL;
        return -1;
    }
    c->poll->data = c;
    c->poll_events = events;
    uv_poll_start(c->poll, events, on_poll);
    return 0;
}

static void conn_watch(pg_conn *c, int events)
{
    if (c->poll && c->poll_events != events) {
        c->poll_events = events;
        uv_poll_start(c->poll, events, on_poll);
    }
}

static int backoff_next(pg_conn *c)
{
    const pg_options *o = &c->pg->opt;
    int base = c->backoff_ms ? c->backoff_ms * 2 : o->backoff_min_ms;
    if (base > o->backoff_max_ms)
        base = o->backoff_max_ms;
    c->backoff_ms = base;
    /* +-25% jitter so a pool (or a cluster) does not reconnect in lock-step. */
    int jitter = base / 4;
    return base - jitter + (jitter ? rand() % (2 * jitter + 1) : 0);
}

static void on_timer(uv_timer_t *t);

/* Tears the connection down: every request on it (in flight or waiting) fails with
 * "unavailable: why"; a reconnect is scheduled. */
static void conn_fail(pg_conn *c, const char *why)
{
    pg_client *pg = c->pg;
    char err[512];
    snprintf(err, sizeof err, "unavailable: %s", why && *why ? why : "connection lost");
    err[strcspn(err, "\n")] = '\0'; /* libpq messages go on with hints on further lines */
    if (c->state == CONN_READY)
        log_warn("pg[%d]: connection lost: %s", c->index, err);
    else
        log_debug("pg[%d]: connect failed: %s", c->index, err);
    conn_close_poll(c);
    if (c->conn) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    c->state = CONN_BACKOFF;
    c->cur = NULL;
    c->await_sync = false;
    c->group_failed = false;
    c->nprepared = 0;
    uv_timer_start(&c->timer, on_timer, (uint64_t)backoff_next(c), 0);
    req_list inflight = c->inflight, pending = c->pending;
    memset(&c->inflight, 0, sizeof c->inflight);
    memset(&c->pending, 0, sizeof c->pending);
    fail_list(pg, &inflight, err);
    fail_list(pg, &pending, err);
}

static void conn_ready(pg_conn *c)
{
    if (PQenterPipelineMode(c->conn) != 1 || PQsetnonblocking(c->conn, 1) != 0) {
        conn_fail(c, PQerrorMessage(c->conn));
        return;
    }
    uv_timer_stop(&c->timer);
    if (c->ever_ready)
        c->pg->stats.reconnects++;
    log_info("pg[%d]: connected%s", c->index, c->ever_ready ? " again" : "");
    c->state = CONN_READY;
    c->ever_ready = true;
    c->backoff_ms = 0;
    c->nprepared = 0;
    c->cur = NULL;
    c->await_sync = false;
    conn_watch(c, UV_READABLE);
    schedule(c->pg);
}

/* Advances the libpq connect state machine. */
static void conn_connect_poll(pg_conn *c)
{
    PostgresPollingStatusType st = PQconnectPoll(c->conn);
    switch (st) {
    case PGRES_POLLING_OK:
        conn_ready(c);
        break;
    case PGRES_POLLING_FAILED:
        conn_fail(c, PQerrorMessage(c->conn));
        break;
    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
    default:
        /* libpq may have moved to a new socket (next address): always re-register. */
        if (conn_watch_new(c, st == PGRES_POLLING_WRITING ? UV_WRITABLE : UV_READABLE) < 0)
            conn_fail(c, "no socket");
        break;
    }
}

/* Server notices (and errors that arrive while idle, e.g. an admin shutdown) go to the log
 * instead of libpq's default stderr printer. */
static void on_notice(void *arg, const char *message)
{
    pg_conn *c = arg;
    log_debug("pg[%d]: %.*s", c->index, (int)strcspn(message, "\n"), message);
}

static void conn_connect_to(pg_conn *c, const char *hosts, const char *hostaddrs);
static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res);

/* Starts one connect attempt. A host name is resolved first, off the loop (libpq would call
 * getaddrinfo itself, blocking: a review measured 4 s of a stalled loop for a pool of 4 with a
 * 1 s resolver). The connect timeout covers the resolution too. */
static void conn_connect(pg_conn *c)
{
    pg_client *pg = c->pg;
    if (!pg->resolve_host) {
        conn_connect_to(c, NULL, NULL);
        return;
    }
    c->state = CONN_CONNECTING;
    c->connect_deadline_ms = now_ms(pg) + (uint64_t)pg->opt.connect_timeout_ms;
    uv_timer_start(&c->timer, on_timer, (uint64_t)pg->opt.connect_timeout_ms, 0);
    if (c->resolving)
        return; /* an earlier lookup is still out: its answer is used */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    c->gai.data = c;
    c->resolving = true;
    pg->open_handles++; /* pg_free waits for the answer */
    int rc = uv_getaddrinfo(pg->loop, &c->gai, on_resolved, pg->resolve_host, NULL, &hints);
    if (rc != 0) {
        c->resolving = false;
        pg->open_handles--;
        conn_fail(c, uv_strerror(rc));
    }
}

static void client_release(pg_client *pg);

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    pg_conn *c = req->data;
    pg_client *pg = c->pg;
    c->resolving = false;
    if (pg->closing) {
        uv_freeaddrinfo(res);
        client_release(pg);
        return;
    }
    pg->open_handles--;
    if (c->state != CONN_CONNECTING || c->conn) {
        uv_freeaddrinfo(res); /* timed out meanwhile: the next attempt starts its own lookup */
        return;
    }
    /* every address, in the resolver's order (libpq tries them in turn, as it would have):
     * "localhost" may give ::1 first while the server listens on 127.0.0.1 only */
    buf_t addrs, hosts;
    buf_init(&addrs);
    buf_init(&hosts);
    char seen[4][48];
    int n = 0;
    for (struct addrinfo *a = status == 0 ? res : NULL; a && n < 4; a = a->ai_next) {
        char *ip = seen[n];
        ip[0] = '\0';
        if (a->ai_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)a->ai_addr, ip, sizeof seen[n]);
        else if (a->ai_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)a->ai_addr, ip, sizeof seen[n]);
        bool dup = !ip[0];
        for (int k = 0; k < n && !dup; k++)
            dup = strcmp(seen[k], ip) == 0; /* one entry per socket type and protocol */
        if (dup)
            continue;
        buf_printf(&addrs, "%s%s", n ? "," : "", ip);
        buf_printf(&hosts, "%s%s", n ? "," : "", pg->resolve_host);
        n++;
    }
    uv_freeaddrinfo(res);
    if (n) {
        conn_connect_to(c, hosts.data, addrs.data);
    } else {
        char why[320];
        snprintf(why, sizeof why, "cannot resolve %s: %s", pg->resolve_host,
                 status ? uv_strerror(status) : "no address");
        conn_fail(c, why);
    }
    buf_free(&hosts);
    buf_free(&addrs);
}

/* hosts/hostaddrs: the resolved addresses of pg->resolve_host (a list each, the name once per
 * address, as libpq pairs them), or NULL to let libpq read conninfo alone. */
static void conn_connect_to(pg_conn *c, const char *hosts, const char *hostaddrs)
{
    pg_client *pg = c->pg;
    char stmt_opt[96];
    /* A row lock held elsewhere (an admin transaction) must not stall the whole
     * pipeline of this connection: waits longer than lock_timeout_ms fail that
     * query alone (55P03, retried solo when it shared a batch). */
    snprintf(stmt_opt, sizeof stmt_opt, "-c statement_timeout=%d -c lock_timeout=%d",
             pg->opt.statement_timeout_ms, pg->opt.lock_timeout_ms);
    /* host/hostaddr last: they override what the URL in dbname says, and with hostaddr set
     * libpq does no lookup of its own */
    const char *keys[] = {"dbname", "options", "application_name", "keepalives",
                          "keepalives_idle", "keepalives_interval", "keepalives_count",
                          hostaddrs ? "host" : NULL, "hostaddr", NULL};
    const char *vals[] = {pg->conninfo, stmt_opt, "chatd", "1", "10", "5", "3", hosts, hostaddrs,
                          NULL};
    c->conn = PQconnectStartParams(keys, vals, 1);
    c->state = CONN_CONNECTING;
    c->connect_deadline_ms = now_ms(pg) + (uint64_t)pg->opt.connect_timeout_ms;
    if (!c->conn) {
        conn_fail(c, "out of memory");
        return;
    }
    if (PQstatus(c->conn) == CONNECTION_BAD) {
        conn_fail(c, PQerrorMessage(c->conn));
        return;
    }
    PQsetnonblocking(c->conn, 1);
    PQsetNoticeProcessor(c->conn, on_notice, c);
    uv_timer_start(&c->timer, on_timer, (uint64_t)pg->opt.connect_timeout_ms, 0);
    if (conn_watch_new(c, UV_WRITABLE) < 0)
        conn_fail(c, "no socket");
}

static void on_timer(uv_timer_t *t)
{
    pg_conn *c = t->data;
    if (c->state == CONN_BACKOFF)
        conn_connect(c);
    else if (c->state == CONN_CONNECTING) {
        if (c->resolving)
            uv_cancel((uv_req_t *)&c->gai); /* best effort: a lookup already running ends anyway */
        conn_fail(c, c->resolving ? "connect timeout (resolving the host)" : "connect timeout");
    }
}

/* ---------------------------------------------------------------- results */

/* Whether a failed shared transaction is worth re-running member by member: not when the
 * server is going away or the statement ran out of time (each member would wait again). */
static bool retry_worthwhile(const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!state)
        return false;
    /* 55P03 (lock timeout) is worth it: only the member whose row is locked
     * waits again, the others go through. */
    return !(strcmp(state, "57014") == 0 || strncmp(state, "08", 2) == 0 ||
             strncmp(state, "57", 2) == 0 || strncmp(state, "53", 2) == 0);
}

/* The error result that failed a group (not a PIPELINE_ABORTED follower), or NULL. */
static const PGresult *group_error(const req_list *group)
{
    for (const pg_req *r = group->head; r; r = r->next)
        if (r->failed && r->res && PQresultStatus(r->res) != PGRES_PIPELINE_ABORTED)
            return r->res;
    return NULL;
}

/* A group's PGRES_PIPELINE_SYNC arrived: its transaction is over. Deliver every request of
 * the group, or, if the shared transaction failed, send its members again one by one. */
static void conn_finish_group(pg_conn *c)
{
    pg_client *pg = c->pg;
    req_list group = {0};
    pg_req *r;
    while ((r = list_pop(&c->inflight))) {
        list_push(&group, r);
        if (r->sync_after)
            break;
    }
    bool failed = c->group_failed;
    c->group_failed = false;
    if (group.n == 1 && group.head->carrier) {
        r = list_pop(&group);
        PGresult *res = r->res;
        r->res = NULL;
        if (failed && r->members.n > 1 && retry_worthwhile(res)) {
            /* Re-send every member as its own single-item query, in order. */
            pg->stats.batches_retried++;
            req_list retry = r->members;
            memset(&r->members, 0, sizeof r->members);
            for (pg_req *m = retry.head; m; m = m->next)
                m->solo = true;
            requeue_front(c, &retry);
            req_free(r);
            PQclear(res);
            schedule(pg);
            return;
        }
        char buf[512];
        const char *err = NULL;
        if (failed || !res) {
            snprintf(buf, sizeof buf, "%s", res ? PQresultErrorMessage(res) : "no result");
            buf[strcspn(buf, "\n")] = '\0';
            err = buf[0] ? buf : "query failed";
        } else if (PQntuples(res) != r->members.n) {
            err = "internal: combined query returned a wrong number of rows";
        }
        /* The next combined query leaves before this one's callbacks run: PostgreSQL works
         * on it while we answer and broadcast (otherwise the backend idles through them). */
        if (!err && c->pending.head) {
            for (pg_req *m = r->members.head; m; m = m->next)
                route_done(m);
            conn_dispatch(c);
        }
        req_finish(pg, r, res, err);
        PQclear(res);
        return;
    }
    if (failed && group.n > 1 && retry_worthwhile(group_error(&group))) {
        /* Shared transaction rolled back: every member is re-run alone, in order, ahead of
         * what is pending. Results already received describe rolled-back work. */
        pg->stats.batches_retried++;
        req_list retry = {0};
        while ((r = list_pop(&group))) {
            if (r->internal) {
                req_free(r);
                continue;
            }
            PQclear(r->res);
            r->res = NULL;
            r->failed = false;
            r->solo = true;
            r->sync_after = false;
            list_push(&retry, r);
        }
        requeue_front(c, &retry);
        schedule(pg);
        return;
    }
    /* A lone combinable request (see make_carrier): as for a carrier, the next combined query
     * leaves before this one's callback runs. */
    if (!failed && group.n == 1 && group.head->combine_sql && c->pending.head) {
        route_done(group.head);
        conn_dispatch(c);
    }
    /* A failed group's transaction was rolled back: every member fails, with the error that
     * caused it (results received before it describe work that was undone). */
    PGresult *gerr = NULL;
    char gmsg[512] = "query failed";
    if (failed) {
        for (pg_req *it = group.head; it; it = it->next) {
            if (it->failed && it->res && PQresultStatus(it->res) != PGRES_PIPELINE_ABORTED) {
                gerr = it->res;
                it->res = NULL;
                break;
            }
        }
        if (gerr) {
            snprintf(gmsg, sizeof gmsg, "%s", PQresultErrorMessage(gerr));
            gmsg[strcspn(gmsg, "\n")] = '\0';
            if (!gmsg[0])
                snprintf(gmsg, sizeof gmsg, "query failed");
        }
    }
    while ((r = list_pop(&group))) {
        if (r->internal) {
            if (r->failed || failed)
                log_error("pg[%d]: prepare %s failed: %s", c->index, r->stmt,
                          r->res ? PQresultErrorMessage(r->res) : gmsg);
            req_free(r);
            continue;
        }
        PGresult *res = r->res;
        r->res = NULL;
        if (failed)
            req_finish(pg, r, gerr, gmsg);
        else
            req_finish(pg, r, res, res ? NULL : "internal: no result");
        PQclear(res);
    }
    PQclear(gerr);
}

/* Reads every complete result libpq has buffered. Returns -1 if the connection failed (c has
 * been reset), 0 otherwise. */
static int conn_read_results(pg_conn *c)
{
    while (c->inflight.head && c->state == CONN_READY) {
        if (PQisBusy(c->conn))
            break;
        PGresult *res = PQgetResult(c->conn);
        if (res)
            c->progress_ms = now_ms(c->pg);
        log_debug("pg[%d]: result %s (await %d)", c->index,
                  res ? PQresStatus(PQresultStatus(res)) : "NULL", c->await_sync);
        if (c->await_sync || !c->cur) {
            if (!res) {
                /* Nothing more parsed yet. */
                break;
            }
            ExecStatusType st = PQresultStatus(res);
            PQclear(res);
            if (st != PGRES_PIPELINE_SYNC) {
                conn_fail(c, "protocol: unexpected result while waiting for sync");
                return -1;
            }
            c->await_sync = false;
            conn_finish_group(c);
            /* The next group's first request starts receiving results. */
            c->cur = c->inflight.head;
            continue;
        }
        pg_req *r = c->cur;
        if (!res) {
            /* End of r's results. */
            if (r->sync_after)
                c->await_sync = true;
            c->cur = r->next;
            continue;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            conn_fail(c, "protocol: unexpected sync");
            return -1;
        }
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && st != PGRES_EMPTY_QUERY) {
            r->failed = true;
            c->group_failed = true;
        }
        if (r->res && st == PGRES_PIPELINE_ABORTED) {
            PQclear(res); /* keep the first (real) result */
        } else {
            PQclear(r->res);
            r->res = res;
        }
    }
    if (c->state == CONN_READY && PQstatus(c->conn) == CONNECTION_BAD) {
        conn_fail(c, PQerrorMessage(c->conn));
        return -1;
    }
    return 0;
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    pg_conn *c = h->data;
    if (c->state == CONN_CONNECTING) {
        conn_connect_poll(c);
        return;
    }
    if (c->state != CONN_READY)
        return;
    log_debug("pg[%d]: poll status %d events %d inflight %d cur %p await %d", c->index, status,
              events, c->inflight.n, (void *)c->cur, c->await_sync);
    if (status < 0) {
        /* libuv stops a poll handle after reporting an error (EPOLLERR, e.g. a reset): no more
         * events will come for this socket, so the connection is over. */
        conn_fail(c, uv_strerror(status));
        return;
    }
    if (events & UV_WRITABLE) {
        int f = PQflush(c->conn);
        if (f < 0) {
            conn_fail(c, PQerrorMessage(c->conn));
            return;
        }
        if (f == 0)
            conn_watch(c, UV_READABLE);
    }
    if (events & UV_READABLE) {
        if (!PQconsumeInput(c->conn)) {
            conn_fail(c, PQerrorMessage(c->conn));
            return;
        }
        if (conn_read_results(c) < 0)
            return;
        /* Server notices and async messages are read and dropped by libpq. */
    }
    if (c->pending.head)
        schedule(c->pg);
}

/* ---------------------------------------------------------------- sending */

static int send_one(pg_conn *c, pg_req *r)
{
    const char *const *params = (const char *const *)r->params;
    int ok;
    if (r->internal)
        ok = PQsendPrepare(c->conn, r->stmt, r->sql, 0, NULL);
    else if (r->stmt)
        ok = PQsendQueryPrepared(c->conn, r->stmt, r->nparams, params, NULL, NULL, 0);
    else
        ok = PQsendQueryParams(c->conn, r->sql, r->nparams, NULL, params, NULL, NULL, 0);
    return ok ? 0 : -1;
}

/* A combined query stops growing at this many bytes of items (one big message is still sent,
 * alone). */
#define PG_COMBINE_MAX_BYTES (1u << 20)

/* Whether the request at the head of c->pending can join a combined query that starts with
 * `first` and holds n items in `total` bytes so far. */
/* Whether routed request r must wait: its key has a request in flight that is not in the group
 * being built (from group_first on in c->inflight; NULL: no group yet). That request's group
 * may still fail and be re-run, and r, sent meanwhile, would overtake it: a chat's close
 * committed before its earlier append, which then answered "closed" (found by a review). So a
 * key's requests are pipelined only within one group. Cheap: the scan runs only for a key with
 * something in flight. */
static bool key_busy(const pg_conn *c, const pg_req *r, const pg_req *group_first)
{
    if (!r->owner)
        return false;
    const pg_route_slot *sl = pg_routes_find(&c->pg->routes, r->route_hash);
    int inflight = sl ? sl->n - sl->unsent : 0;
    for (const pg_req *q = group_first; q && inflight > 0; q = q->next)
        if (q->owner && q->route_hash == r->route_hash)
            inflight--;
    return inflight > 0;
}

static bool can_join(const pg_conn *c, const pg_req *first, int n, size_t total)
{
    const pg_req *nx = c->pending.head;
    return !first->solo && n < c->pg->opt.max_batch && nx && !nx->solo && nx->combine_sql &&
           strcmp(nx->combine_sql, first->combine_sql) == 0 &&
           total + strlen(nx->item) < PG_COMBINE_MAX_BYTES && !key_busy(c, nx, NULL);
}

/* Takes the combinable request at the head of c->pending and the adjacent ones with the same
 * combine_sql (up to max_batch; a `solo` request goes alone) into a new carrier request whose
 * only parameter is the JSON array of their items. A request left alone that has a statement
 * of its own is returned itself, to be sent as that statement. */
static pg_req *make_carrier(pg_conn *c)
{
    pg_req *first = take_pending(c);
    size_t total = 3 + strlen(first->item) + 1;
    if ((first->stmt || (first->sql && first->sql[0])) && !can_join(c, first, 1, total))
        return first;
    pg_req *carrier = xcalloc(1, sizeof *carrier);
    carrier->carrier = true;
    if (first->combine_stmt)
        carrier->stmt = xstrdup(first->combine_stmt);
    else
        carrier->sql = xstrdup(first->combine_sql);
    list_push(&carrier->members, first);
    while (can_join(c, first, carrier->members.n, total)) {
        pg_req *m = take_pending(c);
        total += strlen(m->item) + 1;
        list_push(&carrier->members, m);
    }
    carrier->nparams = 1;
    carrier->params = xmalloc(sizeof(char *) + total);
    char *p = (char *)(carrier->params + 1);
    carrier->params[0] = p;
    *p++ = '[';
    for (pg_req *m = carrier->members.head; m; m = m->next) {
        if (m != carrier->members.head)
            *p++ = ',';
        size_t n = strlen(m->item);
        memcpy(p, m->item, n);
        p += n;
    }
    *p++ = ']';
    *p = '\0';
    return carrier;
}

/* Called when c is about to send its next combined query, so nothing combinable is in flight
 * on it: every key queued here that has nothing in flight anywhere and whose home is now
 * another connection that is up goes there with all it has queued. Without this a busy chat
 * never moved when the spread changed: its next append always arrived while its previous one
 * was in flight, and the next combined query took both. */
static void rehome_pending(pg_conn *c)
{
    pg_client *pg = c->pg;
    req_list keep = {0};
    bool moved = false;
    pg_req *r;
    while ((r = list_pop(&c->pending))) {
        pg_conn *to = c;
        pg_route_slot *s = r->owner ? pg_routes_find(&pg->routes, r->route_hash) : NULL;
        if (s && s->conn != c->index) {
            to = &pg->conns[s->conn]; /* its key moved earlier in this pass */
        } else if (s && s->unsent == s->n) {
            pg_conn *home = pick_home(pg, r->route_hash);
            if (home != c && home->state == CONN_READY) {
                s->conn = home->index;
                to = home;
            }
        }
        list_push(to == c ? &keep : &to->pending, r);
        moved = moved || to != c;
    }
    c->pending = keep;
    if (moved)
        schedule(pg);
}

/* Whether a combined query (or a lone combinable request) is in flight on c. */
static bool carrier_inflight(const pg_conn *c)
{
    for (const pg_req *r = c->inflight.head; r; r = r->next)
        if (r->carrier || r->combine_sql)
            return true;
    return false;
}

/* Sends pending requests as pipelined groups while there is room in flight. */
static void conn_dispatch(pg_conn *c)
{
    pg_client *pg = c->pg;
    if (c->state != CONN_READY)
        return;
    bool sent = false;
    uint64_t now = now_ms(pg);
    /* Statements registered since (or before) this connection came up. */
    while (c->nprepared < pg->nstmts) {
        pg_req *r = xcalloc(1, sizeof *r);
        r->internal = true;
        r->stmt = xstrdup(pg->stmts[c->nprepared].name);
        r->sql = xstrdup(pg->stmts[c->nprepared].sql);
        r->sync_after = true;
        r->sent_ms = now;
        if (send_one(c, r) < 0 || PQpipelineSync(c->conn) != 1) {
            req_free(r);
            conn_fail(c, PQerrorMessage(c->conn));
            return;
        }
        if (!c->cur && !c->await_sync)
            c->cur = r;
        list_push(&c->inflight, r);
        c->nprepared++;
        sent = true;
    }
    while (c->pending.head && c->inflight.n < pg->opt.max_inflight) {
        int group = 0;
        if (c->pending.head->combine_sql) {
            /* Group commit: while one combined query runs, what arrives waits (requests
             * keep their order) and goes as one bigger combined query when it is done.
             * Pipelining one call per loop iteration instead gave 1.1 items per call at
             * 2,000 appends/s, each paying the call's fixed cost in PostgreSQL. */
            if (carrier_inflight(c))
                break;
            if (pg->spread.active > 1 || c->index > 0)
                rehome_pending(c);
            if (!c->pending.head)
                break;
            if (!c->pending.head->combine_sql)
                continue;
            if (key_busy(c, c->pending.head, NULL))
                break; /* after what its chat has in flight */
            pg_req *out = make_carrier(c); /* a carrier, or a lone request */
            out->sent_ms = now;
            out->sync_after = true;
            if (send_one(c, out) < 0 || PQpipelineSync(c->conn) != 1) {
                list_push(&c->inflight, out);
                conn_fail(c, PQerrorMessage(c->conn));
                return;
            }
            if (!c->cur && !c->await_sync)
                c->cur = out;
            list_push(&c->inflight, out);
            sent = true;
            continue;
        }
        if (key_busy(c, c->pending.head, NULL))
            break; /* after what its chat has in flight */
        pg_req *group_first = NULL;
        for (;;) {
            pg_req *r = take_pending(c);
            r->sent_ms = now;
            r->sync_after = false;
            if (send_one(c, r) < 0) {
                list_push(&c->inflight, r);
                conn_fail(c, PQerrorMessage(c->conn));
                return;
            }
            if (!c->cur && !c->await_sync)
                c->cur = r;
            list_push(&c->inflight, r);
            if (!group_first)
                group_first = r;
            group++;
            pg_req *nx = c->pending.head;
            bool batchable = (r->flags & PG_Q_BATCH) && !r->solo;
            if (!batchable || !nx || !(nx->flags & PG_Q_BATCH) || nx->solo ||
                group >= pg->opt.max_batch || c->inflight.n >= pg->opt.max_inflight ||
                key_busy(c, nx, group_first)) {
                r->sync_after = true;
                break;
            }
        }
        if (PQpipelineSync(c->conn) != 1) {
            conn_fail(c, PQerrorMessage(c->conn));
            return;
        }
        sent = true;
    }
    if (sent) {
        int f = PQflush(c->conn);
        if (f < 0) {
            conn_fail(c, PQerrorMessage(c->conn));
            return;
        }
        conn_watch(c, f == 1 ? (UV_READABLE | UV_WRITABLE) : UV_READABLE);
    }
}

/* A pass can ask for another: rehome_pending moves waiting requests to a connection the pass
 * has already visited. A prepare handle restarted from its own callback would only run after
 * the loop has blocked in poll, up to the next I/O or the 100 ms tick (measured: a moved append
 * answered after 70-82 ms instead of 1-4). So passes repeat here while one is asked for; moves
 * go to a chat's home and homes do not change within a pass, so the second pass is the last in
 * practice (the bound is a guard). */
static void on_prepare(uv_prepare_t *h)
{
    pg_client *pg = h->data;
    for (int pass = 0; pass < 4 && pg->prepare_active; pass++) {
        pg->prepare_active = false;
        if (pg->failed.head)
            fail_list(pg, &pg->failed, "unavailable: no database connection");
        for (int i = 0; i < pg->nconns; i++)
            if (pg->conns[i].pending.head)
                conn_dispatch(&pg->conns[i]);
    }
    if (!pg->prepare_active)
        uv_prepare_stop(&pg->prepare);
}

/* Arranges for on_prepare to run before the loop next blocks. */
static void schedule(pg_client *pg)
{
    if (!pg->prepare_active && !pg->closing) {
        pg->prepare_active = true;
        uv_prepare_start(&pg->prepare, on_prepare);
    }
}

/* Periodic checks: queue deadlines while no connection is up, stuck connections. */
static void on_tick(uv_timer_t *t)
{
    pg_client *pg = t->data;
    uint64_t now = now_ms(pg);
    uint64_t stuck_after = (uint64_t)(pg->opt.statement_timeout_ms > 0
                                          ? pg->opt.statement_timeout_ms
                                          : 30000) + 5000;
    if (!pg->spread_pinned)
        pg_spread_tick(&pg->spread,
                       pg->wait_n ? (double)pg->wait_ns / (double)pg->wait_n / 1e6 : -1,
                       pg->nconns);
    pg->wait_ns = pg->wait_n = 0;
    for (int i = 0; i < pg->nconns; i++) {
        pg_conn *c = &pg->conns[i];
        if (c->state != CONN_READY) {
            req_list keep = {0}, expired = {0};
            pg_req *r;
            while ((r = list_pop(&c->pending)))
                list_push(r->deadline_ms <= now ? &expired : &keep, r);
            c->pending = keep;
            fail_list(pg, &expired, "unavailable: no database connection");
        } else if (c->inflight.head) {
            /* Stuck: nothing answered for longer than any statement may run. Measured from the
             * later of the oldest request's send and the last answer: a long pipeline of quick
             * statements, all sent at once, is progress, not a hang (it was cut at 5.2 s with
             * a 200 ms statement timeout, found by a review). */
            uint64_t since = c->inflight.head->sent_ms > c->progress_ms ? c->inflight.head->sent_ms
                                                                         : c->progress_ms;
            if (now - since > stuck_after)
                conn_fail(c, "no answer from the server");
        }
    }
}

/* ---------------------------------------------------------------- public API */

void pg_options_default(pg_options *o)
{
    o->pool_size = 4;
    o->statement_timeout_ms = 5000;
    o->lock_timeout_ms = 500;
    o->connect_timeout_ms = 5000;
    o->queue_timeout_ms = 2000;
    o->backoff_min_ms = 100;
    o->backoff_max_ms = 5000;
    o->max_inflight = 512;
    o->max_batch = 256;
}

/* The host of conninfo when it is one name to look up: not an address, not a socket directory,
 * not given with a hostaddr, not a list (libpq then tries each in turn itself). NULL
 * otherwise, or when conninfo does not parse (libpq reports that at connect). */
static char *host_to_resolve(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    PQfreemem(err);
    if (!opts)
        return NULL;
    const char *host = NULL, *hostaddr = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!strcmp(o->keyword, "host"))
            host = o->val;
        else if (!strcmp(o->keyword, "hostaddr"))
            hostaddr = o->val;
    }
    char *out = NULL;
    unsigned char addr[sizeof(struct in6_addr)];
    if (host && *host && (!hostaddr || !*hostaddr) && host[0] != '/' && host[0] != '@' &&
        !strchr(host, ',') && inet_pton(AF_INET, host, addr) != 1 &&
        inet_pton(AF_INET6, host, addr) != 1)
        out = xstrdup(host);
    PQconninfoFree(opts);
    return out;
}

pg_client *pg_new(uv_loop_t *loop, const char *conninfo, const pg_options *opt)
{
    pg_client *pg = xcalloc(1, sizeof *pg);
    pg->loop = loop;
    pg->conninfo = xstrdup(conninfo ? conninfo : "");
    pg->resolve_host = host_to_resolve(pg->conninfo);
    pg_options_default(&pg->opt);
    if (opt)
        pg->opt = *opt;
    if (pg->opt.pool_size < 1)
        pg->opt.pool_size = 1;
    if (pg->opt.max_inflight < 1)
        pg->opt.max_inflight = 1;
    if (pg->opt.max_batch < 1)
        pg->opt.max_batch = 1;
    pg_routes_init(&pg->routes);
    pg->spread.active = 1;
    if (pg->opt.backoff_min_ms < 1)
        pg->opt.backoff_min_ms = 1;
    if (pg->opt.backoff_max_ms < pg->opt.backoff_min_ms)
        pg->opt.backoff_max_ms = pg->opt.backoff_min_ms;
    if (pg->opt.connect_timeout_ms < 1)
        pg->opt.connect_timeout_ms = 5000;
    pg->next_id = 1;
    uv_prepare_init(loop, &pg->prepare);
    pg->prepare.data = pg;
    uv_timer_init(loop, &pg->tick);
    pg->tick.data = pg;
    uv_timer_start(&pg->tick, on_tick, 100, 100);
    uv_unref((uv_handle_t *)&pg->tick);
    pg->open_handles = 2;
    pg->nconns = pg->opt.pool_size;
    pg->conns = xcalloc((size_t)pg->nconns, sizeof *pg->conns);
    for (int i = 0; i < pg->nconns; i++) {
        pg_conn *c = &pg->conns[i];
        c->pg = pg;
        c->index = i;
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        pg->open_handles++;
        conn_connect(c);
    }
    return pg;
}

/* One of the handles (or host lookups) pg_free waits for is done; the last one frees pg. */
static void client_release(pg_client *pg)
{
    if (--pg->open_handles > 0)
        return;
    /* Queries submitted by callbacks during pg_free: nobody is left to answer. */
    pg_req *r;
    while ((r = list_pop(&pg->failed))) {
        if ((r->cb || r->row_cb) && r->on_cancel)
            r->on_cancel(r->ctx);
        req_free(r);
    }
    for (int i = 0; i < pg->nstmts; i++) {
        free(pg->stmts[i].name);
        free(pg->stmts[i].sql);
    }
    free(pg->stmts);
    pg_routes_free(&pg->routes);
    free(pg->conns);
    free(pg->conninfo);
    free(pg->resolve_host);
    free(pg);
}

static void client_handle_closed(uv_handle_t *h)
{
    client_release(h->data);
}

void pg_free(pg_client *pg)
{
    if (!pg || pg->closing)
        return;
    pg->closing = true;
    const char *err = "unavailable: client closed";
    fail_list(pg, &pg->failed, err);
    for (int i = 0; i < pg->nconns; i++) {
        pg_conn *c = &pg->conns[i];
        conn_close_poll(c);
        if (c->conn) {
            PQfinish(c->conn);
            c->conn = NULL;
        }
        c->state = CONN_CLOSED;
        uv_timer_stop(&c->timer);
        if (c->resolving)
            uv_cancel((uv_req_t *)&c->gai); /* its callback releases pg */
        req_list inflight = c->inflight, pending = c->pending;
        memset(&c->inflight, 0, sizeof c->inflight);
        memset(&c->pending, 0, sizeof c->pending);
        fail_list(pg, &inflight, err);
        fail_list(pg, &pending, err);
    }
    for (int i = 0; i < pg->nconns; i++) {
        pg->conns[i].timer.data = pg;
        uv_close((uv_handle_t *)&pg->conns[i].timer, client_handle_closed);
    }
    uv_close((uv_handle_t *)&pg->prepare, client_handle_closed);
    uv_close((uv_handle_t *)&pg->tick, client_handle_closed);
}

bool pg_is_ready(const pg_client *pg)
{
    if (!pg || pg->closing)
        return false;
    for (int i = 0; i < pg->nconns; i++)
        if (pg->conns[i].state == CONN_READY)
            return true;
    return false;
}

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The least loaded connection that is up, else one that is connecting; NULL when none can
 * serve. */
static pg_conn *pick_least_loaded(pg_client *pg)
{
    pg_conn *best = NULL;
    for (int k = 0; k < pg->nconns; k++) {
        pg_conn *c = &pg->conns[(pg->rr + k) % pg->nconns];
        if (c->state != CONN_READY)
            continue;
        if (!best || c->pending.n + c->inflight.n < best->pending.n + best->inflight.n)
            best = c;
    }
    pg->rr = (pg->rr + 1) % pg->nconns;
    if (best)
        return best;
    for (int k = 0; k < pg->nconns; k++)
        if (pg->conns[k].state == CONN_CONNECTING)
            return &pg->conns[k];
    return NULL;
}

/* Moves the waiting requests of route key `hash` from `from` to the end of `to`'s pending
 * list, in order. None of them has been sent. */
static void move_key(pg_conn *from, pg_conn *to, uint32_t hash)
{
    req_list keep = {0};
    pg_req *r;
    while ((r = list_pop(&from->pending)))
        list_push(r->owner && r->route_hash == hash ? &to->pending : &keep, r);
    from->pending = keep;
}

/* A routed key's connection when it has nothing in flight: its home (hash modulo the current
 * spread, see pg_spread in pg_route.h) if that is up, else the next one that is up, else its
 * home anyway, to wait there for the reconnect (within queue_timeout_ms). Connections are
 * CONN_CLOSED only once pg_free has begun, and nothing is routed after that. */
static pg_conn *pick_home(pg_client *pg, uint32_t hash)
{
    int home = (int)(hash % (uint32_t)pg->spread.active);
    for (int k = 0; k < pg->nconns; k++) {
        pg_conn *c = &pg->conns[(home + k) % pg->nconns];
        if (c->state == CONN_READY)
            return c;
    }
    return &pg->conns[home];
}

/* Picks the connection for a query and, for a routed one, counts it in the route table.
 *
 * A route key with a query in flight stays on that query's connection: a chat's appends must
 * complete in seq order. Otherwise the key goes to pick_home, and its queries still waiting
 * elsewhere (behind a running group commit, or on a connection that went down) move there
 * with it: none of them has been sent, so none can be overtaken. Unrouted queries go to the
 * least loaded connection. */
static pg_conn *pick_conn(pg_client *pg, const char *route_key, pg_req *r)
{
    if (!route_key)
        return pick_least_loaded(pg);
    uint32_t hash = fnv1a(route_key);
    pg_route_slot *s = pg_routes_find(&pg->routes, hash);
    pg_conn *cur = s ? &pg->conns[s->conn] : NULL;
    pg_conn *c;
    if (cur && s->unsent < s->n) {
        c = cur;
    } else {
        c = pick_home(pg, hash);
        if (cur && c != cur) {
            move_key(cur, c, hash);
            s->conn = c->index;
        }
    }
    pg_routes_hold(&pg->routes, hash, c->index);
    r->owner = pg;
    r->route_hash = hash;
    r->unsent = true;
    return c;
}

pg_req_id pg_query_ex(pg_client *pg, const pg_query_opts *q, pg_cb cb, void *ctx)
{
    pg_req *r = xcalloc(1, sizeof *r);
    r->id = pg->next_id++;
    r->cb = cb;
    r->ctx = ctx;
    r->on_cancel = q->on_cancel;
    r->row_cb = q->row_cb;
    r->flags = q->flags;
    if (q->combine_sql && q->combine_item) {
        r->combine_sql = xstrdup(q->combine_sql);
        r->combine_stmt = q->combine_stmt ? xstrdup(q->combine_stmt) : NULL;
        r->item = xstrdup(q->combine_item);
    }
    if (q->stmt)
        r->stmt = xstrdup(q->stmt);
    else
        r->sql = xstrdup(q->sql ? q->sql : "");
    r->nparams = q->nparams > 0 ? q->nparams : 0;
    if (r->nparams) {
        size_t total = (size_t)r->nparams * sizeof(char *);
        for (int i = 0; i < r->nparams; i++)
            if (q->params[i])
                total += strlen(q->params[i]) + 1;
        r->params = xmalloc(total);
        char *p = (char *)(r->params + r->nparams);
        for (int i = 0; i < r->nparams; i++) {
            if (!q->params[i]) {
                r->params[i] = NULL;
                continue;
            }
            size_t n = strlen(q->params[i]) + 1;
            memcpy(p, q->params[i], n);
            r->params[i] = p;
            p += n;
        }
    }
    r->deadline_ms = now_ms(pg) + (uint64_t)pg->opt.queue_timeout_ms;
    if (r->combine_sql)
        r->queued_ns = uv_hrtime();
    pg_conn *c = pg->closing ? NULL : pick_conn(pg, q->route_key, r);
    list_push(c ? &c->pending : &pg->failed, r);
    if (!pg->closing)
        schedule(pg);
    return r->id;
}

pg_req_id pg_query(pg_client *pg, const char *sql, int nparams, const char *const *params,
                   pg_cb cb, void *ctx)
{
    pg_query_opts q = {.sql = sql, .nparams = nparams, .params = params};
    return pg_query_ex(pg, &q, cb, ctx);
}

static pg_req *find_in(req_list *l, pg_req_id id)
{
    for (pg_req *r = l->head; r; r = r->next)
        if (r->id == id && !r->internal && !r->carrier)
            return r;
    return NULL;
}

bool pg_cancel(pg_client *pg, pg_req_id id)
{
    if (!pg || !id)
        return false;
    pg_req *r;
    if ((r = find_in(&pg->failed, id))) {
        list_remove(&pg->failed, r);
        goto detached_unlinked;
    }
    for (int i = 0; i < pg->nconns; i++) {
        pg_conn *c = &pg->conns[i];
        if ((r = find_in(&c->pending, id))) {
            list_remove(&c->pending, r);
            goto detached_unlinked;
        }
        r = find_in(&c->inflight, id);
        for (pg_req *cr = c->inflight.head; !r && cr; cr = cr->next)
            if (cr->carrier)
                r = find_in(&cr->members, id);
        if (r && (r->cb || r->row_cb)) {
            /* Results still have to be read in order: keep the request, drop the callback.
             * on_cancel goes too: a failed combined call re-queues its members, and a second
             * pg_cancel would find this one waiting and run on_cancel again (a double free in
             * messages.c; found by a review). */
            void (*on_cancel)(void *) = r->on_cancel;
            r->cb = NULL;
            r->row_cb = NULL;
            r->on_cancel = NULL;
            if (on_cancel)
                on_cancel(r->ctx);
            return true;
        }
    }
    return false;
detached_unlinked:
    if (!r->cb && !r->row_cb) { /* cancelled before, while in flight: nothing to detach now */
        req_free(r);
        return false;
    }
    if (r->on_cancel)
        r->on_cancel(r->ctx);
    req_free(r);
    return true;
}

void pg_prepare(pg_client *pg, const char *name, const char *sql)
{
    for (int i = 0; i < pg->nstmts; i++)
        if (strcmp(pg->stmts[i].name, name) == 0)
            return;
    pg->stmts = xrealloc(pg->stmts, (size_t)(pg->nstmts + 1) * sizeof *pg->stmts);
    pg->stmts[pg->nstmts].name = xstrdup(name);
    pg->stmts[pg->nstmts].sql = xstrdup(sql);
    pg->nstmts++;
    schedule(pg);
}

pg_outcome pg_classify(const PGresult *res, const char *err)
{
    if (!err)
        return PG_OUTCOME_OK;
    if (!res)
        return PG_OUTCOME_UNAVAILABLE;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!state)
        return PG_OUTCOME_UNAVAILABLE;
    /* 08 connection exception, 53 insufficient resources, 57 operator intervention (admin
     * shutdown, query_canceled = statement_timeout, cannot_connect_now), 55P03 lock timeout,
     * 40 serialization failure / deadlock. */
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "53", 2) == 0 ||
        strncmp(state, "57", 2) == 0 || strcmp(state, "55P03") == 0 ||
        strncmp(state, "40", 2) == 0)
        return PG_OUTCOME_UNAVAILABLE;
    return PG_OUTCOME_ERROR;
}

void pg_set_spread(pg_client *pg, int n)
{
    pg->spread_pinned = n > 0;
    if (n > 0)
        pg->spread.active = n < pg->nconns ? n : pg->nconns;
}

void pg_get_stats(const pg_client *pg, pg_stats *out)
{
    *out = pg->stats;
    out->spread = pg->spread.active;
    out->connections_ready = 0;
    out->pending = pg->failed.n;
    out->inflight = 0;
    for (int i = 0; i < pg->nconns; i++) {
        const pg_conn *c = &pg->conns[i];
        if (c->state == CONN_READY)
            out->connections_ready++;
        out->pending += c->pending.n;
        out->inflight += c->inflight.n;
    }
}
