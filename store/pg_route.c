/* Outstanding routing keys and the adaptive spread (see pg_route.h). */
#include "store/pg_route.h"

#include <stdlib.h>

#include "common/xalloc.h"

void pg_routes_init(pg_routes *t)
{
    t->cap = 64;
    t->used = 0;
    t->slots = xcalloc(t->cap, sizeof *t->slots);
}

void pg_routes_free(pg_routes *t)
{
    free(t->slots);
    t->slots = NULL;
    t->cap = t->used = 0;
}

/* The slot of hash, or the free slot where it would go. */
static uint32_t probe(const pg_routes *t, uint32_t hash)
{
    uint32_t mask = t->cap - 1, i = hash & mask;
    while (t->slots[i].n && t->slots[i].hash != hash)
        i = (i + 1) & mask;
    return i;
}

pg_route_slot *pg_routes_find(const pg_routes *t, uint32_t hash)
{
    pg_route_slot *s = &t->slots[probe(t, hash)];
    return s->n ? s : NULL;
}

static void grow(pg_routes *t)
{
    pg_route_slot *old = t->slots;
    uint32_t oldcap = t->cap;
    t->cap *= 2;
    t->slots = xcalloc(t->cap, sizeof *t->slots);
    for (uint32_t i = 0; i < oldcap; i++)
        if (old[i].n)
            t->slots[probe(t, old[i].hash)] = old[i];
    free(old);
}

void pg_routes_hold(pg_routes *t, uint32_t hash, int conn)
{
    if ((t->used + 1) * 2 > t->cap)
        grow(t);
    pg_route_slot *s = &t->slots[probe(t, hash)];
    if (!s->n) {
        *s = (pg_route_slot){.hash = hash, .conn = conn};
        t->used++;
    }
    s->n++;
    s->unsent++;
}

void pg_routes_mark(pg_routes *t, uint32_t hash, bool sent)
{
    pg_route_slot *s = pg_routes_find(t, hash);
    if (s)
        s->unsent += sent ? -1 : 1;
}

void pg_routes_release(pg_routes *t, uint32_t hash, bool unsent)
{
    uint32_t mask = t->cap - 1, i = probe(t, hash);
    if (!t->slots[i].n)
        return;
    if (unsent)
        t->slots[i].unsent--;
    if (--t->slots[i].n > 0)
        return;
    t->used--;
    /* Backward-shift deletion: later slots of the same probe run move up, so that every
     * entry stays reachable from its home slot without tombstones. */
    for (uint32_t j = i;;) {
        j = (j + 1) & mask;
        if (!t->slots[j].n)
            break;
        uint32_t home = t->slots[j].hash & mask;
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        t->slots[i] = t->slots[j];
        i = j;
    }
    t->slots[i].n = 0;
}

int pg_spread_tick(pg_spread *s, double mean_wait_ms, int max)
{
    if (s->hold_len == 0) { /* zero-initialised */
        s->hold_len = PG_SPREAD_HOLD_TICKS;
        s->since_shrink = PG_SPREAD_MISTAKE_TICKS;
    }
    if (max < 1)
        max = 1;
    if (s->active < 1)
        s->active = 1;
    if (s->active > max)
        s->active = max;
    if (s->hold > 0)
        s->hold--;
    /* a shrink that held for PG_SPREAD_MISTAKE_TICKS halves a hold that mistakes doubled */
    if (s->since_shrink < PG_SPREAD_MISTAKE_TICKS && ++s->since_shrink == PG_SPREAD_MISTAKE_TICKS &&
        s->hold_len > PG_SPREAD_HOLD_TICKS)
        s->hold_len /= 2;
    if (mean_wait_ms > PG_SPREAD_GROW_MS) {
        s->calm_sum = 0;
        s->calm_n = 0;
        if (++s->busy >= PG_SPREAD_GROW_TICKS && s->active < max) {
            if (s->since_shrink < PG_SPREAD_MISTAKE_TICKS && s->hold_len < PG_SPREAD_HOLD_MAX_TICKS)
                s->hold_len *= 2;
            s->active++;
            s->busy = 0;
            s->hold = s->hold_len;
            s->since_shrink = PG_SPREAD_MISTAKE_TICKS;
        }
        return s->active;
    }
    s->busy = 0;
    s->calm_sum += mean_wait_ms > 0 ? mean_wait_ms : 0;
    if (++s->calm_n < PG_SPREAD_CALM_TICKS)
        return s->active;
    if (s->hold == 0 && s->active > 1 && s->calm_sum / s->calm_n < PG_SPREAD_SHRINK_MS) {
        s->active--;
        s->hold = s->hold_len;
        s->since_shrink = 0;
    }
    s->calm_sum = 0;
    s->calm_n = 0;
    return s->active;
}
