/* Routing of a pool's queries by key (see pg.c), pure code, no I/O:
 *
 * - pg_routes: which connection each routing key (a chat) is on while it has queries
 *   outstanding, and how many of those still wait to be sent. A key's queries stay on one
 *   connection while one of them is in flight; a key whose queries all still wait may move,
 *   with them, to its current home. Keys are 32-bit hashes of the route key: two keys that
 *   collide merely move together.
 * - pg_spread: over how many connections keys are spread (their home is hash % active),
 *   adapted every tick to how long appends waited to be sent. */
#ifndef CHATD_STORE_PG_ROUTE_H
#define CHATD_STORE_PG_ROUTE_H
#include <stdbool.h>
#include <stdint.h>

typedef struct pg_route_slot {
    uint32_t hash;
    int conn;
    int n;      /* outstanding queries; 0 = free slot */
    int unsent; /* of those, waiting to be sent */
} pg_route_slot;

typedef struct pg_routes {
    pg_route_slot *slots; /* open addressing, linear probing; capacity a power of two */
    uint32_t cap;
    uint32_t used;
} pg_routes;

void pg_routes_init(pg_routes *t);
void pg_routes_free(pg_routes *t);
/* The slot of hash while it has queries outstanding, else NULL. Valid until the next call
 * that adds or releases. */
pg_route_slot *pg_routes_find(const pg_routes *t, uint32_t hash);
/* Counts one more unsent query of hash on conn (a key with none gets a slot; a key that has
 * some must already have been moved to conn). */
void pg_routes_hold(pg_routes *t, uint32_t hash, int conn);
/* A query of hash was sent (sent = true), or was sent and queued again (false). */
void pg_routes_mark(pg_routes *t, uint32_t hash, bool sent);
/* One outstanding query of hash is over; `unsent` if it never left (no-op for an unknown
 * hash). */
void pg_routes_release(pg_routes *t, uint32_t hash, bool unsent);

/* Appends wait while their connection runs the previous combined append (group commit). Fewer
 * connections make bigger, cheaper combined calls and, on a small machine, often shorter waits
 * too: at 6,939 msgs/s one connection cost PostgreSQL 45 % less CPU than four with an ack p99
 * of 14 ms against 22 ms (bench/RESULTS.md, "Adaptive spread"). But every append then waits
 * behind any slow call of that one backend. So the spread starts at one connection and
 *  - grows by one when the mean wait of PG_SPREAD_GROW_TICKS ticks in a row was above
 *    PG_SPREAD_GROW_MS (a short hiccup, such as a session's first plans, is not a trend; with
 *    2 ms and 3 ticks, start-up alone spread a 6,939 msgs/s load over all four);
 *  - shrinks by one when the mean wait over PG_SPREAD_CALM_TICKS ticks without such a tick was
 *    below PG_SPREAD_SHRINK_MS, but not within `hold` ticks of the last change. A shrink that
 *    had to be undone within PG_SPREAD_MISTAKE_TICKS doubles that hold (up to
 *    PG_SPREAD_HOLD_MAX_TICKS), so a load right at the edge does not make it flap; one that
 *    held halves it again. */
#define PG_SPREAD_GROW_MS 8.0
#define PG_SPREAD_GROW_TICKS 5
#define PG_SPREAD_SHRINK_MS 2.0
#define PG_SPREAD_CALM_TICKS 30
#define PG_SPREAD_HOLD_TICKS 50
#define PG_SPREAD_HOLD_MAX_TICKS 1200
#define PG_SPREAD_MISTAKE_TICKS 30

typedef struct pg_spread {
    int active;         /* 1..max */
    int busy;           /* consecutive ticks with long waits */
    double calm_sum;    /* waits of the current calm window, and its ticks */
    int calm_n;
    int hold;           /* ticks before the next shrink is allowed */
    int hold_len;       /* the hold after a change (PG_SPREAD_HOLD_TICKS, doubled by mistakes) */
    int since_shrink;   /* ticks since the last shrink (large: none recently) */
} pg_spread;

/* One tick: mean_wait_ms is the mean wait of the appends sent during it (< 0: none were, which
 * counts as no wait). Returns the new s->active, within 1..max. Zero-initialised is valid. */
int pg_spread_tick(pg_spread *s, double mean_wait_ms, int max);

#endif
