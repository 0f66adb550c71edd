/* Queue scripts (lua/queue_*.lua, chat_release.lua) against a real Redis,
 * through the pure builders/decoders of queue/queue.c and the hiredis sync
 * API. Needs CHATD_TEST_REDIS_URL=redis://127.0.0.1:PORT (skipped if unset).
 * Every test uses its own org, so runs never see each other's keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/xalloc.h"
#include "presence/presence.h"
#include "queue/queue.h"
#include "store/keys.h"

static char redis_host[128] = "127.0.0.1";
static int redis_port = 6379;
static int redis_db_num = 0;
static char shas[RK_SCRIPT__COUNT][41];
static char org[96];

static int parse_test_url(const char *url)
{
    const char *p = url;
    if (strncmp(p, "redis://", 8) == 0)
        p += 8;
    const char *at = strchr(p, '@');
    if (at)
        p = at + 1;
    const char *colon = strchr(p, ':');
    const char *slash = strchr(p, '/');
    size_t hl = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
    if (hl == 0 || hl >= sizeof(redis_host))
        return -1;
    memcpy(redis_host, p, hl);
    redis_host[hl] = '\0';
    if (colon)
        redis_port = atoi(colon + 1);
    if (slash)
        redis_db_num = atoi(slash + 1);
    return 0;
}

static redisContext *connect_redis(void)
{
    redisContext *c = redisConnect(redis_host, redis_port);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    if (redis_db_num) {
        redisReply *r = redisCommand(c, "SELECT %d", redis_db_num);
        freeReplyObject(r);
    }
    return c;
}

static void load_scripts(redisContext *c)
{
    for (int i = 0; i < RK_SCRIPT__COUNT; i++) {
        buf_t src;
        buf_init(&src);
        assert_int_equal(rk_script_source(rk_lua_dir(), i, &src), 0);
        redisReply *r = redisCommand(c, "SCRIPT LOAD %b", src.data, src.len);
        assert_non_null(r);
        if (r->type != REDIS_REPLY_STRING)
            fail_msg("SCRIPT LOAD %s: %s", rk_script_name(i), r->str);
        memcpy(shas[i], r->str, 40);
        shas[i][40] = '\0';
        freeReplyObject(r);
        buf_free(&src);
    }
}

/* EVALSHA of a built argv; caller frees the reply. */
static redisReply *ev(redisContext *c, const rk_argv *a)
{
    const char *argv[RK_ARGV_MAX + 3];
    size_t argvlen[RK_ARGV_MAX + 3];
    char num[24];
    int argc = rk_argv_resolve(a, shas[a->script], num, argv, argvlen, RK_ARGV_MAX + 3);
    assert_true(argc > 0);
    redisReply *r = redisCommandArgv(c, argc, argv, argvlen);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("script %s: %s", rk_script_name(a->script), r->str);
    return r;
}

/* Thread-safe variant (no cmocka asserts): NULL or error reply possible. */
static redisReply *ev_raw(redisContext *c, const rk_argv *a)
{
    const char *argv[RK_ARGV_MAX + 3];
    size_t argvlen[RK_ARGV_MAX + 3];
    char num[24];
    int argc = rk_argv_resolve(a, shas[a->script], num, argv, argvlen, RK_ARGV_MAX + 3);
    if (argc <= 0)
        return NULL;
    return redisCommandArgv(c, argc, argv, argvlen);
}

static redisContext *rc;
static rk_argv A;

static void new_org(const char *name)
{
    static int n;
    snprintf(org, sizeof(org), "t%d-%s-%d", (int)getpid(), name, n++);
}

static q_enqueue_result enqueue(const char *chat, int prio, const char *skills, long long at)
{
    q_enqueue_result e;
    assert_int_equal(q_build_enqueue(&A, org, chat, prio, skills, at, "hello", 300), RK_OK);
    redisReply *r = ev(rc, &A);
    assert_int_equal(q_decode_enqueue(r, &e), RK_OK);
    freeReplyObject(r);
    return e;
}

