/* Presence and timer scripts (lua/presence_*.lua, lua/timer_*.lua) against a
 * real Redis, through presence/presence.c and the hiredis sync API; also the
 * real keyspace "expired" notification of a socket key and of a timer key.
 * Needs CHATD_TEST_REDIS_URL (skipped if unset). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/xalloc.h"
#include "presence/presence.h"
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

static redisContext *rc, *rc2; /* two "nodes" */
static rk_argv A;

static void new_org(const char *name)
{
    static int n;
    snprintf(org, sizeof(org), "t%d-%s-%d", (int)getpid(), name, n++);
}

static pres_add_result add_on(redisContext *c, const char *sid, const char *type, const char *id,
                              long long ttl)
{
    pres_add_result r;
    assert_int_equal(pres_build_add(&A, org, sid, type, id, ttl, "n1", 3), RK_OK);
    redisReply *x = ev(c, &A);
    assert_int_equal(pres_decode_add(x, &r), RK_OK);
    freeReplyObject(x);
    return r;
}

static pres_add_result add(const char *sid, const char *id, long long ttl)
{
    return add_on(rc, sid, "agent", id, ttl);
}

static pres_remove_result del(const char *sid, const char *id)
{
    pres_remove_result r;
    assert_int_equal(pres_build_remove(&A, org, sid, "agent", id), RK_OK);
    redisReply *x = ev(rc, &A);
    assert_int_equal(pres_decode_remove(x, &r), RK_OK);
    freeReplyObject(x);
    return r;
}

static pres_status_result set_status(const char *id, const char *st)
{
    pres_status_result r;
    assert_int_equal(pres_build_status(&A, org, "agent", id, st), RK_OK);
    redisReply *x = ev(rc, &A);
    assert_int_equal(pres_decode_status(x, &r), RK_OK);
    freeReplyObject(x);
    return r;
}

static pres_expired_result expired_on(redisContext *c, const char *sid)
{
    pres_expired_result r;
    assert_int_equal(pres_build_expired(&A, org, sid), RK_OK);
    redisReply *x = ev(c, &A);
    assert_int_equal(pres_decode_expired(x, &r), RK_OK);
    freeReplyObject(x);
    return r;
}

static pres_timer_claim claim_on(redisContext *c, const char *kind, const char *chat)
{
    pres_timer_claim r;
    assert_int_equal(pres_timer_build_claim(&A, org, kind, chat), RK_OK);
    redisReply *x = ev(c, &A);
    assert_int_equal(pres_timer_decode_claim(x, &r), RK_OK);
    freeReplyObject(x);
    return r;
}

static void arm(const char *chat, long long warn_ms, long long close_ms, long long dl[2])
{
    pres_timer_spec t[2] = {{"warn", warn_ms}, {"close", close_ms}};
    assert_int_equal(pres_timer_build_arm(&A, org, chat, t, 2), RK_OK);
    redisReply *x = ev(rc, &A);
    assert_int_equal(pres_timer_decode_arm(x, dl, 2), RK_OK);
    freeReplyObject(x);
}

static bool status_present(const char *ident)
{
    buf_t k;
    buf_init(&k);
    rk_key(&k, org, "status");
    redisReply *x = redisCommand(rc, "HEXISTS %s %s", k.data, ident);
    bool v = x->integer == 1;
    freeReplyObject(x);
    buf_free(&k);
    return v;
}

/* Adds E and x to notify-keyspace-events without clobbering other flags
 * (what redis.c does at start). */
static void ensure_notify(void)
{
    redisReply *x = redisCommand(rc, "CONFIG GET notify-keyspace-events");
    char flags[64] = "";
    if (x && x->type == REDIS_REPLY_ARRAY && x->elements == 2)
        snprintf(flags, sizeof(flags) - 3, "%s", x->element[1]->str);
    freeReplyObject(x);
    if (!strchr(flags, 'E'))
        strcat(flags, "E");
    if (!strchr(flags, 'x') && !strchr(flags, 'A'))
        strcat(flags, "x");
    freeReplyObject(redisCommand(rc, "CONFIG SET notify-keyspace-events %s", flags));
}

static void msleep(int ms)
{
    usleep((useconds_t)ms * 1000);
}

/* ---- presence ---- */

