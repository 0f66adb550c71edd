/* queue/queue.c and store/keys.c: argv builders and reply decoders, without a
 * server. Replies are canned RESP bytes fed to a hiredis redisReader (as
 * hiredis' own test.c does), so the decoders see exactly what hiredis hands
 * the async callbacks — including error and nil replies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "presence/presence.h"
#include "queue/queue.h"
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

/* Resolves a into strings "EVALSHA SHA n k1 ... a1 ..." joined by spaces. */
static char *joined(const rk_argv *a)
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
    size_t n;
    return buf_steal(&b, &n);
}

static void expect_argv(const rk_argv *a, const char *want)
{
    char *got = joined(a);
    assert_string_equal(got, want);
    free(got);
}

/* ---- keys ---- */

static void test_keys_layout(void **state)
{
    buf_t b;
    buf_init(&b);
    rk_key(&b, "acme", "queue");
    assert_string_equal(b.data, "chat:{acme}:queue");
    buf_reset(&b);
    rk_sock(&b, "acme", "SID1");
    assert_string_equal(b.data, "chat:{acme}:sock:SID1");
    buf_reset(&b);
    rk_ident(&b, "acme", "agent:u1");
    assert_string_equal(b.data, "chat:{acme}:ident:agent:u1");
    buf_reset(&b);
    rk_timer(&b, "acme", "warn", "c9");
    assert_string_equal(b.data, "chat:{acme}:timer:warn:c9");
    buf_reset(&b);
    rk_qentry(&b, "acme", "c9");
    assert_string_equal(b.data, "chat:{acme}:qentry:c9");
    buf_reset(&b);
    rk_assign(&b, "acme", "c9");
    assert_string_equal(b.data, "chat:{acme}:assign:c9");
    buf_reset(&b);
    rk_bus_channel(&b, "acme");
    assert_string_equal(b.data, "chat:{acme}:bus");
    buf_reset(&b);
    rk_expired_channel(&b, 3);
    assert_string_equal(b.data, "__keyevent@3__:expired");
    /* characters that would break the hash tag or the parser are escaped */
    buf_reset(&b);
    rk_prefix(&b, "a{b}:c% d");
    assert_string_equal(b.data, "chat:{a%7Bb%7D%3Ac%25%20d}:");
    buf_free(&b);
}