/* Returns the picked chat id (heap) or NULL; *kind gets the result kind. */
static char *pick_on(redisContext *c, rk_argv *a, const char *agent, int max, const char *skills,
                     enum q_pick_kind *kind, long long *load)
{
    q_pick_result p;
    assert_int_equal(q_build_pick(a, org, agent, max, skills), RK_OK);
    redisReply *r = ev(c, a);
    assert_int_equal(q_decode_pick(r, &p), RK_OK);
    freeReplyObject(r);
    if (kind)
        *kind = p.kind;
    if (load)
        *load = p.load;
    char *id = p.chat_id ? xstrdup(p.chat_id) : NULL;
    q_pick_result_free(&p);
    return id;
}

static char *pick(const char *agent, int max, const char *skills, enum q_pick_kind *kind)
{
    return pick_on(rc, &A, agent, max, skills, kind, NULL);
}

static void agent_online(const char *agent, const char *sid, int max)
{
    assert_int_equal(pres_build_add(&A, org, sid, "agent", agent, 60000, "node1", max), RK_OK);
    freeReplyObject(ev(rc, &A));
}

static void agent_offline(const char *agent, const char *sid)
{
    assert_int_equal(pres_build_remove(&A, org, sid, "agent", agent), RK_OK);
    freeReplyObject(ev(rc, &A));
}

static void agent_status(const char *agent, const char *st)
{
    assert_int_equal(pres_build_status(&A, org, "agent", agent, st), RK_OK);
    freeReplyObject(ev(rc, &A));
}

static q_eta position(const char *chat)
{
    q_eta e;
    assert_int_equal(q_build_position(&A, org, chat, 300), RK_OK);
    redisReply *r = ev(rc, &A);
    assert_int_equal(q_decode_position(r, &e), RK_OK);
    freeReplyObject(r);
    return e;
}

static q_transfer_result transfer_agent(const char *chat, const char *target)
{
    q_transfer_result t;
    assert_int_equal(q_build_transfer_agent(&A, org, chat, target, 0, 0, 300), RK_OK);
    redisReply *r = ev(rc, &A);
    assert_int_equal(q_decode_transfer(r, &t), RK_OK);
    freeReplyObject(r);
    return t;
}

static long long hget_ll(const char *suffix, const char *field)
{
    buf_t k;
    buf_init(&k);
    rk_key(&k, org, suffix);
    redisReply *r = redisCommand(rc, "HGET %s %s", k.data, field);
    buf_free(&k);
    long long v = -1;
    if (r->type == REDIS_REPLY_STRING)
        v = atoll(r->str);
    freeReplyObject(r);
    return v;
}

static void expect_pick(const char *agent, int max, const char *skills, const char *want)
{
    enum q_pick_kind k;
    char *id = pick(agent, max, skills, &k);
    if (!want) {
        assert_int_not_equal(k, Q_PICK_OK);
        assert_null(id);
        return;
    }
    assert_int_equal(k, Q_PICK_OK);
    assert_non_null(id);
    assert_string_equal(id, want);
    free(id);
}

/* ---- tests ---- */

static void test_empty_queue(void **state)
{
    new_org("empty");
    enum q_pick_kind k;
    assert_null(pick("a1", 3, "sales", &k));
    assert_int_equal(k, Q_PICK_EMPTY);
    q_eta e = position("nochat");
    assert_int_equal(e.position, 0);
    assert_int_equal(e.queue_length, 0);
}

static void test_no_skill_match(void **state)
{
    new_org("skills");
    enqueue("c1", 5, "billing", 0);
    enqueue("c2", 5, "billing,vip", 0);
    expect_pick("a1", 3, "sales", NULL);
    expect_pick("a1", 3, "sales,vip", NULL);
    expect_pick("a2", 3, "billing,sales", "c1");
    expect_pick("a2", 3, "billing,sales", NULL); /* c2 also needs vip */
    expect_pick("a3", 3, "vip,billing", "c2");
    /* a chat without required skills goes to anyone */
    enqueue("c3", 0, "", 0);
    expect_pick("a4", 3, "", "c3");
}