static void test_presence_several_sockets(void **state)
{
    new_org("multi");
    pres_add_result a = add("s1", "bob", 60000);
    assert_true(a.became_online);
    assert_int_equal(a.status, PRES_ONLINE);
    a = add("s2", "bob", 60000);
    assert_false(a.became_online);
    assert_int_equal(a.sockets, 2);
    a = add("s3", "bob", 60000);
    assert_false(a.became_online);
    assert_int_equal(a.sockets, 3);
    /* duplicate add of the same socket is harmless */
    a = add("s3", "bob", 60000);
    assert_false(a.became_online);
    assert_int_equal(a.sockets, 3);

    pres_remove_result r = del("s1", "bob");
    assert_false(r.went_offline);
    assert_int_equal(r.remaining, 2);
    r = del("s3", "bob");
    assert_false(r.went_offline);
    assert_true(status_present("agent:bob"));
    r = del("s2", "bob");
    assert_true(r.went_offline);
    assert_int_equal(r.remaining, 0);
    assert_false(status_present("agent:bob"));
    /* removing again: nothing happens, offline is reported once */
    r = del("s2", "bob");
    assert_false(r.went_offline);

    /* customers are tracked the same way under their own identity */
    a = add_on(rc, "c1", "customer", "ann@example.com", 60000);
    assert_true(a.became_online);
}

static void test_presence_away(void **state)
{
    new_org("away");
    pres_status_result st = set_status("amy", "away");
    assert_false(st.changed);
    assert_int_equal(st.status, PRES_OFFLINE); /* no socket */
    add("s1", "amy", 60000);
    st = set_status("amy", "away");
    assert_true(st.changed);
    assert_int_equal(st.status, PRES_AWAY);
    st = set_status("amy", "away");
    assert_false(st.changed);
    pres_add_result a = add("s2", "amy", 60000); /* a new tab keeps away */
    assert_false(a.became_online);
    assert_int_equal(a.status, PRES_AWAY);
    st = set_status("amy", "online");
    assert_true(st.changed);
    assert_int_equal(st.status, PRES_ONLINE);
    del("s1", "amy");
    del("s2", "amy");
    a = add("s3", "amy", 60000); /* back after offline: online again */
    assert_true(a.became_online);
    assert_int_equal(a.status, PRES_ONLINE);
}

static void test_presence_heartbeat(void **state)
{
    new_org("hb");
    add("s1", "hb", 200);
    bool alive = false;
    assert_int_equal(pres_build_heartbeat(&A, org, "s1", 60000), RK_OK);
    redisReply *x = ev(rc, &A);
    assert_int_equal(pres_decode_heartbeat(x, &alive), RK_OK);
    freeReplyObject(x);
    assert_true(alive);
    msleep(300); /* the refreshed TTL keeps it */
    pres_expired_result e = expired_on(rc, "s1");
    assert_false(e.acted);
    pres_expired_result_free(&e);

    del("s1", "hb");
    assert_int_equal(pres_build_heartbeat(&A, org, "s1", 60000), RK_OK);
    x = ev(rc, &A); /* heartbeat again after removal: unknown */
    assert_int_equal(pres_decode_heartbeat(x, &alive), RK_OK);
    freeReplyObject(x);
    assert_false(alive);
}

/* Waits for one message on a subscribed context; returns the key or NULL. */
static char *next_expired(redisContext *sub, int timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisSetTimeout(sub, tv);
    redisReply *m = NULL;
    if (redisGetReply(sub, (void **)&m) != REDIS_OK || !m)
        return NULL;
    char *key = NULL;
    if (m->type == REDIS_REPLY_ARRAY && m->elements == 3 && m->element[2]->type == REDIS_REPLY_STRING)
        key = xstrndup(m->element[2]->str, m->element[2]->len);
    freeReplyObject(m);
    return key;
}

