/* Non-blocking PostgreSQL client on the libuv loop (STYLE §16-17).
 *
 * One pg_client per process owns a pool of N libpq connections, each driven by a uv_poll_t on
 * PQsocket and a uv_timer_t (connect timeout, reconnect backoff). Every connection runs in libpq
 * pipeline mode: all the queries submitted during one loop iteration go out together and their
 * results come back in order, without a round trip per query. Queries flagged PG_Q_BATCH (such
 * as message appends) may share one implicit transaction with their neighbours — one commit for
 * many messages — and are re-run one by one if that shared transaction fails.
 *
 * Ordering: while a route_key (use the chat id) has a query in flight, its new queries go to the
 * same connection, so their results arrive in submission order. A key with none in flight goes,
 * with its queries still waiting, to its home: its hash modulo the number of connections the
 * keys are spread over now, or the next connection that is up while the home is down. That
 * spread adapts to how long combinable queries wait (pg_spread in pg_route.h): one connection
 * at low rates, so that group commit makes bigger and cheaper combined calls, more as waits
 * grow. A key's query is not pipelined behind its own in-flight query of an earlier group: that
 * group may fail and be re-run, and the later query would overtake it.
 *
 * Connecting: a host name in conninfo is resolved with uv_getaddrinfo (libpq's own lookup would
 * block the loop) and every address is tried in turn.
 *
 * Failure: a connection that dies fails all its queries with res == NULL and err set
 * ("unavailable: ..."), then reconnects by itself with exponential backoff (100 ms .. 5 s, with
 * jitter). While no connection is up, new queries fail at once (or, while a connection attempt
 * is under way, after queue_timeout_ms). statement_timeout is set on every connection.
 *
 * Callback contract: cb(ctx, res, err) runs exactly once per query, never synchronously inside
 * pg_query, unless pg_cancel() was called first (then never). err == NULL: success, res is the
 * result (PGRES_TUPLES_OK / PGRES_COMMAND_OK). err != NULL: failure; res is the server's error
 * result when the server answered (read SQLSTATE with PQresultErrorField), NULL when the
 * connection was lost or never available. res is borrowed: valid only during the callback.
 * A callback may submit or cancel queries; it must not call pg_free. */
#ifndef CHATD_STORE_PG_H
#define CHATD_STORE_PG_H
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct pg_client pg_client;

typedef struct pg_options {
    int pool_size;            /* connections (4) */
    int statement_timeout_ms; /* SET statement_timeout on each connection (5000; 0 = none) */
    int lock_timeout_ms;      /* SET lock_timeout on each connection (500; 0 = none) */
    int connect_timeout_ms;   /* one connection attempt (5000) */
    int queue_timeout_ms;     /* max wait for a connection that is being established (2000) */
    int backoff_min_ms;       /* first reconnect delay (100) */
    int backoff_max_ms;       /* reconnect delay cap (5000) */
    int max_inflight;         /* queries in flight per connection (512) */
    int max_batch;            /* PG_Q_BATCH queries per shared transaction, items per combined query (256) */
} pg_options;

void pg_options_default(pg_options *o);

/* Creates the client and starts connecting (conninfo: URL or key=value string, copied).
 * opt may be NULL (defaults). Never returns NULL. */
pg_client *pg_new(uv_loop_t *loop, const char *conninfo, const pg_options *opt);

/* Fails every pending query (callbacks run now with err "unavailable: client closed"), closes
 * the connections and the uv handles; the memory is released by the handles' close callbacks,
 * so the loop must run once more. pg is invalid after the call. Accepts NULL. Must not be called
 * from inside a pg callback. */
void pg_free(pg_client *pg);

/* True when at least one connection is established (for /readyz). */
bool pg_is_ready(const pg_client *pg);

typedef void (*pg_cb)(void *ctx, const PGresult *res, const char *err);
/* Like pg_cb, plus the row of res that belongs to this request (combined queries, see
 * pg_query_opts.combine_sql); row is 0 for a plain query and -1 when err is set. */
