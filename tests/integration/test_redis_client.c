/* store/redis.c — the async client on a libuv loop, against real Redis
 * servers: the harness's (CHATD_TEST_REDIS_URL, test skipped if unset) for
 * commands, scripts, NOSCRIPT, pub/sub and keyspace events; and a private
 * redis-server this test starts on a free port (and stops by PID) for
 * restart, command timeout and "Redis down" behaviour. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/xalloc.h"
#include "presence/presence.h"
#include "queue/queue.h"
#include "store/keys.h"
#include "store/redis.h"

static const char *test_url;
static uv_loop_t loop;
static char org[64];

/* ---- loop helpers ---- */

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until *flag or timeout; returns *flag. */
static bool run_until(const volatile bool *flag, int timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    uv_update_time(&loop);
    uint64_t end = uv_now(&loop) + (uint64_t)timeout_ms;
    while (!*flag && uv_now(&loop) < end)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return *flag;
}

static void run_ms(int ms)
{
    bool never = false;
    run_until(&never, ms);
}

typedef struct result {
    bool done;
    int calls;
    bool had_reply;
    int type;
    char str[256];
    long long integer;
    char err[64];
    enum rk_status st;
    q_pick_result pick;
} result;

static void on_reply(void *ctx, redisReply *reply, const char *err)
{
    result *r = ctx;
    r->done = true;
    r->calls++;
    r->had_reply = reply != NULL;
    if (reply) {
        r->type = reply->type;
        r->integer = reply->integer;
        if (reply->str)
            snprintf(r->str, sizeof(r->str), "%.*s", (int)reply->len, reply->str);
    } else {
        snprintf(r->err, sizeof(r->err), "%s", err ? err : "(null)");
    }
}

static void on_pick(void *ctx, redisReply *reply, const char *err)
{
    result *r = ctx;
    r->done = true;
    r->calls++;
    r->had_reply = reply != NULL;
    r->st = q_decode_pick(reply, &r->pick);
    if (!reply)
        snprintf(r->err, sizeof(r->err), "%s", err ? err : "(null)");
}

typedef struct msgs {
    int n;
    bool got;
    char last_channel[128];
    char last_data[128];
    char last_pattern[64];
    const char *want_prefix; /* only count messages whose data starts with this */
} msgs;
static msgs M;

static void on_message(void *ctx, const char *pattern, const char *channel, size_t chlen,
                       const char *data, size_t len)
{
    msgs *m = ctx;
    if (m->want_prefix && (len < strlen(m->want_prefix) ||
                           memcmp(data, m->want_prefix, strlen(m->want_prefix)) != 0))
        return;
    m->n++;
    m->got = true;
    snprintf(m->last_channel, sizeof(m->last_channel), "%.*s", (int)chlen, channel);
    snprintf(m->last_data, sizeof(m->last_data), "%.*s", (int)len, data);
    snprintf(m->last_pattern, sizeof(m->last_pattern), "%s", pattern ? pattern : "");
}

static redis_client *make_client(const char *url, int cmd_timeout_ms)
{
    redis_options o;
    redis_options_init(&o, NULL);
    o.url = url;
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 200;
    o.connect_timeout_ms = 1000;
    o.command_timeout_ms = cmd_timeout_ms;
    o.on_message = on_message;
    o.message_ctx = &M;
    redis_client *r = redis_new(&loop, &o);
    assert_non_null(r);
    assert_int_equal(redis_start(r), 0);
    return r;
}

typedef struct ready_probe {
    redis_client *r;
    bool ready;
} ready_probe;

static bool wait_ready(redis_client *r, int ms)
{
    uv_update_time(&loop);
    uint64_t end = uv_now(&loop) + (uint64_t)ms;
    while (!(redis_is_ready(r) && redis_sub_is_ready(r)) && uv_now(&loop) < end)
        run_ms(10);
    return redis_is_ready(r) && redis_sub_is_ready(r);
}

static void free_client(redis_client *r)
{
    redis_free(r);
    run_ms(20); /* let the handles close */
}

/* ---- private redis-server ---- */

static pid_t priv_pid = -1;
static int priv_port;
static char priv_url[64];

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    socklen_t l = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