static void test_capacity_full(void **state)
{
    new_org("cap");
    enqueue("c1", 5, "", 0);
    enqueue("c2", 5, "", 0);
    enqueue("c3", 5, "", 0);
    expect_pick("a1", 2, "", "c1");
    expect_pick("a1", 2, "", "c2");
    enum q_pick_kind k;
    assert_null(pick("a1", 2, "", &k));
    assert_int_equal(k, Q_PICK_FULL);
    assert_int_equal(hget_ll("agentload", "a1"), 2);
    assert_int_equal(position("c3").position, 1);
    /* closing one frees capacity */
    const char *kinds[] = {"warn", "close"};
    assert_int_equal(q_build_release(&A, org, "c1", true, 300, kinds, 2), RK_OK);
    redisReply *r = ev(rc, &A);
    q_release_result rel;
    assert_int_equal(q_decode_release(r, &rel), RK_OK);
    freeReplyObject(r);
    assert_string_equal(rel.agent, "a1");
    assert_false(rel.was_queued);
    q_release_result_free(&rel);
    assert_int_equal(hget_ll("agentload", "a1"), 1);
    expect_pick("a1", 2, "", "c3");
}

static void test_equal_priorities_fifo(void **state)
{
    new_org("fifo");
    char id[16];
    for (int i = 0; i < 20; i++) { /* same millisecond for most of them */
        snprintf(id, sizeof(id), "z%02d", 19 - i); /* ids sort opposite to enqueue order */
        enqueue(id, 4, "", 0);
    }
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof(id), "z%02d", 19 - i);
        expect_pick("a1", 100, "", id);
    }
}

