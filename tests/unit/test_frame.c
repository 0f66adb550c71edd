/* Unit tests for gateway/frame.c: refcounted outbound frames with GW_PRE
 * headroom and a trailing NUL. Run the sanitizer build to prove the last unref
 * frees and nothing before it does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/frame.h"

static void test_new(void **state)
{
    (void)state;
    gw_frame *f = frame_new("4hello", 6, false);
    assert_non_null(f);
    assert_int_equal(f->refs, 1);
    assert_false(f->binary);
    assert_int_equal(f->len, 6);
    assert_memory_equal(frame_data(f), "4hello", 6);
    assert_int_equal(frame_data(f)[6], '\0');
    assert_ptr_equal(frame_data(f), f->storage + GW_PRE);
    /* the headroom is writable (the WebSocket shell puts its header there) */
    memset(f->storage, 0xAA, GW_PRE);
    assert_memory_equal(frame_data(f), "4hello", 6);
    frame_unref(f);
}

static void test_binary_and_empty(void **state)
{
    (void)state;
    const unsigned char raw[] = {0, 1, 2, 0xff};
    gw_frame *f = frame_new(raw, sizeof raw, true);
    assert_true(f->binary);
    assert_int_equal(f->len, 4);
    assert_memory_equal(frame_data(f), raw, 4);
    frame_unref(f);
    gw_frame *e = frame_new(NULL, 0, true);
    assert_int_equal(e->len, 0);
    assert_int_equal(frame_data(e)[0], '\0');
    frame_unref(e);
}

static void test_prefixed(void **state)
{
    (void)state;
    gw_frame *f = frame_new_prefixed("4", "2[\"a\"]", 6);
    assert_false(f->binary);
    assert_int_equal(f->len, 7);
    assert_string_equal((char *)frame_data(f), "42[\"a\"]");
    frame_unref(f);
    f = frame_new_prefixed("42/chat,", NULL, 0);
    assert_int_equal(f->len, 8);
    assert_string_equal((char *)frame_data(f), "42/chat,");
    frame_unref(f);
    f = frame_new_prefixed("", "x", 1);
    assert_string_equal((char *)frame_data(f), "x");
    frame_unref(f);
}

/* One frame shared by many queues: refs count up and down, the bytes stay. */
static void test_refcount(void **state)
{
    (void)state;
    gw_frame *f = frame_new("42[\"x\"]", 7, false);
    gw_frame *holders[200];
    for (int i = 0; i < 200; i++) {
        holders[i] = frame_ref(f);
        assert_ptr_equal(holders[i], f);
    }
    assert_int_equal(f->refs, 201);
    frame_unref(f); /* the broadcaster drops its own reference */
    for (int i = 0; i < 199; i++)
        frame_unref(holders[i]);
    assert_int_equal(holders[199]->refs, 1);
    assert_memory_equal(frame_data(holders[199]), "42[\"x\"]", 7);
    frame_unref(holders[199]); /* freed here (ASan reports a leak otherwise) */
    frame_unref(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new),
        cmocka_unit_test(test_binary_and_empty),
        cmocka_unit_test(test_prefixed),
        cmocka_unit_test(test_refcount),
    };
    return cmocka_run_group_tests_name("frame", tests, NULL, NULL);
}