static bool priv_start(void)
{
    if (!priv_port) {
        priv_port = free_port();
        snprintf(priv_url, sizeof(priv_url), "redis://127.0.0.1:%d", priv_port);
    }
    char port[16];
    snprintf(port, sizeof(port), "%d", priv_port);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        int devnull = open("/dev/null", 1);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save",
               "", "--appendonly", "no", "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    priv_pid = pid;
    /* wait until it accepts connections */
    for (int i = 0; i < 200; i++) {
        redisContext *c = redisConnect("127.0.0.1", priv_port);
        bool ok = c && !c->err;
        if (c)
            redisFree(c);
        if (ok)
            return true;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            priv_pid = -1;
            return false;
        }
        usleep(10000);
    }
    return false;
}

static void priv_stop(void)
{
    if (priv_pid > 0) {
        kill(priv_pid, SIGCONT);
        kill(priv_pid, SIGTERM);
        waitpid(priv_pid, NULL, 0);
        priv_pid = -1;
    }
}

/* ---- tests ---- */

static void test_commands_and_scripts(void **state)
{
    redis_client *r = make_client(test_url, 0);
    assert_true(wait_ready(r, 3000));
    assert_true(redis_connect_count(r) >= 1);

    result res = {0};
    redis_cmd(r, on_reply, &res, "PING", NULL);
    assert_false(res.done); /* never synchronous */
    assert_true(run_until(&res.done, 2000));
    assert_true(res.had_reply);
    assert_string_equal(res.str, "PONG");

    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    assert_int_equal(q_build_enqueue(&a, org, "c1", 5, "", 0, "hi", 300), RK_OK);
    result e = {0};
    redis_eval(r, &a, on_reply, &e);
    rk_argv_free(&a); /* copied by redis_eval */
    assert_true(run_until(&e.done, 2000));
    assert_int_equal(e.type, REDIS_REPLY_ARRAY);

    rk_argv_init(&a, RK_NO_SCRIPT);
    assert_int_equal(q_build_pick(&a, org, "ag", 3, ""), RK_OK);
    result p = {0};
    redis_eval(r, &a, on_pick, &p);
    assert_true(run_until(&p.done, 2000));
    assert_int_equal(p.st, RK_OK);
    assert_int_equal(p.pick.kind, Q_PICK_OK);
    assert_string_equal(p.pick.chat_id, "c1");
    q_pick_result_free(&p.pick);

    /* SCRIPT FLUSH: the next EVALSHA gets NOSCRIPT, reloads, retries */
    result f = {0};
    redis_cmd(r, on_reply, &f, "SCRIPT", "FLUSH", NULL);
    assert_true(run_until(&f.done, 2000));
    result p2 = {0};
    redis_eval(r, &a, on_pick, &p2);
    assert_true(run_until(&p2.done, 2000));
    assert_int_equal(p2.calls, 1);
    assert_int_equal(p2.st, RK_OK);
    assert_int_equal(p2.pick.kind, Q_PICK_EMPTY);
    q_pick_result_free(&p2.pick);
    /* and the script stays loaded */
    result p3 = {0};
    redis_eval(r, &a, on_pick, &p3);
    assert_true(run_until(&p3.done, 2000));
    assert_int_equal(p3.st, RK_OK);

    /* plain command through redis_eval; an error reply reaches the callback */
    rk_argv_reset(&a, RK_NO_SCRIPT);
    rk_argv_args(&a, "NOSUCHCOMMAND");
    result x = {0};
    redis_eval(r, &a, on_reply, &x);
    assert_true(run_until(&x.done, 2000));
    assert_true(x.had_reply);
    assert_int_equal(x.type, REDIS_REPLY_ERROR);
    rk_argv_free(&a);

    /* detached: the callback never runs */
    result d = {0};
    redis_op *op = redis_cmd(r, on_reply, &d, "PING", NULL);
    redis_op_detach(op);
    result after = {0};
    redis_cmd(r, on_reply, &after, "PING", NULL);
    assert_true(run_until(&after.done, 2000));
    assert_false(d.done);

    /* free with commands in flight: each callback runs once with no reply */
    result pend[5];
    memset(pend, 0, sizeof(pend));
    for (int i = 0; i < 5; i++)
        redis_cmd(r, on_reply, &pend[i], "PING", NULL);
    free_client(r);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(pend[i].calls, 1);
        assert_false(pend[i].had_reply);
    }
}