static long long untransfer(const char *chat, const char *from, const char *target)
{
    assert_int_equal(q_build_untransfer(&A, org, chat, from, target), RK_OK);
    redisReply *r = ev(rc, &A);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

/* A transfer to an agent that PostgreSQL refuses is undone, but not over a close that ran in
 * between: the close gave the target's capacity back already (the undo took it to -1 and gave
 * the old agent a closed chat's load, for good). */
static void test_untransfer(void **state)
{
    new_org("untransfer");
    agent_online("x", "sx", 1);
    agent_online("y", "sy", 1);
    enqueue("c1", 5, "", 0);
    expect_pick("x", 1, "", "c1");
    q_transfer_result t = transfer_agent("c1", "y");
    assert_int_equal(t.kind, Q_TRANSFER_ASSIGNED);
    q_transfer_result_free(&t);
    assert_int_equal(untransfer("c1", "x", "y"), 1); /* refused, nothing else happened */
    assert_int_equal(hget_ll("agentload", "x"), 1);
    assert_int_equal(hget_ll("agentload", "y"), 0);
    assert_int_equal(untransfer("c1", "x", "y"), 0); /* twice: nothing more */

    t = transfer_agent("c1", "y");
    assert_int_equal(t.kind, Q_TRANSFER_ASSIGNED);
    q_transfer_result_free(&t);
    assert_int_equal(q_build_release(&A, org, "c1", true, 300, NULL, 0), RK_OK); /* a close wins */
    freeReplyObject(ev(rc, &A));
    assert_int_equal(untransfer("c1", "x", "y"), 0);
    assert_int_equal(hget_ll("agentload", "x"), 0);
    assert_int_equal(hget_ll("agentload", "y"), 0);
    assert_int_equal(hget_ll("assign:c1", "agent"), -1);
    enqueue("c2", 5, "", 0);
    expect_pick("x", 1, "", "c2"); /* x has room again */
}

static void test_duplicate_enqueue(void **state)
{
    new_org("dup");
    q_enqueue_result e1 = enqueue("c1", 3, "x", 0);
    enqueue("c2", 3, "x", 0);
    q_enqueue_result e2 = enqueue("c1", 9, "y", 0);
    assert_true(e1.created);
    assert_false(e2.created);
    assert_int_equal(e2.priority, 3);
    assert_int_equal(e2.enqueued_at_ms, e1.enqueued_at_ms);
    assert_int_equal(e2.eta.position, 1);
    assert_int_equal(e2.eta.queue_length, 2);
    expect_pick("a", 5, "x", "c1");
    expect_pick("a", 5, "x", "c2");
    expect_pick("a", 5, "x", NULL);
}

static void test_priority_then_fifo(void **state)
{
    new_org("prio");
    enqueue("a", 1, "", 0);
    enqueue("b", 5, "", 0);
    enqueue("c", 5, "", 0);
    enqueue("d", 9, "", 0);
    enqueue("e", 1, "", 0);
    enqueue("f", 0, "", 1000); /* explicit old enqueue time, lowest priority */
    enqueue("g", 5, "", 1000); /* explicit old time: ahead of b and c */
    const char *want[] = {"d", "g", "b", "c", "a", "e", "f"};
    q_snapshot s;
    assert_int_equal(q_build_snapshot(&A, org, 300, 0, 100), RK_OK);
    redisReply *r = ev(rc, &A);
    assert_int_equal(q_decode_snapshot(r, &s), RK_OK);
    freeReplyObject(r);
    assert_int_equal(s.n, 7);
    for (size_t i = 0; i < 7; i++)
        assert_string_equal(s.chat_ids[i], want[i]);
    q_snapshot_free(&s);
    for (size_t i = 0; i < 7; i++) {
        assert_int_equal(position(want[i]).position, (long long)i + 1);
    }
    for (size_t i = 0; i < 7; i++)
        expect_pick("ag", 10, "", want[i]);
}

static void test_transfer_to_skills(void **state)
{
    new_org("xfer");
    q_enqueue_result ex = enqueue("x", 3, "sales", 0);
    usleep(5000);
    enqueue("y", 4, "", 0); /* later than x */
    enqueue("w", 5, "", 0);
    expect_pick("a1", 3, "sales", "w");
    expect_pick("a1", 3, "sales", "y");
    expect_pick("a1", 3, "sales", "x");
    assert_int_equal(hget_ll("agentload", "a1"), 3);
    enqueue("v", 4, "", 0); /* priority 4, after x's original enqueue time */

    assert_int_equal(q_build_transfer_skills(&A, org, "x", "billing", 0, 0, "p", 300), RK_OK);
    redisReply *r = ev(rc, &A);
    q_transfer_result t;
    assert_int_equal(q_decode_transfer(r, &t), RK_OK);
    freeReplyObject(r);
    assert_int_equal(t.kind, Q_TRANSFER_QUEUED);
    assert_int_equal(t.priority, 4);                       /* 3 + 1 */
    assert_int_equal(t.enqueued_at_ms, ex.enqueued_at_ms); /* original time kept */
    assert_string_equal(t.old_agent, "a1");
    assert_int_equal(t.eta.position, 1); /* ahead of v: same priority, earlier */
    q_transfer_result_free(&t);
    assert_int_equal(hget_ll("agentload", "a1"), 2);

    /* the skill replaced: a sales-only agent cannot take it any more */
    expect_pick("a2", 3, "sales", "v");
    expect_pick("a2", 3, "sales", NULL);
    expect_pick("a3", 3, "billing", "x");

    /* priority saturates at 9 */
    enqueue("m", 9, "", 0);
    expect_pick("a4", 3, "", "m");
    assert_int_equal(q_build_transfer_skills(&A, org, "m", "", 0, 0, "", 300), RK_OK);
    r = ev(rc, &A);
    assert_int_equal(q_decode_transfer(r, &t), RK_OK);
    freeReplyObject(r);
    assert_int_equal(t.priority, 9);
    q_transfer_result_free(&t);
}

static void test_transfer_to_agent(void **state)
{
    new_org("xagent");
    enqueue("c1", 5, "", 0);
    enqueue("c2", 5, "", 0);
    agent_online("a1", "s1", 3);
    expect_pick("a1", 3, "", "c1");

    q_transfer_result t = transfer_agent("c1", "b");
    assert_int_equal(t.kind, Q_TRANSFER_REFUSED);
    assert_int_equal(t.refusal, Q_REFUSED_OFFLINE);

    agent_online("b", "sb", 1);
    agent_status("b", "away");
    t = transfer_agent("c1", "b");
    assert_int_equal(t.kind, Q_TRANSFER_REFUSED);
    assert_int_equal(t.refusal, Q_REFUSED_AWAY);

    agent_status("b", "online");
    expect_pick("b", 1, "", "c2"); /* b now at capacity (max 1) */
    t = transfer_agent("c1", "b");
    assert_int_equal(t.kind, Q_TRANSFER_REFUSED);
    assert_int_equal(t.refusal, Q_REFUSED_FULL);

    t = transfer_agent("c1", "a1");
    assert_int_equal(t.refusal, Q_REFUSED_SAME);

    agent_online("c", "sc", 2);
    t = transfer_agent("c1", "c");
    assert_int_equal(t.kind, Q_TRANSFER_ASSIGNED);
    assert_string_equal(t.target, "c");
    assert_string_equal(t.old_agent, "a1");
    q_transfer_result_free(&t);
    assert_int_equal(hget_ll("agentload", "a1"), 0);
    assert_int_equal(hget_ll("agentload", "c"), 1);

    /* closing releases the new owner */
    const char *kinds[] = {"warn"};
    assert_int_equal(q_build_release(&A, org, "c1", true, 300, kinds, 1), RK_OK);
    redisReply *r = ev(rc, &A);
    q_release_result rel;
    assert_int_equal(q_decode_release(r, &rel), RK_OK);
    freeReplyObject(r);
    assert_string_equal(rel.agent, "c");
    q_release_result_free(&rel);
    assert_int_equal(hget_ll("agentload", "c"), 0);
}

static void check_eta(const char *chat, long long pos, long long avail, long long avg)
{
    q_eta e = position(chat);
    if (e.position != pos || e.available != avail || e.avg_handle_s != avg)
        fail_msg("%s: position %lld/%lld available %lld/%lld avg %lld/%lld", chat, e.position,
                 pos, e.available, avail, e.avg_handle_s, avg);
    assert_int_equal(e.avg_handle_s, avg);
    long long div = avail < 1 ? 1 : avail;
    assert_int_equal(e.eta_s, ((pos + div - 1) / div) * avg);
    assert_int_equal(e.eta_s, q_eta_seconds(pos, avail, avg));
}

static void test_position_eta(void **state)
{
    new_org("eta");
    char id[16];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "c%d", i + 1);
        enqueue(id, 5, "", 0);
    }
    check_eta("c5", 5, 0, 300); /* nobody online: counts as 1 */
    check_eta("c1", 1, 0, 300);
    agent_online("a1", "s1", 3);
    check_eta("c5", 5, 1, 300);
    agent_online("a2", "s2", 3);
    check_eta("c5", 5, 2, 300); /* ceil(5/2) = 3 */
    check_eta("c4", 4, 2, 300);
    agent_online("a3", "s3", 1);
    check_eta("c5", 5, 3, 300);
    agent_status("a2", "away");
    check_eta("c5", 5, 2, 300);
    /* second tab of a2 does not reset away */
    agent_online("a2", "s2b", 3);
    check_eta("c5", 5, 2, 300);
    agent_offline("a1", "s1");
    check_eta("c5", 5, 1, 300);
    /* a3 picks c1 and is now at capacity: not available */
    expect_pick("a3", 1, "", "c1");
    check_eta("c5", 4, 0, 300);
    agent_status("a2", "online");
    check_eta("c5", 4, 1, 300);
    agent_offline("a2", "s2");
    check_eta("c5", 4, 1, 300); /* a2 still has s2b */
    agent_offline("a2", "s2b");
    check_eta("c5", 4, 0, 300);

    /* average handle time: mean of closes (assignedAt moved back in time) */
    buf_t k;
    buf_init(&k);
    rk_assign(&k, org, "c1");
    redisReply *t = redisCommand(rc, "TIME");
    long long now = atoll(t->element[0]->str) * 1000;
    freeReplyObject(t);
    freeReplyObject(redisCommand(rc, "HSET %s assignedAt %lld", k.data, now - 120000));
    const char *kinds[] = {"warn", "close"};
    assert_int_equal(q_build_release(&A, org, "c1", true, 300, kinds, 2), RK_OK);
    redisReply *r = ev(rc, &A);
    q_release_result rel;
    assert_int_equal(q_decode_release(r, &rel), RK_OK);
    freeReplyObject(r);
    assert_true(rel.handled_ms >= 120000 && rel.handled_ms < 125000);
    assert_int_equal(rel.avg_handle_s, (rel.handled_ms + 500) / 1000);
    long long avg1 = rel.avg_handle_s;
    q_release_result_free(&rel);
    check_eta("c5", 4, 1, avg1); /* a3 free again after the close */

    expect_pick("a9", 3, "", "c2");
    buf_reset(&k);
    rk_assign(&k, org, "c2");
    freeReplyObject(redisCommand(rc, "HSET %s assignedAt %lld", k.data, now - 60000));
    assert_int_equal(q_build_release(&A, org, "c2", true, 300, kinds, 2), RK_OK);
    r = ev(rc, &A);
    assert_int_equal(q_decode_release(r, &rel), RK_OK);
    freeReplyObject(r);
    long long want = ((avg1 * 1000 + rel.handled_ms) / 2 + 500) / 1000;
    assert_true(rel.avg_handle_s >= want - 1 && rel.avg_handle_s <= want + 1);
    q_release_result_free(&rel);

    /* resume-ai (release) frees capacity but does not feed the average */
    expect_pick("a9", 3, "", "c3");
    long long avg2 = position("c5").avg_handle_s;
    assert_int_equal(q_build_release(&A, org, "c3", false, 300, kinds, 2), RK_OK);
    r = ev(rc, &A);
    assert_int_equal(q_decode_release(r, &rel), RK_OK);
    freeReplyObject(r);
    assert_int_equal(rel.handled_ms, 0);
    assert_int_equal(rel.avg_handle_s, avg2);
    q_release_result_free(&rel);
    assert_int_equal(hget_ll("agentload", "a9"), 0);
    buf_free(&k);
}

