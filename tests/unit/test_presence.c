/* presence/presence.c: presence and timer argv builders and reply decoders,
 * fed canned RESP through a hiredis redisReader (no server). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "presence/presence.h"
#include "store/keys.h"

static redisReply *parse(const char *resp)
{
    redisReader *rd = redisReaderCreate();
    assert_non_null(rd);
    assert_int_equal(redisReaderFeed(rd, resp, strlen(resp)), REDIS_OK);
    void *reply = NULL;
    assert_int_equal(redisReaderGetReply(rd, &reply), REDIS_OK);
    assert_non_null(reply);
    redisReaderFree(rd);
    return reply;
}

#define SHA "0123456789012345678901234567890123456789"

static void expect_argv(const rk_argv *a, const char *want)
{
    const char *argv[RK_ARGV_MAX + 3];
    size_t argvlen[RK_ARGV_MAX + 3];
    char num[24];
    int argc = rk_argv_resolve(a, SHA, num, argv, argvlen, RK_ARGV_MAX + 3);
    assert_true(argc > 0);
    buf_t b;
    buf_init(&b);
    for (int i = 0; i < argc; i++) {
        if (i)
            buf_putc(&b, ' ');
        buf_append(&b, argv[i], argvlen[i]);
    }
    assert_string_equal(b.data, want);
    buf_free(&b);
}

static void test_presence_builders(void **state)
{
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    assert_int_equal(pres_build_add(&a, "acme", "S1", "agent", "u1", 45000, "n1:8080", 3), RK_OK);
    assert_int_equal(a.script, RK_SCRIPT_PRESENCE_ADD);
    expect_argv(&a, "EVALSHA " SHA " 5 chat:{acme}:sock:S1 chat:{acme}:ident:agent:u1 "
                    "chat:{acme}:status chat:{acme}:sockident chat:{acme}:agentmax S1 agent:u1 "
                    "45000 n1:8080 3");
    assert_int_equal(pres_build_add(&a, "acme", "S2", "customer", "a@b.c", 45000, "n1", 3),
                     RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 5 chat:{acme}:sock:S2 chat:{acme}:ident:customer:a@b.c "
                    "chat:{acme}:status chat:{acme}:sockident chat:{acme}:agentmax S2 "
                    "customer:a@b.c 45000 n1 ");
    assert_int_equal(pres_build_heartbeat(&a, "acme", "S1", 45000), RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 2 chat:{acme}:sock:S1 chat:{acme}:sockident S1 45000");
    assert_int_equal(pres_build_remove(&a, "acme", "S1", "agent", "u1"), RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 4 chat:{acme}:sock:S1 chat:{acme}:ident:agent:u1 "
                    "chat:{acme}:status chat:{acme}:sockident S1 agent:u1");
    assert_int_equal(pres_build_expired(&a, "acme", "S1"), RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 3 chat:{acme}:sockident chat:{acme}:status "
                    "chat:{acme}:sock:S1 chat:{acme}: S1");
    assert_int_equal(pres_build_sweep(&a, "acme", NULL, 100), RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 2 chat:{acme}:sockident chat:{acme}:status chat:{acme}: 0 "
                    "100");
    assert_int_equal(pres_build_status(&a, "acme", "agent", "u1", "away"), RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 2 chat:{acme}:status chat:{acme}:ident:agent:u1 agent:u1 "
                    "away");

    assert_int_equal(pres_build_add(&a, "acme", "S1", "robot", "u1", 1, "n", 3), RK_ERR_ARG);
    assert_int_equal(pres_build_add(&a, "acme", "S1", "agent", "u1", 0, "n", 3), RK_ERR_ARG);
    assert_int_equal(pres_build_add(&a, "acme", "", "agent", "u1", 10, "n", 3), RK_ERR_ARG);
    assert_int_equal(pres_build_status(&a, "acme", "agent", "u1", "busy"), RK_ERR_ARG);
    assert_int_equal(pres_build_sweep(&a, "acme", "0", 0), RK_ERR_ARG);
    rk_argv_free(&a);
}

static void test_timer_builders(void **state)
{
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    pres_timer_spec t[2] = {{"warn", 240000}, {"close", 1800000}};
    assert_int_equal(pres_timer_build_arm(&a, "acme", "c1", t, 2), RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 3 chat:{acme}:timers chat:{acme}:timer:warn:c1 "
                    "chat:{acme}:timer:close:c1 c1 warn 240000 close 1800000");
    const char *kinds[] = {"warn", "close", "reply"};
    assert_int_equal(pres_timer_build_stop(&a, "acme", "c1", kinds, 3), RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 4 chat:{acme}:timers chat:{acme}:timer:warn:c1 "
                    "chat:{acme}:timer:close:c1 chat:{acme}:timer:reply:c1 c1 warn close reply");
    assert_int_equal(pres_timer_build_claim(&a, "acme", "warn", "c1"), RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 2 chat:{acme}:timers chat:{acme}:timer:warn:c1 warn c1");
    assert_int_equal(pres_timer_build_due(&a, "acme", 50, 2000), RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 1 chat:{acme}:timers chat:{acme}: 50 2000");

    pres_timer_spec bad[1] = {{"wa:rn", 10}};
    assert_int_equal(pres_timer_build_arm(&a, "acme", "c1", bad, 1), RK_ERR_ARG);
    pres_timer_spec zero[1] = {{"warn", 0}};
    assert_int_equal(pres_timer_build_arm(&a, "acme", "c1", zero, 1), RK_ERR_ARG);
    assert_int_equal(pres_timer_build_arm(&a, "acme", "c1", t, 0), RK_ERR_ARG);
    assert_int_equal(pres_timer_build_claim(&a, "acme", "", "c1"), RK_ERR_ARG);
    assert_int_equal(pres_timer_build_due(&a, "acme", 0, 0), RK_ERR_ARG);
    rk_argv_free(&a);
}

static void test_presence_decoders(void **state)
{
    redisReply *r = parse("*3\r\n:1\r\n$6\r\nonline\r\n:1\r\n");
    pres_add_result add;
    assert_int_equal(pres_decode_add(r, &add), RK_OK);
    assert_true(add.became_online);
    assert_int_equal(add.status, PRES_ONLINE);
    assert_int_equal(add.sockets, 1);
    freeReplyObject(r);
    r = parse("*3\r\n:0\r\n$4\r\naway\r\n:3\r\n");
    assert_int_equal(pres_decode_add(r, &add), RK_OK);
    assert_false(add.became_online);
    assert_int_equal(add.status, PRES_AWAY);
    freeReplyObject(r);
    r = parse("*3\r\n:0\r\n$4\r\nbusy\r\n:3\r\n");
    assert_int_equal(pres_decode_add(r, &add), RK_ERR_SHAPE);
    freeReplyObject(r);

    bool alive = true;
    r = parse(":0\r\n");
    assert_int_equal(pres_decode_heartbeat(r, &alive), RK_OK);
    assert_false(alive);
    freeReplyObject(r);
    r = parse("-ERR boom\r\n");
    assert_int_equal(pres_decode_heartbeat(r, &alive), RK_ERR_REDIS);
    freeReplyObject(r);
    r = parse("$-1\r\n");
    assert_int_equal(pres_decode_heartbeat(r, &alive), RK_ERR_SHAPE);
    freeReplyObject(r);
    assert_int_equal(pres_decode_heartbeat(NULL, &alive), RK_ERR_UNAVAILABLE);

    r = parse("*2\r\n:1\r\n:0\r\n");
    pres_remove_result rem;
    assert_int_equal(pres_decode_remove(r, &rem), RK_OK);
    assert_true(rem.went_offline);
    assert_int_equal(rem.remaining, 0);
    freeReplyObject(r);

    r = parse("*4\r\n:1\r\n$8\r\nagent:u1\r\n:1\r\n:0\r\n");
    pres_expired_result ex;
    assert_int_equal(pres_decode_expired(r, &ex), RK_OK);
    assert_true(ex.acted);
    assert_string_equal(ex.identity, "agent:u1");
    assert_true(ex.went_offline);
    pres_expired_result_free(&ex);
    pres_expired_result_free(NULL);
    freeReplyObject(r);
    r = parse("*4\r\n:0\r\n$0\r\n\r\n:0\r\n:0\r\n");
    assert_int_equal(pres_decode_expired(r, &ex), RK_OK);
    assert_false(ex.acted);
    assert_string_equal(ex.identity, "");
    pres_expired_result_free(&ex);
    freeReplyObject(r);
    r = parse("*4\r\n:0\r\n$-1\r\n:0\r\n:0\r\n");
    assert_int_equal(pres_decode_expired(r, &ex), RK_ERR_SHAPE);
    freeReplyObject(r);

    r = parse("*5\r\n$2\r\n17\r\n$8\r\nagent:u1\r\n:1\r\n$11\r\ncustomer:c1\r\n:0\r\n");
    pres_sweep_result sw;
    assert_int_equal(pres_decode_sweep(r, &sw), RK_OK);
    assert_string_equal(sw.cursor, "17");
    assert_int_equal(sw.n, 2);
    assert_string_equal(sw.identities[1], "customer:c1");
    assert_true(sw.went_offline[0]);
    assert_false(sw.went_offline[1]);
    pres_sweep_result_free(&sw);
    pres_sweep_result_free(NULL);
    freeReplyObject(r);
    r = parse("*2\r\n$1\r\n0\r\n$8\r\nagent:u1\r\n"); /* odd pair count */
    assert_int_equal(pres_decode_sweep(r, &sw), RK_ERR_SHAPE);
    freeReplyObject(r);

    r = parse("*2\r\n:0\r\n$7\r\noffline\r\n");
    pres_status_result st;
    assert_int_equal(pres_decode_status(r, &st), RK_OK);
    assert_false(st.changed);
    assert_int_equal(st.status, PRES_OFFLINE);
    assert_string_equal(pres_status_str(st.status), "offline");
    freeReplyObject(r);

    r = parse("-NOSCRIPT No matching script\r\n");
    assert_int_equal(pres_decode_add(r, &add), RK_ERR_REDIS);
    assert_int_equal(pres_decode_remove(r, &rem), RK_ERR_REDIS);
    assert_int_equal(pres_decode_expired(r, &ex), RK_ERR_REDIS);
    assert_int_equal(pres_decode_sweep(r, &sw), RK_ERR_REDIS);
    assert_int_equal(pres_decode_status(r, &st), RK_ERR_REDIS);
    freeReplyObject(r);
    assert_int_equal(pres_decode_add(NULL, &add), RK_ERR_UNAVAILABLE);
}

