/* Queue script cases the gateway's queue module relies on (issue 5), on top
 * of test_lua_queue.c's helpers (included: its statics, its group setup):
 *   - q_build_requeue_restore, the undo of a pick whose PostgreSQL write
 *     failed: the entry comes back with the same member and score (so its
 *     place), the agent's load goes back down, the assignment record is gone;
 *   - available_agents counts online agents below capacity only, however
 *     many customers the status hash holds.
 * Needs CHATD_TEST_REDIS_URL (skipped if unset). */
#define main test_lua_queue_main
#include "test_lua_queue.c"
#undef main

static redisReply *cmd_key(const char *fmt, const char *suffix, const char *arg)
{
    buf_t k;
    buf_init(&k);
    rk_key(&k, org, suffix);
    redisReply *r = redisCommand(rc, fmt, k.data, arg);
    buf_free(&k);
    assert_non_null(r);
    return r;
}

static void test_restore_keeps_place(void **state)
{
    new_org("restore");
    enqueue("c1", 5, "", 0);
    enqueue("c2", 5, "", 0);
    enqueue("c3", 5, "", 0);
    redisReply *m = cmd_key("HGET %s %s", "qentry:c2", "member");
    assert_int_equal(m->type, REDIS_REPLY_STRING);
    char *member = xstrdup(m->str);
    freeReplyObject(m);
    redisReply *sc = cmd_key("ZSCORE %s %s", "queue", member);
    char *score = xstrdup(sc->str);
    freeReplyObject(sc);

    expect_pick("a", 3, "", "c1");
    expect_pick("a", 3, "", "c2");
    assert_int_equal(hget_ll("agentload", "a"), 2);

    /* PostgreSQL refused the write: c2 goes back where it was */
    q_transfer_result t;
    assert_int_equal(q_build_requeue_restore(&A, org, "c2", 0, 0, "", 300), RK_OK);
    redisReply *r = ev(rc, &A);
    assert_int_equal(q_decode_transfer(r, &t), RK_OK);
    freeReplyObject(r);
    assert_int_equal(t.kind, Q_TRANSFER_QUEUED);
    assert_int_equal(t.eta.position, 1);
    assert_int_equal(t.priority, 5);
    assert_string_equal(t.old_agent, "a");
    q_transfer_result_free(&t);
    sc = cmd_key("ZSCORE %s %s", "queue", member);
    assert_int_equal(sc->type, REDIS_REPLY_STRING);
    assert_string_equal(sc->str, score);
    freeReplyObject(sc);
    redisReply *ex = cmd_key("EXISTS %s%s", "assign:c2", "");
    assert_int_equal(ex->integer, 0);
    freeReplyObject(ex);
    assert_int_equal(hget_ll("agentload", "a"), 1);
    assert_int_equal(position("c3").position, 2);
    expect_pick("b", 3, "", "c2");
    free(member);
    free(score);
}

static void test_available_ignores_customers(void **state)
{
    new_org("avail");
    enqueue("c1", 0, "", 0);
    enqueue("c2", 0, "", 0);
    agent_online("a1", "s1", 3);
    agent_online("a2", "s2", 1);
    char sid[32], key[32];
    for (int i = 0; i < 300; i++) {
        snprintf(sid, sizeof sid, "cs%d", i);
        snprintf(key, sizeof key, "cust%d", i);
        assert_int_equal(pres_build_add(&A, org, sid, "customer", key, 60000, "node1", -1), RK_OK);
        freeReplyObject(ev(rc, &A));
    }
    check_eta("c2", 2, 2, 300);
    expect_pick("a2", 1, "", "c1"); /* a2 is full now */
    check_eta("c2", 1, 1, 300);
    agent_status("a1", "away");
    check_eta("c2", 1, 0, 300);
}

int main(void)
{
    const char *url = getenv("CHATD_TEST_REDIS_URL");
    if (!url || !*url) {
        printf("SKIP test_queue_restore: CHATD_TEST_REDIS_URL is not set\n");
        return 0;
    }
    if (parse_test_url(url) != 0) {
        fprintf(stderr, "bad CHATD_TEST_REDIS_URL\n");
        return 1;
    }
    (void)test_lua_queue_main;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restore_keeps_place),
        cmocka_unit_test(test_available_ignores_customers),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