static void test_dequeue_and_front(void **state)
{
    new_org("front");
    enqueue("c1", 9, "", 0);
    enqueue("c2", 9, "", 0);
    enqueue("c3", 2, "s", 0);
    assert_int_equal(q_build_dequeue(&A, org, "c2"), RK_OK);
    redisReply *r = ev(rc, &A);
    q_dequeue_result d;
    assert_int_equal(q_decode_dequeue(r, &d), RK_OK);
    freeReplyObject(r);
    assert_true(d.removed);
    assert_int_equal(d.queue_length, 2);
    r = ev(rc, &A); /* idempotent */
    assert_int_equal(q_decode_dequeue(r, &d), RK_OK);
    freeReplyObject(r);
    assert_false(d.removed);

    expect_pick("a1", 3, "s", "c1");
    expect_pick("a1", 3, "s", "c3");
    enqueue("c4", 9, "", 0);
    /* no-reply reassignment: c3 (priority 2) goes in front of c4 (priority 9) */
    assert_int_equal(q_build_requeue_front(&A, org, "c3", 0, 0, "", 300), RK_OK);
    r = ev(rc, &A);
    q_transfer_result t;
    assert_int_equal(q_decode_transfer(r, &t), RK_OK);
    freeReplyObject(r);
    assert_int_equal(t.kind, Q_TRANSFER_QUEUED);
    assert_int_equal(t.eta.position, 1);
    assert_int_equal(t.priority, 2);
    q_transfer_result_free(&t);
    expect_pick("a2", 3, "", "c4"); /* a2 lacks skill s */
    expect_pick("a2", 3, "s", "c3");
}