static void test_parse_key(void **state)
{
    static const struct {
        const char *key;
        enum rk_key_kind kind;
        const char *org, *type, *id;
    } v[] = {
        {"chat:{acme}:sock:abc", RK_KEY_SOCK, "acme", NULL, "abc"},
        {"chat:{acme}:timer:warn:c1", RK_KEY_TIMER, "acme", "warn", "c1"},
        {"chat:{acme}:timer:close:c:with:colons", RK_KEY_TIMER, "acme", "close", "c:with:colons"},
        {"chat:{a%7Bb%7D%3Ac%25}:sock:s", RK_KEY_SOCK, "a{b}:c%", NULL, "s"},
        {"chat:{acme}:queue", RK_KEY_OTHER, NULL, NULL, NULL},
        {"chat:{acme}:sock:", RK_KEY_OTHER, NULL, NULL, NULL},
        {"chat:{acme}:timer:warn", RK_KEY_OTHER, NULL, NULL, NULL},
        {"chat:{acme}:timer::c1", RK_KEY_OTHER, NULL, NULL, NULL},
        {"chat:{}:sock:s", RK_KEY_OTHER, NULL, NULL, NULL},
        {"chat:{acme:sock:s", RK_KEY_OTHER, NULL, NULL, NULL},
        {"chat:{a%7}:sock:s", RK_KEY_OTHER, NULL, NULL, NULL},
        {"chat:{a%zz}:sock:s", RK_KEY_OTHER, NULL, NULL, NULL},
        {"other:{acme}:sock:s", RK_KEY_OTHER, NULL, NULL, NULL},
        {"", RK_KEY_OTHER, NULL, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        rk_parsed p;
        enum rk_key_kind k = rk_parse_key(v[i].key, strlen(v[i].key), &p);
        assert_int_equal(k, v[i].kind);
        if (k == RK_KEY_OTHER) {
            assert_null(p.org);
            continue;
        }
        assert_string_equal(p.org, v[i].org);
        if (v[i].type)
            assert_string_equal(p.type, v[i].type);
        else
            assert_null(p.type);
        assert_string_equal(p.id, v[i].id);
        rk_parsed_free(&p);
    }
    /* not NUL-terminated input: only len bytes are read */
    char raw[] = "chat:{o}:sock:s1XXXX";
    rk_parsed p;
    assert_int_equal(rk_parse_key(raw, 16, &p), RK_KEY_SOCK);
    assert_string_equal(p.id, "s1");
    rk_parsed_free(&p);
    rk_parsed_free(NULL);
}

static void test_skills_csv(void **state)
{
    buf_t b;
    buf_init(&b);
    const char *s1[] = {"sales", "billing", "", "sales", "vip"};
    assert_int_equal(rk_skills_csv(&b, s1, 5), RK_OK);
    assert_string_equal(b.data, "billing,sales,vip");
    buf_reset(&b);
    assert_int_equal(rk_skills_csv(&b, NULL, 0), RK_OK);
    assert_int_equal(b.len, 0);
    const char *s2[] = {"a,b"};
    assert_int_equal(rk_skills_csv(&b, s2, 1), RK_ERR_ARG);
    buf_free(&b);
}

static void test_argv_overflow(void **state)
{
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    for (int i = 0; i < RK_ARGV_MAX + 1; i++)
        rk_argv_argll(&a, i);
    assert_true(a.overflow);
    const char *argv[RK_ARGV_MAX + 3];
    size_t argvlen[RK_ARGV_MAX + 3];
    char num[24];
    assert_int_equal(rk_argv_resolve(&a, NULL, num, argv, argvlen, RK_ARGV_MAX + 3), -1);
    /* key after an argument is refused */
    rk_argv_reset(&a, RK_SCRIPT_QUEUE_PICK);
    rk_argv_args(&a, "x");
    rk_argv_key(&a, "k", 1);
    assert_true(a.overflow);
    /* plain command: no EVALSHA prefix */
    rk_argv_reset(&a, RK_NO_SCRIPT);
    rk_argv_args(&a, "PING");
    assert_int_equal(rk_argv_resolve(&a, NULL, num, argv, argvlen, 4), 1);
    assert_memory_equal(argv[0], "PING", 4);
    /* copies are independent */
    rk_argv c;
    rk_argv_copy(&c, &a);
    rk_argv_free(&a);
    assert_int_equal(rk_argv_resolve(&c, NULL, num, argv, argvlen, 4), 1);
    assert_memory_equal(argv[0], "PING", 4);
    rk_argv_free(&c);
    rk_argv_free(NULL);
    assert_string_equal(rk_script_name(RK_SCRIPT_QUEUE_PICK), "queue_pick");
    assert_null(rk_script_name(RK_SCRIPT__COUNT));
    assert_null(rk_script_name(-1));
}

/* ---- builders ---- */

static void test_builders(void **state)
{
    rk_argv a;
    rk_argv_init(&a, RK_NO_SCRIPT);
    assert_int_equal(q_build_enqueue(&a, "acme", "c1", 7, "en,vip", 0, "hi there", 300), RK_OK);
    assert_int_equal(a.script, RK_SCRIPT_QUEUE_ENQUEUE);
    expect_argv(&a, "EVALSHA " SHA " 8 chat:{acme}:queue chat:{acme}:qentry:c1 chat:{acme}:qsigs "
                    "chat:{acme}:qseq chat:{acme}:status chat:{acme}:agentload "
                    "chat:{acme}:agentmax chat:{acme}:aht chat:{acme}: c1 7 en,vip 0 hi there 300");
    assert_int_equal(q_build_pick(&a, "acme", "u1", 3, "en"), RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 4 chat:{acme}:queue chat:{acme}:qsigs chat:{acme}:agentload "
                    "chat:{acme}:agentmax chat:{acme}: u1 3 en");
    assert_int_equal(q_build_dequeue(&a, "acme", "c1"), RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 3 chat:{acme}:queue chat:{acme}:qentry:c1 chat:{acme}:qsigs "
                    "chat:{acme}: c1");
    assert_int_equal(q_build_transfer_skills(&a, "acme", "c1", "de", 2, 1000, "p", 60), RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 9 chat:{acme}:queue chat:{acme}:qentry:c1 chat:{acme}:qsigs "
                    "chat:{acme}:qseq chat:{acme}:status chat:{acme}:agentload "
                    "chat:{acme}:agentmax chat:{acme}:aht chat:{acme}:assign:c1 chat:{acme}: c1 "
                    "skills de 2 1000 p 60");
    assert_int_equal(q_build_transfer_agent(&a, "acme", "c1", "u2", 0, 0, 60), RK_OK);
    char *s = joined(&a);
    assert_non_null(strstr(s, " chat:{acme}: c1 agent u2 0 0  60"));
    free(s);
    assert_int_equal(q_build_requeue_front(&a, "acme", "c1", 4, 5, "x", 60), RK_OK);
    s = joined(&a);
    assert_non_null(strstr(s, " c1 front x 4 5  60"));
    free(s);
    assert_int_equal(q_build_position(&a, "acme", "c1", 300), RK_OK);
    assert_int_equal(a.numkeys, 6);
    assert_int_equal(q_build_snapshot(&a, "acme", 300, 0, 50), RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 5 chat:{acme}:queue chat:{acme}:status chat:{acme}:agentload "
                    "chat:{acme}:agentmax chat:{acme}:aht 300 0 50");
    const char *kinds[] = {"warn", "close"};
    assert_int_equal(q_build_release(&a, "acme", "c1", true, 300, kinds, 2), RK_OK);
    expect_argv(&a, "EVALSHA " SHA " 10 chat:{acme}:queue chat:{acme}:qentry:c1 chat:{acme}:qsigs "
                    "chat:{acme}:agentload chat:{acme}:assign:c1 chat:{acme}:aht "
                    "chat:{acme}:ahtwin chat:{acme}:timers chat:{acme}:timer:warn:c1 "
                    "chat:{acme}:timer:close:c1 chat:{acme}: c1 close 300 warn close");
    assert_int_equal(q_build_release(&a, "acme", "c1", false, 300, NULL, 0), RK_OK);
    s = joined(&a);
    assert_non_null(strstr(s, " c1 release 300"));
    free(s);

    /* bad arguments */
    assert_int_equal(q_build_enqueue(&a, "acme", "c1", 10, "", 0, "", 300), RK_ERR_ARG);
    assert_int_equal(q_build_enqueue(&a, "acme", "c1", -1, "", 0, "", 300), RK_ERR_ARG);
    assert_int_equal(q_build_enqueue(&a, "", "c1", 1, "", 0, "", 300), RK_ERR_ARG);
    assert_int_equal(q_build_enqueue(&a, "acme", NULL, 1, "", 0, "", 300), RK_ERR_ARG);
    assert_int_equal(q_build_pick(&a, "acme", "", 3, ""), RK_ERR_ARG);
    assert_int_equal(q_build_transfer_agent(&a, "acme", "c1", "", 0, 0, 60), RK_ERR_ARG);
    assert_int_equal(q_build_snapshot(&a, "acme", 300, -1, 5), RK_ERR_ARG);
    assert_int_equal(q_build_release(&a, "acme", "c1", true, 300, kinds, 9), RK_ERR_ARG);
    rk_argv_free(&a);
}

/* ---- decoders ---- */

static void test_decode_enqueue(void **state)
{
    redisReply *r = parse("*8\r\n:1\r\n:3\r\n:600\r\n:2\r\n:300\r\n:4\r\n:7\r\n:1700000000123\r\n");
    q_enqueue_result e;
    assert_int_equal(q_decode_enqueue(r, &e), RK_OK);
    assert_true(e.created);
    assert_int_equal(e.eta.position, 3);
    assert_int_equal(e.eta.eta_s, 600);
    assert_int_equal(e.eta.available, 2);
    assert_int_equal(e.eta.avg_handle_s, 300);
    assert_int_equal(e.eta.queue_length, 4);
    assert_int_equal(e.priority, 7);
    assert_int_equal(e.enqueued_at_ms, 1700000000123LL);
    freeReplyObject(r);
}

/* Replies every decoder must reject without touching its output. */
static void test_decode_errors(void **state)
{
    static const struct {
        const char *resp;
        enum rk_status st;
    } v[] = {
        {"-NOSCRIPT No matching script. Please use EVAL.\r\n", RK_ERR_REDIS},
        {"-ERR Error running script\r\n", RK_ERR_REDIS},
        {"$-1\r\n", RK_ERR_SHAPE},
        {"*-1\r\n", RK_ERR_SHAPE},
        {"*0\r\n", RK_ERR_SHAPE},
        {":1\r\n", RK_ERR_SHAPE},
        {"+OK\r\n", RK_ERR_SHAPE},
        {"*2\r\n:1\r\n:2\r\n", RK_ERR_SHAPE},
        {"*10\r\n$2\r\nok\r\n$-1\r\n:1\r\n:2\r\n$0\r\n\r\n$0\r\n\r\n:1\r\n:3\r\n:0\r\n:5\r\n",
         RK_ERR_SHAPE}, /* nil chat id */
        {"*3\r\n$4\r\nnope\r\n:1\r\n:3\r\n", RK_ERR_SHAPE},
        {"*8\r\n$1\r\nx\r\n:3\r\n:600\r\n:2\r\n:300\r\n:4\r\n:7\r\n:1\r\n", RK_ERR_SHAPE},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        redisReply *r = parse(v[i].resp);
        q_enqueue_result e = {.priority = -42};
        q_pick_result p = {.priority = -42};
        q_dequeue_result d = {.queue_length = -42};
        q_transfer_result t = {.priority = -42};
        q_eta pos = {.position = -42};
        q_snapshot s = {.n = 42};
        q_release_result rel = {.handled_ms = -42};
        enum rk_status st;
        st = q_decode_enqueue(r, &e);
        assert_true(st != RK_OK);
        assert_int_equal(e.priority, -42);
        st = q_decode_pick(r, &p);
        if (i < 2)
            assert_int_equal(st, v[i].st);
        assert_true(st != RK_OK);
        assert_int_equal(p.priority, -42);
        assert_true(q_decode_dequeue(r, &d) != RK_OK || i == 7);
        assert_true(q_decode_transfer(r, &t) != RK_OK);
        assert_int_equal(t.priority, -42);
        assert_true(q_decode_position(r, &pos) != RK_OK);
        assert_true(q_decode_snapshot(r, &s) != RK_OK || i >= 8);
        if (s.n != 42)
            q_snapshot_free(&s);
        assert_true(q_decode_release(r, &rel) != RK_OK);
        assert_int_equal(rel.handled_ms, -42);
        freeReplyObject(r);
    }
    /* no reply at all (connection lost) */
    q_pick_result p;
    assert_int_equal(q_decode_pick(NULL, &p), RK_ERR_UNAVAILABLE);
    q_eta e;
    assert_int_equal(q_decode_position(NULL, &e), RK_ERR_UNAVAILABLE);
    assert_string_equal(rk_strerror(RK_ERR_UNAVAILABLE), "redis unavailable");
}

static void test_decode_pick(void **state)
{
    redisReply *r = parse("*10\r\n$2\r\nok\r\n$3\r\nc42\r\n:8\r\n:1700000000000\r\n$6\r\nen,vip\r\n"
                          "$5\r\nhello\r\n:2\r\n:3\r\n:17\r\n:1700000005000\r\n");
    q_pick_result p;
    assert_int_equal(q_decode_pick(r, &p), RK_OK);
    assert_int_equal(p.kind, Q_PICK_OK);
    assert_string_equal(p.chat_id, "c42");
    assert_int_equal(p.priority, 8);
    assert_string_equal(p.skills, "en,vip");
    assert_string_equal(p.preview, "hello");
    assert_int_equal(p.load, 2);
    assert_int_equal(p.max_chats, 3);
    assert_int_equal(p.queue_length, 17);
    assert_int_equal(p.assigned_at_ms, 1700000005000LL);
    q_pick_result_free(&p);
    q_pick_result_free(&p); /* idempotent */
    q_pick_result_free(NULL);
    freeReplyObject(r);

    r = parse("*3\r\n$5\r\nempty\r\n:1\r\n:3\r\n");
    assert_int_equal(q_decode_pick(r, &p), RK_OK);
    assert_int_equal(p.kind, Q_PICK_EMPTY);
    assert_null(p.chat_id);
    assert_int_equal(p.load, 1);
    freeReplyObject(r);
    r = parse("*3\r\n$4\r\nfull\r\n:3\r\n:3\r\n");
    assert_int_equal(q_decode_pick(r, &p), RK_OK);
    assert_int_equal(p.kind, Q_PICK_FULL);
    freeReplyObject(r);
    /* "ok" but truncated */
    r = parse("*3\r\n$2\r\nok\r\n:3\r\n:3\r\n");
    assert_int_equal(q_decode_pick(r, &p), RK_ERR_SHAPE);
    freeReplyObject(r);
}

static void test_decode_transfer(void **state)
{
    q_transfer_result t;
    redisReply *r = parse("*9\r\n$6\r\nqueued\r\n:2\r\n:300\r\n:1\r\n:300\r\n:5\r\n:6\r\n"
                          ":1700000000000\r\n$2\r\nu1\r\n");
    assert_int_equal(q_decode_transfer(r, &t), RK_OK);
    assert_int_equal(t.kind, Q_TRANSFER_QUEUED);
    assert_int_equal(t.eta.position, 2);
    assert_int_equal(t.priority, 6);
    assert_int_equal(t.enqueued_at_ms, 1700000000000LL);
    assert_string_equal(t.old_agent, "u1");
    q_transfer_result_free(&t);
    freeReplyObject(r);

    r = parse("*3\r\n$8\r\nassigned\r\n$2\r\nu2\r\n$0\r\n\r\n");
    assert_int_equal(q_decode_transfer(r, &t), RK_OK);
    assert_int_equal(t.kind, Q_TRANSFER_ASSIGNED);
    assert_string_equal(t.target, "u2");
    assert_string_equal(t.old_agent, "");
    q_transfer_result_free(&t);
    freeReplyObject(r);

    static const struct {
        const char *why;
        enum q_refusal want;
    } refusals[] = {{"offline", Q_REFUSED_OFFLINE},
                    {"away", Q_REFUSED_AWAY},
                    {"full", Q_REFUSED_FULL},
                    {"same", Q_REFUSED_SAME}};
    for (size_t i = 0; i < 4; i++) {
        char resp[64];
        snprintf(resp, sizeof(resp), "*2\r\n$7\r\nrefused\r\n$%zu\r\n%s\r\n",
                 strlen(refusals[i].why), refusals[i].why);
        r = parse(resp);
        assert_int_equal(q_decode_transfer(r, &t), RK_OK);
        assert_int_equal(t.kind, Q_TRANSFER_REFUSED);
        assert_int_equal(t.refusal, refusals[i].want);
        assert_string_equal(q_refusal_str(t.refusal), refusals[i].why);
        q_transfer_result_free(&t);
        freeReplyObject(r);
    }
    r = parse("*2\r\n$7\r\nrefused\r\n$5\r\nbored\r\n");
    assert_int_equal(q_decode_transfer(r, &t), RK_ERR_SHAPE);
    freeReplyObject(r);
}

static void test_decode_misc(void **state)
{
    redisReply *r = parse("*2\r\n:1\r\n:9\r\n");
    q_dequeue_result d;
    assert_int_equal(q_decode_dequeue(r, &d), RK_OK);
    assert_true(d.removed);
    assert_int_equal(d.queue_length, 9);
    freeReplyObject(r);

    r = parse("*5\r\n:5\r\n:900\r\n:2\r\n:300\r\n:12\r\n");
    q_eta e;
    assert_int_equal(q_decode_position(r, &e), RK_OK);
    assert_int_equal(e.position, 5);
    assert_int_equal(e.eta_s, 900);
    assert_int_equal(e.eta_s, q_eta_seconds(5, 2, 300));
    freeReplyObject(r);

    r = parse("*5\r\n:0\r\n:120\r\n:2\r\n$2\r\nc1\r\n$2\r\nc2\r\n");
    q_snapshot s;
    assert_int_equal(q_decode_snapshot(r, &s), RK_OK);
    assert_int_equal(s.available, 0);
    assert_int_equal(s.avg_handle_s, 120);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.chat_ids[1], "c2");
    q_snapshot_free(&s);
    q_snapshot_free(NULL);
    freeReplyObject(r);
    r = parse("*3\r\n:0\r\n:120\r\n:0\r\n"); /* empty queue */
    assert_int_equal(q_decode_snapshot(r, &s), RK_OK);
    assert_int_equal(s.n, 0);
    q_snapshot_free(&s);
    freeReplyObject(r);

    r = parse("*4\r\n:0\r\n$2\r\nu1\r\n:125000\r\n:125\r\n");
    q_release_result rel;
    assert_int_equal(q_decode_release(r, &rel), RK_OK);
    assert_false(rel.was_queued);
    assert_string_equal(rel.agent, "u1");
    assert_int_equal(rel.handled_ms, 125000);
    assert_int_equal(rel.avg_handle_s, 125);
    q_release_result_free(&rel);
    freeReplyObject(r);

    /* integers may arrive as bulk strings; garbage may not */
    r = parse("*2\r\n$1\r\n1\r\n$2\r\n10\r\n");
    assert_int_equal(q_decode_dequeue(r, &d), RK_OK);
    assert_int_equal(d.queue_length, 10);
    freeReplyObject(r);
    r = parse("*2\r\n$2\r\n1x\r\n$2\r\n10\r\n");
    assert_int_equal(q_decode_dequeue(r, &d), RK_ERR_SHAPE);
    freeReplyObject(r);

    assert_int_equal(q_eta_seconds(0, 3, 300), 0);
    assert_int_equal(q_eta_seconds(1, 0, 300), 300);
    assert_int_equal(q_eta_seconds(7, 3, 100), 300);
    assert_int_equal(q_eta_seconds(6, 3, 100), 200);
}

