/* Unit tests for gateway/csr.c: the log of what a socket was sent, the record
 * kept for a dropped socket, and how a client's offset turns it back into
 * "chatId -> last seq the client has". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/csr.h"

#define ME "identity:o1:customer:c1"

static int64_t have(const csr_recovery *r, const char *chat)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->have, chat);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

/* follows = what the log says for every chat (like chat_disconnecting does) */
static char *record(const csr_log *l)
{
    cJSON *f = cJSON_CreateObject();
    for (size_t i = 0; i < l->nchats; i++)
        cJSON_AddNumberToObject(f, l->chats[i].id, (double)l->chats[i].last);
    char *r = csr_record_json(l, "SID0000000000000000a", ME, f);
    cJSON_Delete(f);
    return r;
}

static int recover(const char *rec, const char *offset, csr_recovery *out, const char **why)
{
    return csr_recover(rec, strlen(rec), ME, offset, out, why);
}

static void test_offset_text(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b);
    csr_offset_json(&b, "c-1", 42);
    assert_string_equal(b.data, "\"c-1:42\"");
    /* appended after what is there; an id that needs escaping stays one JSON string */
    buf_putc(&b, ',');
    csr_offset_json(&b, "a\"b\\", 7);
    assert_string_equal(b.data, "\"c-1:42\",\"a\\\"b\\\\:7\"");
    buf_free(&b);
}

static void test_seed_and_note(void **state)
{
    (void)state;
    csr_log l = {0};
    assert_int_equal(csr_log_last(&l, "a"), -1);
    csr_log_seed(&l, "a", 5);
    csr_log_seed(&l, "a", 9); /* already known: no effect */
    assert_int_equal(csr_log_last(&l, "a"), 5);
    csr_log_note(&l, "a", 6);
    csr_log_note(&l, "b", 1); /* unseeded chat: starts at what it was sent */
    assert_int_equal(csr_log_last(&l, "a"), 6);
    assert_int_equal(csr_log_last(&l, "b"), 1);
    assert_int_equal(l.len, 2);
    csr_log_free(&l);
    assert_null(l.ring);
}

static void test_join_points(void **state)
{
    (void)state;
    csr_log l = {0};
    csr_log_join(&l, "a", 3); /* joined here at 3 ... */
    csr_log_join(&l, "a", 0); /* ... but another node's earlier join arrives late */
    assert_int_equal(csr_log_last(&l, "a"), 0);
    csr_log_join(&l, "a", 2); /* later points never raise it */
    assert_int_equal(csr_log_last(&l, "a"), 0);
    csr_log_note(&l, "a", 1); /* once something was sent, joins change nothing */
    csr_log_join(&l, "a", 0);
    assert_int_equal(csr_log_last(&l, "a"), 1);
    csr_log_seed(&l, "b", 5); /* what the socket has is never lowered by a join */
    csr_log_join(&l, "b", 2);
    assert_int_equal(csr_log_last(&l, "b"), 5);
    csr_log_free(&l);
}

/* Sent a5..a8 and b1..b2 interleaved; the client got up to b1. */
static void test_recover_mid_ring(void **state)
{
    (void)state;
    csr_log l = {0};
    csr_log_seed(&l, "a", 4);
    csr_log_seed(&l, "b", 0);
    csr_log_seed(&l, "c", 7); /* followed, nothing sent */
    csr_log_note(&l, "a", 5);
    csr_log_note(&l, "b", 1);
    csr_log_note(&l, "a", 6);
    csr_log_note(&l, "b", 2);
    csr_log_note(&l, "a", 7);
    char *rec = record(&l);
    csr_recovery r;
    const char *why = NULL;
    assert_int_equal(recover(rec, "b:1", &r, &why), 0);
    assert_string_equal(r.sid, "SID0000000000000000a");
    assert_int_equal(have(&r, "a"), 5);
    assert_int_equal(have(&r, "b"), 1);
    assert_int_equal(have(&r, "c"), 7);
    cJSON_Delete(r.have);

    /* got everything */
    assert_int_equal(recover(rec, "a:7", &r, &why), 0);
    assert_int_equal(have(&r, "a"), 7);
    assert_int_equal(have(&r, "b"), 2);
    cJSON_Delete(r.have);

    /* got nothing of this session (no offset, or one from an earlier session) */
    assert_int_equal(recover(rec, NULL, &r, &why), 0);
    assert_int_equal(have(&r, "a"), 4);
    assert_int_equal(have(&r, "b"), 0);
    cJSON_Delete(r.have);
    assert_int_equal(recover(rec, "zz:3", &r, &why), 0);
    assert_int_equal(have(&r, "a"), 4);
    cJSON_Delete(r.have);
    free(rec);
    csr_log_free(&l);
}