static void test_timer_decoders(void **state)
{
    redisReply *r = parse("*2\r\n:1700000240000\r\n:1700001800000\r\n");
    long long dl[2] = {0, 0};
    assert_int_equal(pres_timer_decode_arm(r, dl, 2), RK_OK);
    assert_int_equal(dl[0], 1700000240000LL);
    assert_int_equal(dl[1], 1700001800000LL);
    long long one[1] = {7};
    assert_int_equal(pres_timer_decode_arm(r, one, 1), RK_ERR_SHAPE); /* count mismatch */
    assert_int_equal(one[0], 7);
    freeReplyObject(r);

    r = parse(":2\r\n");
    long long n;
    assert_int_equal(pres_timer_decode_stop(r, &n), RK_OK);
    assert_int_equal(n, 2);
    freeReplyObject(r);

    r = parse("*2\r\n:1\r\n:1700000240000\r\n");
    pres_timer_claim c;
    assert_int_equal(pres_timer_decode_claim(r, &c), RK_OK);
    assert_true(c.claimed);
    assert_int_equal(c.deadline_ms, 1700000240000LL);
    freeReplyObject(r);

    r = parse("*6\r\n$4\r\nwarn\r\n$2\r\nc1\r\n:5\r\n$5\r\nclose\r\n$2\r\nc2\r\n:6\r\n");
    pres_timer_due d;
    assert_int_equal(pres_timer_decode_due(r, &d), RK_OK);
    assert_int_equal(d.n, 2);
    assert_string_equal(d.items[0].kind, "warn");
    assert_string_equal(d.items[1].chat_id, "c2");
    assert_int_equal(d.items[1].deadline_ms, 6);
    pres_timer_due_free(&d);
    pres_timer_due_free(NULL);
    freeReplyObject(r);
    r = parse("*0\r\n");
    assert_int_equal(pres_timer_decode_due(r, &d), RK_OK);
    assert_int_equal(d.n, 0);
    pres_timer_due_free(&d);
    freeReplyObject(r);
    r = parse("*3\r\n$4\r\nwarn\r\n$2\r\nc1\r\n$1\r\nx\r\n");
    assert_int_equal(pres_timer_decode_due(r, &d), RK_ERR_SHAPE);
    freeReplyObject(r);
    r = parse("*2\r\n$4\r\nwarn\r\n$2\r\nc1\r\n");
    assert_int_equal(pres_timer_decode_due(r, &d), RK_ERR_SHAPE);
    freeReplyObject(r);
    assert_int_equal(pres_timer_decode_claim(NULL, &c), RK_ERR_UNAVAILABLE);
}

static void test_identity_split(void **state)
{
    char *t, *id;
    assert_true(pres_identity_split("agent:u1", &t, &id));
    assert_string_equal(t, "agent");
    assert_string_equal(id, "u1");
    free(t);
    free(id);
    assert_true(pres_identity_split("customer:a:b@c", &t, &id));
    assert_string_equal(id, "a:b@c");
    free(t);
    free(id);
    assert_false(pres_identity_split("robot:x", &t, &id));
    assert_false(pres_identity_split("agent:", &t, &id));
    assert_false(pres_identity_split(":x", &t, &id));
    assert_false(pres_identity_split("agent", &t, &id));
    assert_false(pres_identity_split(NULL, &t, &id));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presence_builders), cmocka_unit_test(test_timer_builders),
        cmocka_unit_test(test_presence_decoders), cmocka_unit_test(test_timer_decoders),
        cmocka_unit_test(test_identity_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