/* ---- seeded random replies: every decoder, no crash, no leak ---- */

static unsigned rnd_state;
static unsigned rnd(void)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 16) & 0x7fff;
}

static void gen(buf_t *b, int depth)
{
    static const char *words[] = {"ok",     "full",   "empty",   "queued", "assigned", "refused",
                                  "online", "away",   "offline", "0",      "12",       "-3",
                                  "",       "agent:x", "warn",   "99999999999999999999"};
    switch (rnd() % (depth >= 3 ? 4 : 6)) { /* hiredis nests at most 7 levels */
    case 0:
        buf_printf(b, ":%d\r\n", (int)(rnd() % 20) - 5);
        break;
    case 1: {
        const char *w = words[rnd() % (sizeof(words) / sizeof(words[0]))];
        buf_printf(b, "$%zu\r\n%s\r\n", strlen(w), w);
        break;
    }
    case 2:
        buf_puts(b, rnd() % 2 ? "$-1\r\n" : "*-1\r\n");
        break;
    case 3:
        buf_puts(b, rnd() % 2 ? "-ERR x\r\n" : "+OK\r\n");
        break;
    default: {
        int n = (int)(rnd() % 12);
        buf_printf(b, "*%d\r\n", n);
        for (int i = 0; i < n; i++)
            gen(b, depth + 1);
        break;
    }
    }
}

