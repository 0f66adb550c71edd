/* presence/presence_redis.h — I/O shell around the presence and timer
 * scripts: turns keyspace "expired" events into exactly-once callbacks and
 * runs the periodic reconciler that catches what the notifications missed
 * (every node down while a key expired, notifications disabled, a node that
 * was restarting).
 *
 * Usage (one engine per process, next to the redis_client):
 *   pres_engine_cbs cbs = {.on_offline = ..., .on_timer = ..., .ctx = app};
 *   pres_engine *pe = pres_engine_new(loop, redis, &cbs, 10000, 2000);
 *   redis_subscribe_expired(redis);       // and route the messages:
 *   on_message(..., channel "__keyevent@N__:expired", data = key):
 *       pres_engine_on_expired(pe, key, len);
 *   pres_engine_track_org(pe, org);       // whenever a socket of org connects or
 *                                         // a timer of org is armed (cheap: once
 *                                         // per org per process)
 *
 * Callbacks run on the loop, at most once per event across all nodes (the
 * scripts claim atomically). Borrowed strings, valid during the call.
 */
#ifndef CHATD_PRESENCE_REDIS_H
#define CHATD_PRESENCE_REDIS_H
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "common/xalloc.h"
#include "store/redis.h"

typedef struct pres_engine pres_engine;

typedef struct pres_engine_cbs {
    /* The last socket of an identity expired (or was swept): announce
     * `presence` offline. type "agent" | "customer". */
    void (*on_offline)(void *ctx, const char *org, const char *type, const char *id);
    /* A timer (kind "warn" | "close" | "reply" | ...) of chat_id fired and this
     * node claimed it: act on it (inactivity warning, close, requeue). */
    void (*on_timer)(void *ctx, const char *org, const char *kind, const char *chat_id,
                     long long deadline_ms);
    void *ctx;
} pres_engine_cbs;

/* reconcile_interval_ms: period of the reconciler (0 = never; call
 * pres_engine_reconcile_now). grace_ms: the reconciler leaves timers overdue
 * by less than this to the notification path. Never returns NULL. */
GW_NODISCARD pres_engine *pres_engine_new(uv_loop_t *loop, redis_client *r,
                                          const pres_engine_cbs *cbs, int reconcile_interval_ms,
                                          long long grace_ms);
/* Remembers the org in the global org set (chat:orgs) for the reconciler. */
void pres_engine_track_org(pres_engine *e, const char *org);
/* A key name from an "expired" notification. Returns true when it is a socket
 * or timer key of chatd (handled asynchronously), false otherwise. */
bool pres_engine_on_expired(pres_engine *e, const char *key, size_t len);
/* Runs one reconciler pass now (skipped while one is running). */
void pres_engine_reconcile_now(pres_engine *e);
/* Number of reconciler passes completed (tests, metrics). */
unsigned long pres_engine_passes(const pres_engine *e);
/* Stops everything; pending Redis replies are dropped, no callback runs after
 * this call. Memory is released once the loop has run the close callback.
 * Accepts NULL. */
void pres_engine_free(pres_engine *e);

#endif