static void test_transfer_queued_to_agent(void **state)
{
    new_org("xq");
    enqueue("c1", 6, "en", 0);
    agent_online("t", "st", 2);
    q_transfer_result t = transfer_agent("c1", "t"); /* straight from the queue */
    assert_int_equal(t.kind, Q_TRANSFER_ASSIGNED);
    assert_string_equal(t.old_agent, "");
    q_transfer_result_free(&t);
    assert_int_equal(position("c1").position, 0);
    assert_int_equal(position("c1").queue_length, 0);
    assert_int_equal(hget_ll("agentload", "t"), 1);
    /* back to the queue for a skill nobody online has: it waits */
    assert_int_equal(q_build_transfer_skills(&A, org, "c1", "rare", 0, 0, "", 300), RK_OK);
    redisReply *r = ev(rc, &A);
    assert_int_equal(q_decode_transfer(r, &t), RK_OK);
    freeReplyObject(r);
    assert_int_equal(t.kind, Q_TRANSFER_QUEUED);
    assert_int_equal(t.priority, 7); /* entry priority 6 kept by the assignment, +1 */
    assert_string_equal(t.old_agent, "t");
    q_transfer_result_free(&t);
    assert_int_equal(hget_ll("agentload", "t"), 0);
    expect_pick("t", 2, "en", NULL);
    expect_pick("u", 3, "en,fr", NULL);
    /* an agent with that skill arrives and takes it */
    expect_pick("v", 3, "rare", "c1");
}

