/* Queue benchmark (not a timed test): pick-next and enqueue throughput and
 * latency percentiles with 10,000 waiting chats and 50 skills.
 *
 *   CHATD_TEST_REDIS_URL=redis://127.0.0.1:PORT CHATD_QUEUE_BENCH=1 \
 *       build/tests/integration/test_queue_bench
 *
 * Without CHATD_QUEUE_BENCH the same code runs on 300 chats as a smoke test
 * (so the program stays compiled and working) and prints its numbers too.
 * Knobs: CHATD_BENCH_CHATS (10000), CHATD_BENCH_SKILLS (50),
 * CHATD_BENCH_AGENTS (50 online agents), CHATD_BENCH_OPS (5000 timed picks),
 * CHATD_BENCH_CONNS (8 connections for the concurrent phase).
 *
 * Phases, each op one EVALSHA round trip on the hiredis sync API:
 *   1. enqueue N chats (0-2 required skills of S, priority 0-9) - timed;
 *   2. enqueue OPS more (N+ waiting) - timed;
 *   3. OPS pick-next by agents with 10 random skills (queue N+OPS -> N) - timed;
 *   4. pick + release + re-enqueue on C connections in parallel: throughput.
 * Client-side latency includes the round trip and this machine's scheduling;
 * "server side" lines are the scripts' own run times as Redis measures them
 * (INFO commandstats / latencystats after CONFIG RESETSTAT).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "presence/presence.h"
#include "queue/queue.h"
#include "store/keys.h"

static char host[128] = "127.0.0.1";
static int port = 6379, dbn = 0;
static char shas[RK_SCRIPT__COUNT][41];
static char org[64];
static int n_chats, n_skills, n_agents, n_ops, n_conns;

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static redisContext *conn(void)
{
    redisContext *c = redisConnect(host, port);
    if (!c || c->err) {
        fprintf(stderr, "cannot connect to %s:%d\n", host, port);
        exit(1);
    }
    if (dbn)
        freeReplyObject(redisCommand(c, "SELECT %d", dbn));
    return c;
}

static redisReply *ev(redisContext *c, const rk_argv *a)
{
    const char *argv[RK_ARGV_MAX + 3];
    size_t argvlen[RK_ARGV_MAX + 3];
    char num[24];
    int argc = rk_argv_resolve(a, shas[a->script], num, argv, argvlen, RK_ARGV_MAX + 3);
    redisReply *r = argc > 0 ? redisCommandArgv(c, argc, argv, argvlen) : NULL;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "script %s failed: %s\n", rk_script_name(a->script),
                r ? r->str : "no reply");
        exit(1);
    }
    return r;
}

static void random_skills(unsigned *seed, int max_n, buf_t *out)
{
    int n = (int)(rand_r(seed) % (unsigned)(max_n + 1));
    const char *sk[16];
    char names[16][16];
    for (int i = 0; i < n && i < 16; i++) {
        snprintf(names[i], sizeof(names[i]), "s%02d", (int)(rand_r(seed) % (unsigned)n_skills));
        sk[i] = names[i];
    }
    buf_reset(out);
    rk_skills_csv(out, sk, (size_t)n);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *lat, int n, double total_us)
{
    qsort(lat, (size_t)n, sizeof(double), cmp_d);
    printf("%-34s %7d ops  %9.0f ops/s  p50 %6.0f us  p99 %6.0f us  max %6.0f us\n", what, n,
           n / (total_us / 1e6), lat[n / 2], lat[(int)(n * 0.99)], lat[n - 1]);
}

/* Server-side cost of the scripts, from Redis' own per-command statistics
 * (INFO commandstats: mean; INFO latencystats, Redis 7: p50/p99), reset with
 * CONFIG RESETSTAT before each single-connection phase. Each such phase runs
 * one script only, so cmdstat_evalsha is that script. Not disturbed by this
 * machine's scheduling of the client. */
static void stats_reset(redisContext *c)
{
    freeReplyObject(redisCommand(c, "CONFIG RESETSTAT"));
}