/* More than CSR_RING_MAX sent: only offsets still in the ring place the client. */
static void test_wrapped_ring(void **state)
{
    (void)state;
    csr_log l = {0};
    csr_log_seed(&l, "a", 0);
    for (int i = 1; i <= CSR_RING_MAX + 10; i++)
        csr_log_note(&l, "a", i);
    assert_true(l.wrapped);
    assert_int_equal(l.len, CSR_RING_MAX);
    char *rec = record(&l);
    csr_recovery r;
    const char *why = NULL;
    assert_int_equal(recover(rec, "a:200", &r, &why), 0);
    assert_int_equal(have(&r, "a"), 200);
    cJSON_Delete(r.have);
    /* a:5 was overwritten: it cannot be placed */
    assert_int_equal(recover(rec, "a:5", &r, &why), -1);
    assert_non_null(why);
    assert_null(r.have);
    assert_int_equal(recover(rec, NULL, &r, &why), -1);
    free(rec);
    csr_log_free(&l);
}

static void test_refusals(void **state)
{
    (void)state;
    csr_log l = {0};
    csr_log_note(&l, "a", 1);
    char *rec = record(&l);
    csr_recovery r;
    const char *why = NULL;
    assert_int_equal(csr_recover(rec, strlen(rec), "identity:o1:customer:other", "a:1", &r, &why),
                     -1);
    assert_string_equal(why, "another identity");
    assert_int_equal(recover(rec, "a:x", &r, &why), -1);
    assert_int_equal(recover(rec, ":1", &r, &why), -1);
    assert_int_equal(recover(rec, "a", &r, &why), -1);
    assert_int_equal(recover(rec, "a:99999999999999999999", &r, &why), -1);
    assert_int_equal(recover("{", "a:1", &r, &why), -1);
    assert_int_equal(recover("{\"sid\":1}", "a:1", &r, &why), -1);
    assert_int_equal(recover("[]", NULL, &r, &why), -1);
    assert_int_equal(
        recover("{\"sid\":\"s\",\"id\":\"" ME "\",\"f\":{},\"t\":[[1,2]],\"w\":false}", NULL, &r, &why),
        -1);
    /* every prefix of a valid record is refused without a crash or a leak */
    for (size_t n = 0; n < strlen(rec); n++)
        assert_int_equal(csr_recover(rec, n, ME, "a:1", &r, &why), -1);
    free(rec);
    csr_log_free(&l);
}

static void test_reasons(void **state)
{
    (void)state;
    assert_true(csr_reason_recoverable("transport close"));
    assert_true(csr_reason_recoverable("ping timeout"));
    assert_true(csr_reason_recoverable("server shutting down"));
    assert_false(csr_reason_recoverable("client namespace disconnect"));
    assert_false(csr_reason_recoverable("server namespace disconnect"));
    assert_false(csr_reason_recoverable("parse error"));
    assert_false(csr_reason_recoverable(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_offset_text),     cmocka_unit_test(test_seed_and_note),
        cmocka_unit_test(test_join_points),
        cmocka_unit_test(test_recover_mid_ring), cmocka_unit_test(test_wrapped_ring),
        cmocka_unit_test(test_refusals),        cmocka_unit_test(test_reasons),
    };
    return cmocka_run_group_tests_name("csr", tests, NULL, NULL);
}
