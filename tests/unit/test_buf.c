/* Unit tests for common/buf.c: growth, NUL termination, printf, steal, and
 * JSON string escaping (what JSON.stringify writes: short escapes for \b \f
 * \n \r \t, \u00XX lowercase for other control characters, UTF-8 and DEL
 * passed through unchanged). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <cmocka.h>

#include "common/buf.h"

static void test_init_append_reset(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    buf_append(&b, "abc", 3);
    assert_int_equal(b.len, 3);
    assert_string_equal(b.data, "abc");
    buf_putc(&b, 'd');
    buf_puts(&b, "ef");
    assert_string_equal(b.data, "abcdef");
    buf_append(&b, "", 0);
    assert_int_equal(b.len, 6);
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_true(b.cap > 0); /* storage kept */
    buf_free(&b);
    assert_null(b.data);
    buf_free(&b); /* twice is fine */
    buf_reset(&b); /* reset of an empty buffer is fine */
}

static void test_growth_and_binary(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b);
    for (int i = 0; i < 10000; i++)
        buf_putc(&b, (char)(i & 0xff));
    assert_int_equal(b.len, 10000);
    assert_true(b.cap > b.len);
    assert_int_equal(b.data[b.len], '\0');
    for (int i = 0; i < 10000; i++)
        assert_int_equal((unsigned char)b.data[i], i & 0xff);
    buf_reserve(&b, 1 << 20);
    assert_true(b.cap >= b.len + (1 << 20) + 1);
    assert_int_equal(b.len, 10000);
    buf_free(&b);
}

static void test_printf(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b);
    buf_printf(&b, "%d-%s", 42, "x");
    assert_string_equal(b.data, "42-x");
    /* longer than the 256-byte stack buffer */
    char big[1000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    buf_printf(&b, "[%s]", big);
    assert_int_equal(b.len, 4 + 2 + 999);
    assert_int_equal(b.data[4], '[');
    assert_int_equal(b.data[b.len - 1], ']');
    assert_int_equal(b.data[b.len], '\0');
    assert_int_equal(strlen(b.data), b.len);
    /* exactly at the boundary (255 and 256 chars) */
    buf_reset(&b);
    buf_printf(&b, "%.*s", 255, big);
    assert_int_equal(b.len, 255);
    buf_reset(&b);
    buf_printf(&b, "%.*s", 256, big);
    assert_int_equal(b.len, 256);
    assert_int_equal(strlen(b.data), 256);
    buf_free(&b);
}

static void test_steal(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "hello");
    size_t len = 0;
    char *p = buf_steal(&b, &len);
    assert_string_equal(p, "hello");
    assert_int_equal(len, 5);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(p);
    /* stealing an empty buffer gives an empty string */
    p = buf_steal(&b, NULL);
    assert_non_null(p);
    assert_string_equal(p, "");
    free(p);
}

static const struct esc {
    const char *in;
    size_t len; /* 0 = strlen */
    const char *out;
} escs[] = {
    {"", 0, "\"\""},
    {"abc", 0, "\"abc\""},
    {"a\"b", 0, "\"a\\\"b\""},
    {"a\\b", 0, "\"a\\\\b\""},
    {"/", 0, "\"/\""}, /* '/' is not escaped */
    {"\n\r\t\b\f", 0, "\"\\n\\r\\t\\b\\f\""},
    {"\x01\x1f", 0, "\"\\u0001\\u001f\""},
    {"\x0b", 0, "\"\\u000b\""},
    {"\x1e", 0, "\"\\u001e\""}, /* the polling separator never appears raw */
    {"a\0b", 3, "\"a\\u0000b\""},
    {"\x7f", 0, "\"\x7f\""},
    {"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 0, "\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\""},
    {"<script>&'", 0, "\"<script>&'\""},
    {"\"\"\\\\", 0, "\"\\\"\\\"\\\\\\\\\""},
    {"end\n", 0, "\"end\\n\""},
    {"\nstart", 0, "\"\\nstart\""},
};

static void test_json_str(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof escs / sizeof escs[0]; i++) {
        size_t len = escs[i].len ? escs[i].len : strlen(escs[i].in);
        buf_t b;
        buf_init(&b);
        buf_puts(&b, "x"); /* appends */
        buf_json_str(&b, escs[i].in, len);
        if (strcmp(b.data + 1, escs[i].out) != 0)
            fail_msg("escape %zu: got %s want %s", i, b.data + 1, escs[i].out);
        assert_int_equal(b.len, strlen(escs[i].out) + 1);
        buf_free(&b);
    }
}

/* Every byte value 0..255 (as a 1-byte string, and all of them in one string):
 * the output is valid JSON whose decoded value is the input (for ASCII), and
 * control characters never appear raw. */
static void test_json_str_all_bytes(void **state)
{
    (void)state;
    for (int c = 0; c < 128; c++) {
        char in[1] = {(char)c};
        buf_t b;
        buf_init(&b);
        buf_json_str(&b, in, 1);
        for (size_t k = 0; k < b.len; k++)
            assert_true((unsigned char)b.data[k] >= 0x20);
        cJSON *j = cJSON_ParseWithLength(b.data, b.len);
        assert_non_null(j);
        assert_true(cJSON_IsString(j));
        if (c != 0) {
            assert_int_equal(strlen(j->valuestring), 1);
            assert_int_equal((unsigned char)j->valuestring[0], c);
        }
        cJSON_Delete(j);
        buf_free(&b);
    }
    char all[255];
    for (int c = 1; c < 256; c++)
        all[c - 1] = (char)c;
    buf_t b;
    buf_init(&b);
    buf_json_str(&b, all, sizeof all);
    for (size_t k = 0; k < b.len; k++)
        assert_true((unsigned char)b.data[k] >= 0x20);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_append_reset),
        cmocka_unit_test(test_growth_and_binary),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_steal),
        cmocka_unit_test(test_json_str),
        cmocka_unit_test(test_json_str_all_bytes),
    };
    return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}
