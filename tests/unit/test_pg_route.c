/* Unit tests for store/pg_route.c: outstanding routing keys and their unsent queries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store/pg_route.h"

static void test_hold_mark_release(void **state)
{
    (void)state;
    pg_routes t;
    pg_routes_init(&t);
    assert_null(pg_routes_find(&t, 7));
    pg_routes_hold(&t, 7, 2);
    pg_routes_hold(&t, 7, 2);
    pg_route_slot *s = pg_routes_find(&t, 7);
    assert_non_null(s);
    assert_int_equal(s->conn, 2);
    assert_int_equal(s->n, 2);
    assert_int_equal(s->unsent, 2);
    pg_routes_mark(&t, 7, true); /* the first one leaves */
    assert_int_equal(pg_routes_find(&t, 7)->unsent, 1);
    pg_routes_mark(&t, 7, false); /* ...and is queued again (a retry) */
    assert_int_equal(pg_routes_find(&t, 7)->unsent, 2);
    pg_routes_mark(&t, 7, true);
    pg_routes_release(&t, 7, false); /* the sent one is answered */
    s = pg_routes_find(&t, 7);
    assert_int_equal(s->n, 1);
    assert_int_equal(s->unsent, 1);
    s->conn = 0; /* moved with its waiting query */
    pg_routes_release(&t, 7, true); /* cancelled before it left */
    assert_null(pg_routes_find(&t, 7));
    pg_routes_release(&t, 7, true); /* unknown: no-op */
    pg_routes_mark(&t, 7, true);    /* unknown: no-op */
    assert_int_equal(t.used, 0);
    pg_routes_hold(&t, 7, 3); /* a new life starts where it is put */
    assert_int_equal(pg_routes_find(&t, 7)->conn, 3);
    pg_routes_free(&t);
}

/* Keys that share a home slot (those of slot 63 wrap around the end of the first table) stay
 * reachable, with their counts, after any of them is released: the model is a plain array. */
static void test_collisions_and_growth(void **state)
{
    (void)state;
    enum { N = 3000 };
    static int model_n[N], model_unsent[N], model_conn[N];
    memset(model_n, 0, sizeof model_n);
    memset(model_unsent, 0, sizeof model_unsent);
    pg_routes t;
    pg_routes_init(&t);
    uint32_t seed = 12345;
#define KEY(k) ((uint32_t)((k) % 64) | ((uint32_t)((k) / 64) << 20))
    for (int step = 0; step < 200000; step++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 8) % N);
        uint32_t hash = KEY(k); /* keys k and k + 64*m share low bits: many share home slots */
        int op = (int)((seed >> 4) & 3);
        if (op == 0 || model_n[k] == 0) {
            if (model_n[k] == 0)
                model_conn[k] = k % 4;
            pg_routes_hold(&t, hash, model_conn[k]);
            model_n[k]++;
            model_unsent[k]++;
        } else if (op == 1 && model_unsent[k] > 0) {
            pg_routes_mark(&t, hash, true);
            model_unsent[k]--;
        } else {
            bool unsent = model_unsent[k] == model_n[k];
            pg_routes_release(&t, hash, unsent);
            model_n[k]--;
            model_unsent[k] -= unsent;
        }
        if (step % 997 == 0)
            for (int i = 0; i < N; i++) {
                const pg_route_slot *s = pg_routes_find(&t, KEY(i));
                if (!model_n[i]) {
                    assert_null(s);
                    continue;
                }
                assert_non_null(s);
                assert_int_equal(s->n, model_n[i]);
                assert_int_equal(s->unsent, model_unsent[i]);
                assert_int_equal(s->conn, model_conn[i]);
            }
    }
    uint32_t live = 0;
    for (int i = 0; i < N; i++)
        live += model_n[i] > 0;
    assert_int_equal(t.used, live);
    pg_routes_free(&t);
}

/* Feeds `n` ticks of the same wait; returns the spread after them. */
static int ticks(pg_spread *s, int n, double wait_ms, int max)
{
    int a = s->active;
    for (int i = 0; i < n; i++)
        a = pg_spread_tick(s, wait_ms, max);
    return a;
}