static void test_presence_expiry_once(void **state)
{
    new_org("expire");
    /* a node subscribed to expired events, as chatd is */
    ensure_notify();
    redisContext *sub = connect_redis();
    char chan[64];
    snprintf(chan, sizeof(chan), "__keyevent@%d__:expired", redis_db_num);
    redisReply *x = redisCommand(sub, "SUBSCRIBE %s", chan);
    freeReplyObject(x);

    add("s1", "eve", 100);   /* this node "dies": its socket key expires */
    add("s2", "eve", 60000); /* another tab elsewhere stays */

    char *key = NULL;
    rk_parsed p = {0};
    for (int i = 0; i < 50; i++) { /* other runs' keys may expire too */
        free(key);
        key = next_expired(sub, 3000);
        assert_non_null(key);
        if (rk_parse_key(key, strlen(key), &p) == RK_KEY_SOCK && strcmp(p.org, org) == 0)
            break;
        rk_parsed_free(&p);
    }
    assert_int_equal(p.kind, RK_KEY_SOCK);
    assert_string_equal(p.org, org);
    assert_string_equal(p.id, "s1");

    /* both nodes react to the event: exactly one acts */
    pres_expired_result e1 = expired_on(rc, p.id);
    pres_expired_result e2 = expired_on(rc2, p.id);
    assert_int_equal((int)e1.acted + (int)e2.acted, 1);
    pres_expired_result *act = e1.acted ? &e1 : &e2;
    assert_string_equal(act->identity, "agent:eve");
    assert_false(act->went_offline); /* s2 still there */
    assert_int_equal(act->remaining, 1);
    pres_expired_result_free(&e1);
    pres_expired_result_free(&e2);
    rk_parsed_free(&p);
    free(key);

    /* the last socket expires: offline, once */
    assert_int_equal(pres_build_heartbeat(&A, org, "s2", 50), RK_OK);
    freeReplyObject(ev(rc, &A));
    msleep(150);
    e1 = expired_on(rc2, "s2");
    e2 = expired_on(rc, "s2");
    assert_true(e1.acted);
    assert_true(e1.went_offline);
    assert_false(e2.acted);
    assert_false(e2.went_offline);
    pres_expired_result_free(&e1);
    pres_expired_result_free(&e2);
    assert_false(status_present("agent:eve"));
    redisFree(sub);
}

static void test_presence_sweep(void **state)
{
    new_org("sweep");
    add("s1", "x1", 50);
    add("s2", "x1", 50);
    add("s3", "x2", 50);
    add("s4", "x3", 60000);
    msleep(150);
    int offline = 0, removed = 0;
    char cursor[32] = "0";
    do {
        pres_sweep_result s;
        assert_int_equal(pres_build_sweep(&A, org, cursor, 100), RK_OK);
        redisReply *x = ev(rc, &A);
        assert_int_equal(pres_decode_sweep(x, &s), RK_OK);
        freeReplyObject(x);
        for (size_t i = 0; i < s.n; i++) {
            removed++;
            offline += s.went_offline[i];
        }
        snprintf(cursor, sizeof(cursor), "%s", s.cursor);
        pres_sweep_result_free(&s);
    } while (strcmp(cursor, "0") != 0);
    assert_int_equal(removed, 3);
    assert_int_equal(offline, 2); /* x1 and x2, each once */
    assert_false(status_present("agent:x1"));
    assert_true(status_present("agent:x3"));
    /* a late expired event after the sweep does nothing */
    pres_expired_result e = expired_on(rc, "s1");
    assert_false(e.acted);
    pres_expired_result_free(&e);
}

/* ---- timers ---- */

static void test_timer_claim_once(void **state)
{
    new_org("timer");
    long long dl[2];
    arm("c1", 100, 400, dl);
    assert_true(dl[1] - dl[0] == 300);
    pres_timer_claim c = claim_on(rc, "warn", "c1");
    assert_false(c.claimed); /* deadline not reached */
    msleep(150);
    pres_timer_claim c1 = claim_on(rc, "warn", "c1");
    pres_timer_claim c2 = claim_on(rc2, "warn", "c1");
    assert_int_equal((int)c1.claimed + (int)c2.claimed, 1);
    assert_int_equal(c1.claimed ? c1.deadline_ms : c2.deadline_ms, dl[0]);
    c = claim_on(rc, "close", "c1");
    assert_false(c.claimed);

    /* a message resets both timers: the old close deadline no longer fires */
    long long dl2[2];
    arm("c1", 100, 200, dl2);
    assert_true(dl2[0] > dl[0]);
    msleep(250);
    c1 = claim_on(rc2, "close", "c1");
    c2 = claim_on(rc, "close", "c1");
    assert_true(c1.claimed);
    assert_false(c2.claimed);
    assert_int_equal(c1.deadline_ms, dl2[1]);
}

static void test_timer_reset_between(void **state)
{
    new_org("reset");
    long long dl[2];
    arm("c1", 100, 1000, dl);
    msleep(120); /* warn key expired, notification "in flight" */
    arm("c1", 100, 1000, dl); /* a message arrives before anyone claimed */
    pres_timer_claim c = claim_on(rc, "warn", "c1");
    assert_false(c.claimed); /* re-armed: the old expiry is stale */

    const char *kinds[] = {"warn", "close"};
    assert_int_equal(pres_timer_build_stop(&A, org, "c1", kinds, 2), RK_OK);
    redisReply *x = ev(rc, &A);
    long long stopped;
    assert_int_equal(pres_timer_decode_stop(x, &stopped), RK_OK);
    freeReplyObject(x);
    assert_int_equal(stopped, 2);
    msleep(150);
    c = claim_on(rc, "warn", "c1");
    assert_false(c.claimed);
}