typedef void (*pg_row_cb)(void *ctx, const PGresult *res, int row, const char *err);
typedef uint64_t pg_req_id; /* 0 is never a valid id */

/* Flags of pg_query_opts. */
enum {
    /* May share one implicit transaction with adjacent PG_Q_BATCH queries. Only for statements
     * that do not raise for expected outcomes and are safe to re-run: if the shared transaction
     * fails, every member is re-run alone and only a member failing alone reports an error. */
    PG_Q_BATCH = 1u << 0,
};

typedef struct pg_query_opts {
    const char *sql;            /* SQL text with $1.. placeholders, or NULL when stmt is set */
    const char *stmt;           /* name registered with pg_prepare, or NULL */
    int nparams;
    const char *const *params;  /* text-format values (NULL entry = SQL NULL); copied */
    const char *route_key;      /* e.g. the chat id: same key, same connection; NULL = any */
    unsigned flags;             /* PG_Q_* */
    void (*on_cancel)(void *ctx); /* called instead of cb when the query is cancelled, or NULL */
    pg_row_cb row_cb;           /* used instead of cb when set */
    /* Multi-row writes: requests with the same combine_sql that are adjacent in a connection's
     * queue (same route) are sent as ONE query, combine_sql with $1 = the JSON array of their
     * combine_item values (up to max_batch). It must return exactly one row per item, in item
     * order; each request's row_cb gets that result and its row. If the combined query fails,
     * every item is re-sent alone, so only a failing item reports an error. A request that
     * has nothing to combine with goes as a combined query of one item, unless it has its own
     * sql or stmt: then it is sent as that, with its params (a cheaper statement for the
     * single item, which is every request at low rates); its row_cb gets row 0. Either way at
     * most one combined query per connection is in flight (group commit). */
    const char *combine_sql;
    const char *combine_item;   /* one JSON value (copied) */
    const char *combine_stmt;   /* prepared statement (pg_prepare) of combine_sql, or NULL */
} pg_query_opts;

/* Queues a query. Returns its id (for pg_cancel). Text results. */
pg_req_id pg_query_ex(pg_client *pg, const pg_query_opts *q, pg_cb cb, void *ctx);
/* Shorthand: pg_query_ex with sql/nparams/params only. */
pg_req_id pg_query(pg_client *pg, const char *sql, int nparams, const char *const *params,
                   pg_cb cb, void *ctx);

/* Detaches a query's callback (caller gone): cb will never run; on_cancel(ctx) runs now if set.
 * The query itself may still execute. Returns false when the id is unknown (already done). */
bool pg_cancel(pg_client *pg, pg_req_id id);

/* Registers a prepared statement (name and sql copied), prepared on every connection before its
 * first use and again after each reconnect. Registering an existing name is a no-op. */
void pg_prepare(pg_client *pg, const char *name, const char *sql);

/* Outcome of a callback, for mapping to the wire: OK, UNAVAILABLE (connection lost, database
 * starting/stopping, statement or lock timeout), or ERROR (anything else: a bug or bad data). */
typedef enum pg_outcome { PG_OUTCOME_OK = 0, PG_OUTCOME_UNAVAILABLE, PG_OUTCOME_ERROR } pg_outcome;
pg_outcome pg_classify(const PGresult *res, const char *err);

typedef struct pg_stats {
    int connections_ready;
    uint64_t queries;      /* completed (any outcome) */
    uint64_t errors;       /* completed with err set */
    uint64_t batches_retried;
    uint64_t reconnects;
    int pending;           /* queued, not yet sent */
    int inflight;          /* sent, waiting for results */
    int spread;            /* connections routed keys are spread over now (pg_spread) */
} pg_stats;
void pg_get_stats(const pg_client *pg, pg_stats *out);

/* Pins the spread (see Ordering above) at n connections (clamped to the pool); n <= 0 lets it
 * adapt again from where it is. For tests and for measuring a fixed spread. */
void pg_set_spread(pg_client *pg, int n);

#endif
