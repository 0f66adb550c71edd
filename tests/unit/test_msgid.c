/* Unit tests for store/msgid.c: UUID version 7 message ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store/msgid.h"

static void assert_uuid7(const char *s)
{
    assert_int_equal(strlen(s), MSGID_LEN);
    for (int i = 0; i < MSGID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(s[i], '-');
        else
            assert_non_null(strchr("0123456789abcdef", s[i]));
    }
    assert_int_equal(s[14], '7');                      /* version */
    assert_non_null(strchr("89ab", s[19]));            /* variant 10 */
}

static void test_layout(void **state)
{
    (void)state;
    msgid_gen g;
    msgid_init(&g, 42);
    char id[MSGID_LEN + 1];
    msgid_next(&g, 0x0123456789abULL, id);
    assert_uuid7(id);
    /* the 48-bit millisecond leads, big-endian, then version 7 and the counter (0) */
    assert_memory_equal(id, "01234567-89ab-7000-", 19);
}

static void test_monotonic_within_and_across_ms(void **state)
{
    (void)state;
    msgid_gen g;
    msgid_init(&g, 7);
    char prev[MSGID_LEN + 1], id[MSGID_LEN + 1];
    msgid_next(&g, 1000, prev);
    /* 5,000 ids in one millisecond: the counter overflows into the next one, still ordered */
    for (int i = 0; i < 5000; i++) {
        msgid_next(&g, 1000, id);
        assert_uuid7(id);
        assert_true(strcmp(prev, id) < 0);
        memcpy(prev, id, sizeof id);
    }
    /* a clock stepping back never makes an id go back */
    msgid_next(&g, 10, id);
    assert_true(strcmp(prev, id) < 0);
    memcpy(prev, id, sizeof id);
    msgid_next(&g, 5000, id);
    assert_true(strcmp(prev, id) < 0);
    assert_memory_equal(id + 14, "7000", 4); /* a new millisecond restarts the counter */
}

static void test_seeds_differ(void **state)
{
    (void)state;
    msgid_gen a, b;
    msgid_init(&a, 1);
    msgid_init(&b, 2);
    char x[MSGID_LEN + 1], y[MSGID_LEN + 1];
    msgid_next(&a, 1234, x);
    msgid_next(&b, 1234, y);
    /* same millisecond and counter, different random tail */
    assert_memory_equal(x, y, 19);
    assert_true(strcmp(x + 19, y + 19) != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_monotonic_within_and_across_ms),
        cmocka_unit_test(test_seeds_differ),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