static void test_timer_reconciler(void **state)
{
    new_org("due");
    long long dl[2];
    arm("c1", 30, 60, dl);
    arm("c2", 30, 100000, dl);
    /* nobody listens (every node down) */
    msleep(150);
    pres_timer_due d;
    assert_int_equal(pres_timer_build_due(&A, org, 100, 0), RK_OK);
    redisReply *x = ev(rc, &A);
    assert_int_equal(pres_timer_decode_due(x, &d), RK_OK);
    freeReplyObject(x);
    assert_int_equal(d.n, 3); /* c1 warn, c2 warn, c1 close */
    int close_c1 = 0;
    for (size_t i = 0; i < d.n; i++)
        if (strcmp(d.items[i].kind, "close") == 0 && strcmp(d.items[i].chat_id, "c1") == 0)
            close_c1++;
    assert_int_equal(close_c1, 1);
    pres_timer_due_free(&d);
    x = ev(rc2, &A); /* second node: nothing left */
    assert_int_equal(pres_timer_decode_due(x, &d), RK_OK);
    freeReplyObject(x);
    assert_int_equal(d.n, 0);
    pres_timer_due_free(&d);
    /* a late notification for a reconciled timer is ignored */
    pres_timer_claim c = claim_on(rc, "close", "c1");
    assert_false(c.claimed);
    /* grace: a timer just due is left to the notification path */
    arm("c3", 20, 100000, dl);
    msleep(60);
    assert_int_equal(pres_timer_build_due(&A, org, 100, 5000), RK_OK);
    x = ev(rc, &A);
    assert_int_equal(pres_timer_decode_due(x, &d), RK_OK);
    freeReplyObject(x);
    assert_int_equal(d.n, 0);
    pres_timer_due_free(&d);
}

static void test_timer_keyspace_event(void **state)
{
    new_org("tev");
    ensure_notify();
    redisContext *sub = connect_redis();
    char chan[64];
    snprintf(chan, sizeof(chan), "__keyevent@%d__:expired", redis_db_num);
    freeReplyObject(redisCommand(sub, "SUBSCRIBE %s", chan));
    long long dl[2];
    arm("chat-9", 50, 100000, dl);
    rk_parsed p = {0};
    char *key = NULL;
    for (int i = 0; i < 50; i++) {
        free(key);
        key = next_expired(sub, 3000);
        assert_non_null(key);
        if (rk_parse_key(key, strlen(key), &p) == RK_KEY_TIMER && strcmp(p.org, org) == 0)
            break;
        rk_parsed_free(&p);
    }
    assert_int_equal(p.kind, RK_KEY_TIMER);
    assert_string_equal(p.type, "warn");
    assert_string_equal(p.id, "chat-9");
    pres_timer_claim c = claim_on(rc, p.type, p.id);
    assert_true(c.claimed);
    rk_parsed_free(&p);
    free(key);
    redisFree(sub);
}

static int group_setup(void **state)
{
    rc = connect_redis();
    rc2 = connect_redis();
    load_scripts(rc);
    rk_argv_init(&A, RK_NO_SCRIPT);
    return 0;
}

static int group_teardown(void **state)
{
    rk_argv_free(&A);
    char pat[64];
    snprintf(pat, sizeof(pat), "chat:{t%d-*", (int)getpid());
    freeReplyObject(redisCommand(rc, "EVAL %s 0 %s",
                                 "for _,k in ipairs(redis.call('KEYS', ARGV[1])) do "
                                 "redis.call('DEL', k) end return 1",
                                 pat));
    redisFree(rc);
    redisFree(rc2);
    return 0;
}

int main(void)
{
    const char *url = getenv("CHATD_TEST_REDIS_URL");
    if (!url || !*url) {
        printf("SKIP test_lua_presence: CHATD_TEST_REDIS_URL is not set\n");
        return 0;
    }
    if (parse_test_url(url) != 0) {
        fprintf(stderr, "bad CHATD_TEST_REDIS_URL\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presence_several_sockets),
        cmocka_unit_test(test_presence_away),
        cmocka_unit_test(test_presence_heartbeat),
        cmocka_unit_test(test_presence_expiry_once),
        cmocka_unit_test(test_presence_sweep),
        cmocka_unit_test(test_timer_claim_once),
        cmocka_unit_test(test_timer_reset_between),
        cmocka_unit_test(test_timer_reconciler),
        cmocka_unit_test(test_timer_keyspace_event),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