static void report_server(redisContext *c, const char *label)
{
    double mean = -1, p50 = -1, p99 = -1;
    long long calls = 0;
    redisReply *r = redisCommand(c, "INFO commandstats");
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *p = strstr(r->str, "cmdstat_evalsha:");
        if (p) {
            const char *q = strstr(p, "calls=");
            calls = q ? atoll(q + 6) : 0;
            q = strstr(p, "usec_per_call=");
            mean = q ? atof(q + 14) : -1;
        }
    }
    freeReplyObject(r);
    r = redisCommand(c, "INFO latencystats");
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *p = strstr(r->str, "latency_percentiles_usec_evalsha:");
        if (p) {
            const char *q = strstr(p, "p50=");
            p50 = q ? atof(q + 4) : -1;
            q = strstr(p, "p99=");
            p99 = q ? atof(q + 4) : -1;
        }
    }
    freeReplyObject(r);
    if (mean < 0)
        return;
    printf("  server side %-10s %6lld calls  mean %6.1f us  p50 %6.0f us  p99 %6.0f us  "
           "(=> %.0f ops/s on one Redis core)\n",
           label, calls, mean, p50, p99, 1e6 / mean);
}

static long chat_seq;

static void enqueue_one(redisContext *c, rk_argv *a, unsigned *seed, buf_t *sk, double *lat)
{
    char id[32];
    snprintf(id, sizeof(id), "b%ld", __atomic_fetch_add(&chat_seq, 1, __ATOMIC_RELAXED));
    random_skills(seed, 2, sk);
    q_build_enqueue(a, org, id, (int)(rand_r(seed) % 10), sk->data ? sk->data : "", 0,
                    "preview text of the first message", 300);
    double t0 = now_us();
    redisReply *r = ev(c, a);
    if (lat)
        *lat = now_us() - t0;
    freeReplyObject(r);
}

/* One timed pick by a random agent, then untimed release + replacement. */
static bool pick_replace(redisContext *c, rk_argv *a, unsigned *seed, buf_t *sk, double *lat)
{
    char agent[16];
    snprintf(agent, sizeof(agent), "ag%d", (int)(rand_r(seed) % (unsigned)n_agents));
    random_skills(seed, 10, sk);
    q_build_pick(a, org, agent, 1000000, sk->data ? sk->data : "");
    double t0 = now_us();
    redisReply *r = ev(c, a);
    *lat = now_us() - t0;
    q_pick_result p;
    bool ok = q_decode_pick(r, &p) == RK_OK && p.kind == Q_PICK_OK;
    freeReplyObject(r);
    if (ok) {
        const char *kinds[] = {"warn", "close"};
        q_build_release(a, org, p.chat_id, true, 300, kinds, 2);
        freeReplyObject(ev(c, a));
        enqueue_one(c, a, seed, sk, NULL);
    }
    q_pick_result_free(&p);
    return ok;
}

typedef struct worker {
    int ops;
    unsigned seed;
    double *lat;
    int hits;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    redisContext *c = conn();
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    buf_t sk;
    buf_init(&sk);
    for (int i = 0; i < w->ops; i++)
        w->hits += pick_replace(c, &a, &w->seed, &sk, &w->lat[i]);
    buf_free(&sk);
    rk_argv_free(&a);
    redisFree(c);
    return NULL;
}