static void test_pubsub_and_keyspace(void **state)
{
    memset(&M, 0, sizeof(M));
    redis_client *r = make_client(test_url, 0);
    char chan[96];
    snprintf(chan, sizeof(chan), "test-bus-%d", (int)getpid());
    assert_int_equal(redis_subscribe(r, chan), 0);
    assert_int_equal(redis_subscribe(r, chan), -1); /* already */
    assert_int_equal(redis_subscribe_expired(r), 0);
    assert_true(wait_ready(r, 3000));

    result pub = {0};
    redis_publish(r, chan, "hello", 5, on_reply, &pub);
    assert_true(run_until(&M.got, 2000));
    assert_string_equal(M.last_channel, chan);
    assert_string_equal(M.last_data, "hello");
    assert_string_equal(M.last_pattern, "");
    assert_true(run_until(&pub.done, 1000));
    assert_int_equal(pub.integer, 1);

    /* subscribe while connected */
    char pat[96];
    snprintf(pat, sizeof(pat), "ptest-%d-*", (int)getpid());
    assert_int_equal(redis_psubscribe(r, pat), 0);
    run_ms(100);
    M.got = false;
    char pchan[96];
    snprintf(pchan, sizeof(pchan), "ptest-%d-x", (int)getpid());
    redis_publish(r, pchan, "p1", 2, NULL, NULL);
    assert_true(run_until(&M.got, 2000));
    assert_string_equal(M.last_pattern, pat);
    assert_string_equal(M.last_data, "p1");

    /* keyspace notification of an expiring socket key (CONFIG set by the client) */
    buf_t k;
    buf_init(&k);
    rk_sock(&k, org, "sock-exp");
    M.got = false;
    M.want_prefix = k.data;
    redis_cmd(r, NULL, NULL, "SET", k.data, "n1", "PX", "30", NULL);
    assert_true(run_until(&M.got, 3000));
    char want[64];
    snprintf(want, sizeof(want), "__keyevent@%d__:expired", redis_db(r));
    assert_string_equal(M.last_channel, want);
    assert_string_equal(M.last_data, k.data);
    M.want_prefix = NULL;
    buf_free(&k);

    assert_int_equal(redis_unsubscribe(r, chan), 0);
    assert_int_equal(redis_unsubscribe(r, chan), -1);
    run_ms(50);
    M.got = false;
    redis_publish(r, chan, "again", 5, NULL, NULL);
    run_ms(200);
    assert_false(M.got);
    free_client(r);
}

static void test_redis_down_and_restart(void **state)
{
    if (!priv_start()) {
        printf("SKIP restart test: cannot start redis-server\n");
        skip();
    }
    memset(&M, 0, sizeof(M));
    redis_client *r = make_client(priv_url, 0);
    assert_int_equal(redis_subscribe(r, "bus-restart"), 0);
    assert_true(wait_ready(r, 3000));
    unsigned long c0 = redis_connect_count(r);

    priv_stop();
    result down = {0};
    run_ms(100);
    redis_cmd(r, on_reply, &down, "PING", NULL);
    assert_false(down.done);
    assert_true(run_until(&down.done, 2000));
    assert_false(down.had_reply);
    assert_false(redis_is_ready(r));
    run_ms(300); /* several failed attempts with backoff */

    assert_true(priv_start());
    assert_true(wait_ready(r, 5000));
    assert_true(redis_connect_count(r) > c0);

    /* scripts were loaded again on the fresh server, subscriptions resent */
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    assert_int_equal(q_build_pick(&a, "org-restart", "ag", 3, ""), RK_OK);
    result p = {0};
    redis_eval(r, &a, on_pick, &p);
    assert_true(run_until(&p.done, 2000));
    assert_int_equal(p.st, RK_OK);
    assert_int_equal(p.pick.kind, Q_PICK_EMPTY);
    rk_argv_free(&a);

    M.got = false;
    redis_publish(r, "bus-restart", "back", 4, NULL, NULL);
    assert_true(run_until(&M.got, 2000));
    assert_string_equal(M.last_data, "back");
    free_client(r);
    priv_stop();
}

/* Starts the private redis-server (or skips `what`) and a client of it with the given command
 * timeout, connected. */
