/* Presence and timer footprint (not a timed test): Redis memory and keys for
 * N sockets (default 10,000: agents with 2 tabs, customers with 1) and the
 * inactivity timers of N/2 chats, plus presence add / heartbeat / timer arm
 * rates on one connection.
 *
 *   CHATD_TEST_REDIS_URL=redis://127.0.0.1:PORT CHATD_PRESENCE_BENCH=1 \
 *       build/tests/integration/test_presence_bench
 *
 * Without CHATD_PRESENCE_BENCH it runs with 500 sockets as a smoke test.
 * Memory is the sum of MEMORY USAGE over the run's keys (exact per key, not
 * disturbed by other clients of the same Redis). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "presence/presence.h"
#include "store/keys.h"

static char host[128] = "127.0.0.1";
static int port = 6379, dbn = 0;
static char shas[RK_SCRIPT__COUNT][41];
static char org[64];
static int n_sockets;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static redisReply *ev(redisContext *c, const rk_argv *a)
{
    const char *argv[RK_ARGV_MAX + 3];
    size_t argvlen[RK_ARGV_MAX + 3];
    char num[24];
    int argc = rk_argv_resolve(a, shas[a->script], num, argv, argvlen, RK_ARGV_MAX + 3);
    redisReply *r = argc > 0 ? redisCommandArgv(c, argc, argv, argvlen) : NULL;
    if (!r || r->type == REDIS_REPLY_ERROR)
        fail_msg("script %s failed: %s", rk_script_name(a->script), r ? r->str : "no reply");
    return r;
}

/* Sum of MEMORY USAGE and count of the keys matching the run's org. */
static void footprint(redisContext *c, long long *bytes, long long *keys)
{
    char pat[96];
    snprintf(pat, sizeof(pat), "chat:{%s}:*", org);
    *bytes = *keys = 0;
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pat);
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        redisReply *ks = r->element[1];
        for (size_t i = 0; i < ks->elements; i++) {
            redisReply *m = redisCommand(c, "MEMORY USAGE %b SAMPLES 0", ks->element[i]->str,
                                         ks->element[i]->len);
            if (m->type == REDIS_REPLY_INTEGER) {
                *bytes += m->integer;
                (*keys)++;
            }
            freeReplyObject(m);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
}

static void test_footprint(void **state)
{
    redisContext *c = redisConnect(host, port);
    assert_true(c && !c->err);
    if (dbn)
        freeReplyObject(redisCommand(c, "SELECT %d", dbn));
    for (int i = 0; i < RK_SCRIPT__COUNT; i++) {
        buf_t src;
        buf_init(&src);
        assert_int_equal(rk_script_source(rk_lua_dir(), i, &src), 0);
        redisReply *r = redisCommand(c, "SCRIPT LOAD %b", src.data, src.len);
        assert_int_equal(r->type, REDIS_REPLY_STRING);
        memcpy(shas[i], r->str, 40);
        freeReplyObject(r);
        buf_free(&src);
    }
    snprintf(org, sizeof(org), "pbench%d", (int)getpid());
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);

    /* half the sockets: agents with two tabs; the other half: customers */
    int n_agent_socks = n_sockets / 2, n_cust = n_sockets - n_agent_socks;
    double t0 = now_us();
    for (int i = 0; i < n_agent_socks; i++) {
        char sid[32], id[32];
        snprintf(sid, sizeof(sid), "sA%07d-0123456789ab", i);
        snprintf(id, sizeof(id), "agent-%06d", i / 2);
        assert_int_equal(pres_build_add(&a, org, sid, "agent", id, 60000, "node-1:8080", 3),
                         RK_OK);
        freeReplyObject(ev(c, &a));
    }
    for (int i = 0; i < n_cust; i++) {
        char sid[32], id[48];
        snprintf(sid, sizeof(sid), "sC%07d-0123456789ab", i);
        snprintf(id, sizeof(id), "customer%06d@example.com", i);
        assert_int_equal(pres_build_add(&a, org, sid, "customer", id, 60000, "node-1:8080", -1),
                         RK_OK);
        freeReplyObject(ev(c, &a));
    }
    double add_s = (now_us() - t0) / 1e6;
    long long pbytes, pkeys;
    footprint(c, &pbytes, &pkeys);
    printf("presence: %d sockets (%d agents x2 tabs, %d customers): %lld keys, %lld bytes "
           "(%.0f bytes and %.2f keys per socket); add %.0f ops/s\n",
           n_sockets, n_agent_socks / 2, n_cust, pkeys, pbytes, (double)pbytes / n_sockets,
           (double)pkeys / n_sockets, n_sockets / add_s);

    t0 = now_us();
    for (int i = 0; i < n_cust; i++) {
        char sid[32];
        snprintf(sid, sizeof(sid), "sC%07d-0123456789ab", i);
        assert_int_equal(pres_build_heartbeat(&a, org, sid, 60000), RK_OK);
        freeReplyObject(ev(c, &a));
    }
    printf("heartbeat: %.0f ops/s\n", n_cust / ((now_us() - t0) / 1e6));

    int n_chats = n_sockets / 2;
    t0 = now_us();
    for (int i = 0; i < n_chats; i++) {
        char chat[48];
        snprintf(chat, sizeof(chat), "6f1c2d3e-0000-4000-8000-%012d", i);
        pres_timer_spec t[2] = {{"warn", 240000}, {"close", 1800000}};
        assert_int_equal(pres_timer_build_arm(&a, org, chat, t, 2), RK_OK);
        freeReplyObject(ev(c, &a));
    }
    double arm_s = (now_us() - t0) / 1e6;
    long long tbytes, tkeys;
    footprint(c, &tbytes, &tkeys);
    printf("timers: %d chats (warn+close): +%lld keys, +%lld bytes (%.0f bytes per chat); arm "
           "%.0f ops/s\n",
           n_chats, tkeys - pkeys, tbytes - pbytes, (double)(tbytes - pbytes) / n_chats,
           n_chats / arm_s);

    char pat[96];
    snprintf(pat, sizeof(pat), "chat:{%s}:*", org);
    freeReplyObject(redisCommand(c, "EVAL %s 0 %s",
                                 "for _,k in ipairs(redis.call('KEYS', ARGV[1])) do "
                                 "redis.call('DEL', k) end return 1",
                                 pat));
    rk_argv_free(&a);
    redisFree(c);
}

int main(void)
{
    const char *url = getenv("CHATD_TEST_REDIS_URL");
    if (!url || !*url) {
        printf("SKIP test_presence_bench: CHATD_TEST_REDIS_URL is not set\n");
        return 0;
    }
    const char *p = url;
    if (strncmp(p, "redis://", 8) == 0)
        p += 8;
    const char *colon = strchr(p, ':');
    const char *slash = strchr(p, '/');
    size_t hl = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
    if (hl && hl < sizeof(host)) {
        memcpy(host, p, hl);
        host[hl] = '\0';
    }
    if (colon)
        port = atoi(colon + 1);
    if (slash)
        dbn = atoi(slash + 1);
    const char *full = getenv("CHATD_PRESENCE_BENCH");
    n_sockets = full && atoi(full) > 0 ? 10000 : 500;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_footprint)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