static void test_bench(void **state)
{
    redisContext *c = conn();
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
    snprintf(org, sizeof(org), "bench%d", (int)getpid());
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    buf_t sk;
    buf_init(&sk);
    unsigned seed = 12345;

    /* agents online (they count for the ETA computed by enqueue) */
    for (int i = 0; i < n_agents; i++) {
        char ag[16], sid[16];
        snprintf(ag, sizeof(ag), "ag%d", i);
        snprintf(sid, sizeof(sid), "s%d", i);
        pres_build_add(&a, org, sid, "agent", ag, 600000, "bench", 1000000);
        freeReplyObject(ev(c, &a));
    }

    size_t nl = (size_t)(n_chats > n_ops ? n_chats : n_ops);
    double *lat = calloc(nl, sizeof(double));
    char label[96];

    /* 1. fill the queue */
    stats_reset(c);
    double t0 = now_us();
    for (int i = 0; i < n_chats; i++)
        enqueue_one(c, &a, &seed, &sk, &lat[i]);
    snprintf(label, sizeof(label), "enqueue (0 -> %d waiting)", n_chats);
    report(label, lat, n_chats, now_us() - t0);
    report_server(c, "enqueue");

    buf_t k;
    buf_init(&k);
    rk_key(&k, org, "qsigs");
    redisReply *r = redisCommand(c, "SCARD %s", k.data);
    printf("distinct required-skill sets in the queue: %lld\n", r->integer);
    freeReplyObject(r);

    /* 2. enqueue with N already waiting */
    stats_reset(c);
    t0 = now_us();
    for (int i = 0; i < n_ops; i++)
        enqueue_one(c, &a, &seed, &sk, &lat[i]);
    snprintf(label, sizeof(label), "enqueue (%d+ waiting)", n_chats);
    report(label, lat, n_ops, now_us() - t0);
    report_server(c, "enqueue");

    /* 3. pick-next while N..N+ops wait (agents without a capacity limit) */
    int hits = 0;
    stats_reset(c);
    t0 = now_us();
    for (int i = 0; i < n_ops; i++) {
        char agent[16];
        snprintf(agent, sizeof(agent), "ag%d", (int)(rand_r(&seed) % (unsigned)n_agents));
        random_skills(&seed, 10, &sk);
        q_build_pick(&a, org, agent, 1000000, sk.data ? sk.data : "");
        double t1 = now_us();
        r = ev(c, &a);
        lat[i] = now_us() - t1;
        q_pick_result p;
        if (q_decode_pick(r, &p) == RK_OK && p.kind == Q_PICK_OK)
            hits++;
        q_pick_result_free(&p);
        freeReplyObject(r);
    }
    snprintf(label, sizeof(label), "pick-next (%d+ waiting)", n_chats);
    report(label, lat, n_ops, now_us() - t0);
    report_server(c, "pick-next");
    printf("  (%d of %d picks found a chat for the agent's 10 random skills)\n", hits, n_ops);

    /* concurrent */
    worker *w = calloc((size_t)n_conns, sizeof(*w));
    pthread_t *th = calloc((size_t)n_conns, sizeof(*th));
    if (n_conns < 1)
        n_conns = 1;
    size_t per = n_ops / n_conns > 0 ? (size_t)(n_ops / n_conns) : 1;
    size_t nall = per * (size_t)n_conns;
    t0 = now_us();
    for (int i = 0; i < n_conns; i++) {
        w[i].ops = (int)per;
        w[i].seed = 1000u + (unsigned)i;
        w[i].lat = calloc(per, sizeof(double));
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    for (int i = 0; i < n_conns; i++)
        pthread_join(th[i], NULL);
    double total = now_us() - t0;
    double *all = calloc(nall, sizeof(double));
    for (int i = 0; i < n_conns; i++) {
        memcpy(all + (size_t)i * per, w[i].lat, per * sizeof(double));
        free(w[i].lat);
    }
    /* each iteration = pick + release + enqueue: 3 script calls */
    qsort(all, nall, sizeof(double), cmp_d);
    printf("pick-next under load (%d conns)      %7zu picks  %9.0f picks/s (+ as many release and "
           "enqueue)  p50 %6.0f us  p99 %6.0f us\n",
           n_conns, nall, (double)nall / (total / 1e6), all[nall / 2],
           all[(size_t)((double)nall * 0.99)]);
    free(all);
    free(w);
    free(th);


    /* clean up */
    char pat[96];
    snprintf(pat, sizeof(pat), "chat:{%s}:*", org);
    freeReplyObject(redisCommand(c,
                                 "EVAL %s 0 %s",
                                 "for _,k in ipairs(redis.call('KEYS', ARGV[1])) do "
                                 "redis.call('DEL', k) end return 1",
                                 pat));
    buf_free(&k);
    free(lat);
    buf_free(&sk);
    rk_argv_free(&a);
    redisFree(c);
}

int main(void)
{
    const char *url = getenv("CHATD_TEST_REDIS_URL");
    if (!url || !*url) {
        printf("SKIP test_queue_bench: CHATD_TEST_REDIS_URL is not set\n");
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
    bool full = getenv("CHATD_QUEUE_BENCH") && atoi(getenv("CHATD_QUEUE_BENCH")) > 0;
    n_chats = env_int("CHATD_BENCH_CHATS", full ? 10000 : 300);
    n_skills = env_int("CHATD_BENCH_SKILLS", 50);
    n_agents = env_int("CHATD_BENCH_AGENTS", full ? 50 : 10);
    n_ops = env_int("CHATD_BENCH_OPS", full ? 5000 : 200);
    n_conns = env_int("CHATD_BENCH_CONNS", full ? 8 : 2);
    printf("queue bench: %d waiting chats, %d skills, %d agents online, %d ops%s\n", n_chats,
           n_skills, n_agents, n_ops, full ? "" : " (smoke size; CHATD_QUEUE_BENCH=1 for full)");
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_bench)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