static void test_rebuild_after_loss(void **state)
{
    new_org("rebuild");
    /* Redis lost everything; PostgreSQL says: c1 queued since t=5000 (prio 2),
     * c2 queued since t=4000 (prio 2), c3 assigned to a1 */
    enqueue("c1", 2, "en", 5000);
    enqueue("c2", 2, "en", 4000);
    q_restore_result rr;
    assert_int_equal(q_build_restore(&A, org, "c3", "a1", 1700000000000LL, 4, 3000, "en", 2),
                     RK_OK);
    redisReply *r = ev(rc, &A);
    assert_int_equal(q_decode_restore(r, &rr), RK_OK);
    freeReplyObject(r);
    assert_true(rr.restored);
    assert_int_equal(rr.agent_load, 1);
    r = ev(rc, &A); /* replayed twice: counted once */
    assert_int_equal(q_decode_restore(r, &rr), RK_OK);
    freeReplyObject(r);
    assert_false(rr.restored);
    assert_int_equal(rr.agent_load, 1);
    /* original order kept; a1 has room for one more */
    expect_pick("a1", 2, "en", "c2");
    expect_pick("a1", 2, "en", NULL); /* full */
    /* closing c3 frees a1 */
    const char *kinds[] = {"warn"};
    assert_int_equal(q_build_release(&A, org, "c3", true, 300, kinds, 1), RK_OK);
    r = ev(rc, &A);
    q_release_result rel;
    assert_int_equal(q_decode_release(r, &rel), RK_OK);
    freeReplyObject(r);
    assert_string_equal(rel.agent, "a1");
    q_release_result_free(&rel);
    expect_pick("a1", 2, "en", "c1");
}

/* ---- race: many connections picking concurrently ---- */

#define RACE_CHATS 300
#define RACE_AGENTS 20
static atomic_int race_taken[RACE_CHATS];
static atomic_int race_over_cap;
static atomic_int race_order_violations; /* failed calls or out-of-order picks */

typedef struct race_agent {
    int idx;
    int max;
    char name[16];
    char skills[64];
    int picked;
} race_agent;

static void *race_thread(void *arg)
{
    race_agent *ag = arg;
    redisContext *c = redisConnect(redis_host, redis_port);
    if (!c || c->err)
        return NULL;
    if (redis_db_num)
        freeReplyObject(redisCommand(c, "SELECT %d", redis_db_num));
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    int empty_streak = 0;
    long long last_score = -1;
    while (empty_streak < 3) {
        q_pick_result p;
        if (q_build_pick(&a, org, ag->name, ag->max, ag->skills) != RK_OK)
            break;
        redisReply *r = ev_raw(c, &a);
        enum rk_status st = q_decode_pick(r, &p);
        if (r)
            freeReplyObject(r);
        if (st != RK_OK) {
            atomic_fetch_add(&race_order_violations, 1);
            break;
        }
        if (p.kind == Q_PICK_OK) {
            empty_streak = 0;
            if (p.load > p.max_chats)
                atomic_fetch_add(&race_over_cap, 1);
            int n = atoi(p.chat_id + 1);
            if (n >= 0 && n < RACE_CHATS)
                atomic_fetch_add(&race_taken[n], 1);
            ag->picked++;
            /* nothing is enqueued during the race and an agent always gets
             * the best chat it may take, so its picks never go back in
             * (priority, enqueue time) order */
            long long score = (9 - p.priority) * 10000000000000LL + p.enqueued_at_ms;
            if (score < last_score)
                atomic_fetch_add(&race_order_violations, 1);
            last_score = score;
            /* close it right away half of the time, keep it otherwise */
            if (ag->picked % 2 == 0 || p.load == p.max_chats) {
                const char *kinds[] = {"warn", "close"};
                q_build_release(&a, org, p.chat_id, true, 300, kinds, 2);
                redisReply *rr = ev_raw(c, &a);
                if (rr)
                    freeReplyObject(rr);
            }
        } else if (p.kind == Q_PICK_EMPTY) {
            empty_streak++;
        }
        q_pick_result_free(&p);
    }
    rk_argv_free(&a);
    redisFree(c);
    return NULL;
}

