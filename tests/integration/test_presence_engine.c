/* presence/presence_redis.c on a libuv loop against real Redis: two "nodes"
 * (two redis_clients, two engines) receive every keyspace notification; an
 * identity's offline and each timer firing must be reported exactly once in
 * total; the reconciler catches expiries nobody was listening to.
 * Needs CHATD_TEST_REDIS_URL (skipped if unset). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "presence/presence.h"
#include "presence/presence_redis.h"
#include "store/keys.h"
#include "store/redis.h"

static const char *test_url;
static uv_loop_t loop;
static char org[64];

typedef struct node {
    redis_client *r;
    pres_engine *pe;
    bool route; /* false: this node "is down" for notifications */
    int offline, timers;
    char last_id[64], last_kind[16], last_chat[64];
} node;
static node nodes[2];

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static void run_ms(int ms)
{
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    uv_update_time(&loop);
    uint64_t end = uv_now(&loop) + (uint64_t)ms;
    while (uv_now(&loop) < end)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static int total_offline(void)
{
    return nodes[0].offline + nodes[1].offline;
}

static int total_timers(void)
{
    return nodes[0].timers + nodes[1].timers;
}

static void on_offline(void *ctx, const char *o, const char *type, const char *id)
{
    node *n = ctx;
    if (strcmp(o, org) != 0)
        return; /* other runs sharing the server */
    assert_string_equal(type, "agent");
    n->offline++;
    snprintf(n->last_id, sizeof(n->last_id), "%s", id);
}

static void on_timer(void *ctx, const char *o, const char *kind, const char *chat, long long dl)
{
    node *n = ctx;
    if (strcmp(o, org) != 0)
        return;
    n->timers++;
    snprintf(n->last_kind, sizeof(n->last_kind), "%s", kind);
    snprintf(n->last_chat, sizeof(n->last_chat), "%s", chat);
}

static void on_message(void *ctx, const char *pattern, const char *channel, size_t chlen,
                       const char *data, size_t len)
{
    node *n = ctx;
    if (n->route && chlen > 10 && memcmp(channel, "__keyevent", 10) == 0)
        pres_engine_on_expired(n->pe, data, len);
}

/* Runs one script through node 0's async client and waits for it. */
typedef struct done_flag {
    bool done;
    bool ok;
} done_flag;

static void on_done(void *ctx, redisReply *reply, const char *err)
{
    done_flag *d = ctx;
    d->done = true;
    d->ok = reply && reply->type != REDIS_REPLY_ERROR;
}

static void eval_wait(const rk_argv *a)
{
    done_flag d = {0};
    redis_eval(nodes[0].r, a, on_done, &d);
    for (int i = 0; i < 400 && !d.done; i++)
        run_ms(5);
    assert_true(d.done);
    assert_true(d.ok);
}

static void add_socket(const char *sid, const char *agent, long long ttl)
{
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    assert_int_equal(pres_build_add(&a, org, sid, "agent", agent, ttl, "n", 3), RK_OK);
    eval_wait(&a);
    rk_argv_free(&a);
}

static void arm(const char *chat, long long warn, long long close)
{
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    pres_timer_spec t[2] = {{"warn", warn}, {"close", close}};
    assert_int_equal(pres_timer_build_arm(&a, org, chat, t, 2), RK_OK);
    eval_wait(&a);
    rk_argv_free(&a);
}

static void wait_for(int (*count)(void), int want, int ms)
{
    for (int i = 0; i < ms / 10 && count() < want; i++)
        run_ms(10);
}

static int setup(void **state)
{
    static int run;
    uv_loop_init(&loop);
    snprintf(org, sizeof(org), "t%d-engine-%d", (int)getpid(), run++);
    for (int i = 0; i < 2; i++) {
        node *n = &nodes[i];
        memset(n, 0, sizeof(*n));
        n->route = true;
        redis_options o;
        redis_options_init(&o, NULL);
        o.url = test_url;
        o.on_message = on_message;
        o.message_ctx = n;
        o.backoff_min_ms = 20;
        n->r = redis_new(&loop, &o);
        assert_non_null(n->r);
        redis_subscribe_expired(n->r);
        redis_start(n->r);
        pres_engine_cbs cbs = {.on_offline = on_offline, .on_timer = on_timer, .ctx = n};
        n->pe = pres_engine_new(&loop, n->r, &cbs, 0, 0);
    }
    for (int i = 0; i < 300 && !(redis_is_ready(nodes[0].r) && redis_sub_is_ready(nodes[0].r) &&
                                 redis_is_ready(nodes[1].r) && redis_sub_is_ready(nodes[1].r));
         i++)
        run_ms(10);
    assert_true(redis_sub_is_ready(nodes[1].r));
    for (int i = 0; i < 2; i++)
        pres_engine_track_org(nodes[i].pe, org);
    run_ms(50);
    return 0;
}

static int teardown(void **state)
{
    for (int i = 0; i < 2; i++) {
        pres_engine_free(nodes[i].pe);
        redis_free(nodes[i].r);
    }
    run_ms(30);
    return uv_loop_close(&loop) == 0 ? 0 : -1;
}

static void test_offline_once_across_nodes(void **state)
{
    add_socket("s1", "ann", 150);
    add_socket("s2", "ann", 60000);
    add_socket("s3", "bob", 100);
    wait_for(total_offline, 1, 3000);
    run_ms(300); /* s1 expired too, but ann still has s2 */
    assert_int_equal(total_offline(), 1);
    node *who = nodes[0].offline ? &nodes[0] : &nodes[1];
    assert_string_equal(who->last_id, "bob");
}

static void test_timer_once_across_nodes(void **state)
{
    arm("c1", 80, 200);
    wait_for(total_timers, 2, 3000);
    run_ms(200);
    assert_int_equal(total_timers(), 2); /* warn once, close once */
    node *who = nodes[0].timers ? &nodes[0] : &nodes[1];
    assert_string_equal(who->last_chat, "c1");
}

static void test_reconciler_catches_missed(void **state)
{
    nodes[0].route = nodes[1].route = false; /* every node down for notifications */
    add_socket("s9", "carl", 50);
    arm("c7", 50, 100000);
    run_ms(300);
    assert_int_equal(total_offline(), 0);
    assert_int_equal(total_timers(), 0);
    nodes[0].route = nodes[1].route = true;

    unsigned long p0 = pres_engine_passes(nodes[0].pe);
    pres_engine_reconcile_now(nodes[0].pe);
    pres_engine_reconcile_now(nodes[1].pe); /* racing node */
    for (int i = 0; i < 300 && pres_engine_passes(nodes[0].pe) == p0; i++)
        run_ms(10);
    run_ms(200);
    assert_true(pres_engine_passes(nodes[0].pe) > p0);
    assert_int_equal(total_offline(), 1);
    assert_int_equal(total_timers(), 1);
    node *who = nodes[0].timers ? &nodes[0] : &nodes[1];
    assert_string_equal(who->last_kind, "warn");
    assert_string_equal(who->last_chat, "c7");

    /* nothing left for the next pass */
    pres_engine_reconcile_now(nodes[1].pe);
    run_ms(300);
    assert_int_equal(total_offline(), 1);
    assert_int_equal(total_timers(), 1);
}

static void test_free_with_pending(void **state)
{
    /* events in flight when the engine goes away: no callback, no leak */
    pres_engine_on_expired(nodes[0].pe, "chat:{x}:sock:zz", 16);
    pres_engine_on_expired(nodes[0].pe, "chat:{x}:timer:warn:c", 21);
    assert_false(pres_engine_on_expired(nodes[0].pe, "unrelated", 9));
    pres_engine_reconcile_now(nodes[0].pe);
    pres_engine_free(nodes[0].pe);
    nodes[0].pe = NULL;
    run_ms(100);
}

int main(void)
{
    test_url = getenv("CHATD_TEST_REDIS_URL");
    if (!test_url || !*test_url) {
        printf("SKIP test_presence_engine: CHATD_TEST_REDIS_URL is not set\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_offline_once_across_nodes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_once_across_nodes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconciler_catches_missed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_pending, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