static void test_random_replies(void **state)
{
    rnd_state = 20261122;
    for (int iter = 0; iter < 20000; iter++) {
        buf_t b;
        buf_init(&b);
        gen(&b, 0);
        redisReply *r = parse(b.data);
        buf_free(&b);
        q_enqueue_result e;
        q_decode_enqueue(r, &e);
        q_pick_result p;
        if (q_decode_pick(r, &p) == RK_OK)
            q_pick_result_free(&p);
        q_dequeue_result d;
        q_decode_dequeue(r, &d);
        q_transfer_result t;
        if (q_decode_transfer(r, &t) == RK_OK)
            q_transfer_result_free(&t);
        q_eta pos;
        q_decode_position(r, &pos);
        q_snapshot sn;
        if (q_decode_snapshot(r, &sn) == RK_OK)
            q_snapshot_free(&sn);
        q_release_result rel;
        if (q_decode_release(r, &rel) == RK_OK)
            q_release_result_free(&rel);
        pres_add_result pa;
        pres_decode_add(r, &pa);
        bool alive;
        pres_decode_heartbeat(r, &alive);
        pres_remove_result pr;
        pres_decode_remove(r, &pr);
        pres_expired_result pe;
        if (pres_decode_expired(r, &pe) == RK_OK)
            pres_expired_result_free(&pe);
        pres_sweep_result ps;
        if (pres_decode_sweep(r, &ps) == RK_OK)
            pres_sweep_result_free(&ps);
        pres_status_result st;
        pres_decode_status(r, &st);
        long long dl[3];
        pres_timer_decode_arm(r, dl, 3);
        long long n;
        pres_timer_decode_stop(r, &n);
        pres_timer_claim cl;
        pres_timer_decode_claim(r, &cl);
        pres_timer_due du;
        if (pres_timer_decode_due(r, &du) == RK_OK)
            pres_timer_due_free(&du);
        freeReplyObject(r);
    }
    /* random key names for the expired-event parser */
    for (int iter = 0; iter < 20000; iter++) {
        static const char alphabet[] = "chat:{}%7Bsocktimerwa:rn0123";
        char key[40];
        size_t len = rnd() % sizeof(key);
        size_t i = 0;
        if (rnd() % 2 && len >= 6) {
            memcpy(key, "chat:{", 6);
            i = 6;
        }
        for (; i < len; i++)
            key[i] = alphabet[rnd() % (sizeof(alphabet) - 1)];
        rk_parsed pk;
        if (rk_parse_key(key, len, &pk) != RK_KEY_OTHER) {
            assert_non_null(pk.org);
            assert_non_null(pk.id);
            rk_parsed_free(&pk);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_layout),     cmocka_unit_test(test_parse_key),
        cmocka_unit_test(test_skills_csv),      cmocka_unit_test(test_argv_overflow),
        cmocka_unit_test(test_builders),        cmocka_unit_test(test_decode_enqueue),
        cmocka_unit_test(test_decode_errors),   cmocka_unit_test(test_decode_pick),
        cmocka_unit_test(test_decode_transfer), cmocka_unit_test(test_decode_misc),
        cmocka_unit_test(test_random_replies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