static void test_race_pick(void **state)
{
    new_org("race");
    static const char *skillset[] = {"", "en", "de", "en,vip", "billing"};
    srand(42);
    for (int i = 0; i < RACE_CHATS; i++) {
        char id[16];
        snprintf(id, sizeof(id), "c%d", i);
        enqueue(id, rand() % 10, skillset[rand() % 5], 0);
        atomic_store(&race_taken[i], 0);
    }
    atomic_store(&race_over_cap, 0);
    race_agent agents[RACE_AGENTS];
    pthread_t th[RACE_AGENTS];
    for (int i = 0; i < RACE_AGENTS; i++) {
        agents[i].idx = i;
        agents[i].max = 1 + i % 4;
        agents[i].picked = 0;
        snprintf(agents[i].name, sizeof(agents[i].name), "ag%d", i);
        /* every chat has at least one agent able to take it */
        snprintf(agents[i].skills, sizeof(agents[i].skills), "%s",
                 i % 2 ? "en,de,vip,billing" : "en,de");
        assert_int_equal(pthread_create(&th[i], NULL, race_thread, &agents[i]), 0);
    }
    for (int i = 0; i < RACE_AGENTS; i++)
        pthread_join(th[i], NULL);
    int total = 0;
    for (int i = 0; i < RACE_CHATS; i++) {
        if (atomic_load(&race_taken[i]) != 1)
            fail_msg("chat c%d taken %d times", i, atomic_load(&race_taken[i]));
        total++;
    }
    assert_int_equal(total, RACE_CHATS);
    assert_int_equal(atomic_load(&race_over_cap), 0);
    for (int i = 0; i < RACE_AGENTS; i++) {
        long long load = hget_ll("agentload", agents[i].name);
        assert_true(load <= agents[i].max);
    }
    assert_int_equal(position("c0").queue_length, 0);
    assert_int_equal(atomic_load(&race_order_violations), 0); /* script errors */
}

static int group_setup(void **state)
{
    rc = connect_redis();
    load_scripts(rc);
    rk_argv_init(&A, RK_NO_SCRIPT);
    return 0;
}

static int group_teardown(void **state)
{
    rk_argv_free(&A);
    /* drop this run's keys */
    char pat[64];
    snprintf(pat, sizeof(pat), "chat:{t%d-*", (int)getpid());
    redisReply *r = redisCommand(rc, "EVAL %s 0 %s",
                                 "for _,k in ipairs(redis.call('KEYS', ARGV[1])) do "
                                 "redis.call('DEL', k) end return 1",
                                 pat);
    freeReplyObject(r);
    redisFree(rc);
    return 0;
}

int main(void)
{
    const char *url = getenv("CHATD_TEST_REDIS_URL");
    if (!url || !*url) {
        printf("SKIP test_lua_queue: CHATD_TEST_REDIS_URL is not set\n");
        return 0;
    }
    if (parse_test_url(url) != 0) {
        fprintf(stderr, "bad CHATD_TEST_REDIS_URL\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_queue),
        cmocka_unit_test(test_no_skill_match),
        cmocka_unit_test(test_capacity_full),
        cmocka_unit_test(test_equal_priorities_fifo),
        cmocka_unit_test(test_duplicate_enqueue),
        cmocka_unit_test(test_untransfer),
        cmocka_unit_test(test_priority_then_fifo),
        cmocka_unit_test(test_transfer_to_skills),
        cmocka_unit_test(test_transfer_to_agent),
        cmocka_unit_test(test_transfer_queued_to_agent),
        cmocka_unit_test(test_rebuild_after_loss),
        cmocka_unit_test(test_position_eta),
        cmocka_unit_test(test_dequeue_and_front),
        cmocka_unit_test(test_race_pick),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