static void test_spread_grows_on_sustained_waits(void **state)
{
    (void)state;
    pg_spread s = {0};
    assert_int_equal(pg_spread_tick(&s, -1, 4), 1); /* idle: one connection */
    /* one or two slow ticks are not a trend */
    assert_int_equal(ticks(&s, PG_SPREAD_GROW_TICKS - 1, 50, 4), 1);
    assert_int_equal(pg_spread_tick(&s, 0.5, 4), 1);
    assert_int_equal(ticks(&s, PG_SPREAD_GROW_TICKS - 1, 50, 4), 1);
    /* GROW_TICKS in a row grow it by one, and so on up to the pool */
    assert_int_equal(pg_spread_tick(&s, PG_SPREAD_GROW_MS + 0.1, 4), 2);
    assert_int_equal(ticks(&s, PG_SPREAD_GROW_TICKS, 9, 4), 3);
    assert_int_equal(ticks(&s, PG_SPREAD_GROW_TICKS, 9, 4), 4);
    assert_int_equal(ticks(&s, 10 * PG_SPREAD_GROW_TICKS, 9, 4), 4);
    /* a pool of one never grows */
    pg_spread one = {0};
    assert_int_equal(ticks(&one, 100, 50, 1), 1);
    /* a pool that shrank clamps the spread */
    assert_int_equal(pg_spread_tick(&s, 1.5, 2), 2);
}

static void test_spread_shrinks_when_calm(void **state)
{
    (void)state;
    pg_spread s = {0};
    assert_int_equal(ticks(&s, 3 * PG_SPREAD_GROW_TICKS, 9, 4), 4);
    /* calm windows shrink it, but not within the hold after the last change */
    int n = 0;
    while (pg_spread_tick(&s, 0.2, 4) == 4)
        n++;
    assert_true(n + 1 >= PG_SPREAD_HOLD_TICKS);
    assert_true(n + 1 <= PG_SPREAD_HOLD_TICKS + PG_SPREAD_CALM_TICKS);
    assert_int_equal(s.active, 3);
    /* the mean of a window counts: single ticks above SHRINK_MS do not stop it */
    for (int i = 0; i < PG_SPREAD_HOLD_TICKS + PG_SPREAD_CALM_TICKS; i++)
        pg_spread_tick(&s, i % 5 == 0 ? 1.5 : 0.3, 4);
    assert_int_equal(s.active, 2);
    /* a window with a mean above SHRINK_MS keeps it */
    assert_int_equal(ticks(&s, 10 * PG_SPREAD_HOLD_TICKS, PG_SPREAD_SHRINK_MS + 0.2, 4), 2);
    /* no appends at all counts as calm */
    assert_int_equal(ticks(&s, 10 * PG_SPREAD_HOLD_TICKS, -1, 4), 1);
}

static void test_spread_backs_off_after_mistakes(void **state)
{
    (void)state;
    pg_spread s = {0};
    assert_int_equal(ticks(&s, PG_SPREAD_GROW_TICKS, 9, 4), 2);
    /* shrinking to one and growing right back (the edge of one connection): the next shrink
     * waits twice as long each time */
    int prev = 0;
    for (int round = 0; round < 3; round++) {
        int n = 0;
        while (pg_spread_tick(&s, 0.2, 4) == 2)
            n++;
        assert_int_equal(s.active, 1);
        if (round > 0)
            assert_true(n > prev + PG_SPREAD_HOLD_TICKS / 2);
        prev = n;
        assert_int_equal(ticks(&s, PG_SPREAD_GROW_TICKS, 9, 4), 2); /* undone at once */
    }
    assert_true(s.hold_len >= 8 * PG_SPREAD_HOLD_TICKS);
    /* a shrink that holds brings the hold back down */
    int len = s.hold_len;
    ticks(&s, len + PG_SPREAD_CALM_TICKS, 0.2, 4);
    assert_int_equal(s.active, 1);
    ticks(&s, PG_SPREAD_MISTAKE_TICKS, 0.2, 4);
    assert_int_equal(s.hold_len, len / 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hold_mark_release),
        cmocka_unit_test(test_collisions_and_growth),
        cmocka_unit_test(test_spread_grows_on_sustained_waits),
        cmocka_unit_test(test_spread_shrinks_when_calm),
        cmocka_unit_test(test_spread_backs_off_after_mistakes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