static redis_client *priv_client(const char *what, int timeout_ms)
{
    if (!priv_start()) {
        printf("SKIP %s test: cannot start redis-server\n", what);
        skip();
    }
    redis_client *r = make_client(priv_url, timeout_ms);
    assert_true(wait_ready(r, 3000));
    return r;
}

static void test_command_timeout(void **state)
{
    redis_client *r = priv_client("timeout", 300);
    kill(priv_pid, SIGSTOP); /* Redis hangs: connected but silent */
    result t = {0};
    redis_cmd(r, on_reply, &t, "PING", NULL);
    assert_true(run_until(&t.done, 3000));
    assert_false(t.had_reply);
    assert_string_equal(t.err, "timeout");
    kill(priv_pid, SIGCONT);
    assert_true(wait_ready(r, 5000));
    result ok = {0};
    redis_cmd(r, on_reply, &ok, "PING", NULL);
    assert_true(run_until(&ok.done, 2000));
    assert_true(ok.had_reply);
    free_client(r);
    priv_stop();
}

/* Output the socket does not take at once (Redis stopped, a value larger than the socket
 * buffers): the rest is written when the socket is writable again, and commands queued behind
 * it keep their order. */
static void test_large_output_waits_for_socket(void **state)
{
    redis_client *r = priv_client("large output", 10000);
    size_t n = 64u << 20; /* more than loopback buffers hold: tcp_rmem max 32 MB + tcp_wmem 4 MB */
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, 'x', n);
    kill(priv_pid, SIGSTOP);
    result set = {0}, len = {0};
    const char *argv[3] = {"SET", "chatd-test:big", big};
    size_t argvlen[3] = {3, strlen("chatd-test:big"), n};
    redis_cmd_argv(r, 3, argv, argvlen, on_reply, &set);
    redis_cmd(r, on_reply, &len, "STRLEN", "chatd-test:big", NULL);
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    run_ms(300); /* the loop writes what fits, then waits for the socket (no spinning) */
    getrusage(RUSAGE_SELF, &ru1);
    long cpu_ms = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) * 1000 +
                  (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1000 +
                  (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1000 +
                  (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1000;
    if (cpu_ms > 150)
        fail_msg("%ld ms of CPU in 300 ms while Redis was stopped: the loop spins", cpu_ms);
    assert_false(set.done);
    kill(priv_pid, SIGCONT);
    assert_true(run_until(&len.done, 5000));
    assert_true(set.done && set.had_reply);
    assert_string_equal(set.str, "OK");
    assert_true(len.had_reply);
    assert_int_equal(len.integer, (long long)n);
    free(big);
    free_client(r);
    priv_stop();
}

static void test_never_up(void **state)
{
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", free_port()); /* nobody listens */
    redis_client *r = make_client(url, 0);
    run_ms(100);
    assert_false(redis_is_ready(r));
    result res = {0};
    redis_cmd(r, on_reply, &res, "PING", NULL);
    assert_false(res.done);
    assert_true(run_until(&res.done, 1000));
    assert_false(res.had_reply);
    assert_int_equal(res.calls, 1);
    assert_true(strlen(res.err) > 0);
    enum redis_state st = redis_get_state(r);
    assert_true(st == RDS_BACKOFF || st == RDS_CONNECTING);
    free_client(r);

    /* malformed URLs are refused at creation */
    redis_options o;
    redis_options_init(&o, NULL);
    o.url = "redis://127.0.0.1:notaport";
    assert_null(redis_new(&loop, &o));
    o.url = "http://x";
    assert_null(redis_new(&loop, &o));
}

static int setup(void **state)
{
    uv_loop_init(&loop);
    snprintf(org, sizeof(org), "t%d-client", (int)getpid());
    return 0;
}

static int teardown(void **state)
{
    priv_stop();
    run_ms(10);
    int rc = uv_loop_close(&loop);
    if (rc != 0) {
        fprintf(stderr, "loop still has handles\n");
        return -1;
    }
    return 0;
}

int main(void)
{
    test_url = getenv("CHATD_TEST_REDIS_URL");
    if (!test_url || !*test_url) {
        printf("SKIP test_redis_client: CHATD_TEST_REDIS_URL is not set\n");
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commands_and_scripts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pubsub_and_keyspace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_down_and_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_output_waits_for_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_never_up, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
