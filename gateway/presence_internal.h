/* Shared between gateway/chat_presence.c and gateway/chat_timers.c (issue 4):
 * one presence/timer engine per process (presence/presence_redis.h) turns the
 * keyspace `expired` events of socket and timer keys into exactly-once
 * callbacks and runs the reconciler. chat_presence.c owns it (created in
 * presence_start, freed in presence_stop, which runs before timers_stop);
 * timer callbacks are forwarded to chat_timers.c. */
#ifndef CHATD_PRESENCE_INTERNAL_H
#define CHATD_PRESENCE_INTERNAL_H
#include "gateway/chat.h"
#include "presence/presence_redis.h"

/* Reconciler period (pingInterval, at most PRESENCE_RECONCILE_MS, at least
 * 500 ms) and grace: a timer overdue by more than the grace is
 * fired by the reconciler (its notification was missed, or Redis has not
 * expired the key yet); dead sockets whose expired event was missed are swept
 * at the same period (the sweep's EXISTS also makes Redis expire them). Both
 * paths claim atomically, so the grace only spares double work.
 * Measured (Redis 7.0, hz 10): with 30,000 other keys with a TTL, `expired`
 * events came 17-78 s after the deadline (the active expiry cycle samples 20
 * keys per run), so on a busy deployment the reconciler is what bounds the
 * delay of a timer to PRESENCE_RECONCILE_MS + grace
 * (tests/e2e/presence_timers.test.mjs). */
#define PRESENCE_RECONCILE_MS 5000
#define PRESENCE_RECONCILE_GRACE_MS 250

/* The engine, or NULL before presence_start / after presence_stop. Borrowed. */
pres_engine *presence__engine(chat_app *app);

/* A timer of chat_id fired and this node claimed it (exactly once across
 * the cluster). deadline_ms is its deadline on the Redis clock. */
void timers__fire(chat_app *app, const char *org, const char *kind, const char *chat_id,
                  long long deadline_ms);

/* Every 100 ms: after Redis became ready (start, reconnect) the timers of
 * every assigned chat are re-armed from PostgreSQL (Redis may have lost them). */
void timers__tick(chat_app *app, bool redis_ready, bool became_ready);

#endif
