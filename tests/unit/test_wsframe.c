/* Unit tests for gateway/wsframe.c: server->client WebSocket frames, several
 * of them in one buffer (the coalesced write of eio_session.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/wsframe.h"

static void test_header_sizes(void **state)
{
    (void)state;
    unsigned char h[WSFRAME_MAX_HEADER];
    assert_int_equal(wsframe_header(h, 0, false), 2);
    assert_int_equal(h[0], 0x81);
    assert_int_equal(h[1], 0);
    assert_int_equal(wsframe_header(h, 125, true), 2);
    assert_int_equal(h[0], 0x82);
    assert_int_equal(h[1], 125);
    /* 126..65535: 16-bit length */
    assert_int_equal(wsframe_header(h, 126, false), 4);
    assert_int_equal(h[1], 126);
    assert_int_equal(h[2], 0);
    assert_int_equal(h[3], 126);
    assert_int_equal(wsframe_header(h, 65535, false), 4);
    assert_int_equal(h[2], 0xff);
    assert_int_equal(h[3], 0xff);
    /* 65536 and up: 64-bit length, big-endian */
    assert_int_equal(wsframe_header(h, 65536, true), 10);
    assert_int_equal(h[1], 127);
    const unsigned char l64[8] = {0, 0, 0, 0, 0, 1, 0, 0};
    assert_memory_equal(h + 2, l64, 8);
    assert_int_equal(wsframe_header(h, 0x01020304, false), 10);
    const unsigned char l64b[8] = {0, 0, 0, 0, 1, 2, 3, 4};
    assert_memory_equal(h + 2, l64b, 8);
}

/* Frames of every length class, text and binary, back to back in one
 * buffer, read back one by one in order. */
static void test_several_frames_round_trip(void **state)
{
    (void)state;
    static const size_t lens[] = {0, 1, 125, 126, 127, 300, 65535, 65536, 70000, 5};
    const size_t n = sizeof lens / sizeof lens[0];
    unsigned char *src = malloc(70000);
    for (size_t i = 0; i < 70000; i++)
        src[i] = (unsigned char)(i * 7 + 3);
    buf_t b;
    buf_init(&b);
    for (size_t i = 0; i < n; i++)
        wsframe_append(&b, src, lens[i], i % 2);
    const unsigned char *p = (const unsigned char *)b.data;
    size_t left = b.len;
    for (size_t i = 0; i < n; i++) {
        wsframe_view v;
        long long used = wsframe_parse(p, left, &v);
        assert_true(used > 0);
        assert_true(v.fin);
        assert_false(v.masked);
        assert_int_equal(v.opcode, i % 2 ? 2 : 1);
        assert_int_equal(v.len, lens[i]);
        if (lens[i])
            assert_memory_equal(v.payload, src, lens[i]);
        p += used;
        left -= (size_t)used;
    }
    assert_int_equal(left, 0);
    buf_free(&b);
    free(src);
}

/* Every cut of a buffer in the middle of a frame reads as incomplete (0). */
static void test_partial_is_incomplete(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b);
    char data[300];
    memset(data, 'x', sizeof data);
    wsframe_append(&b, data, sizeof data, false);
    wsframe_view v;
    for (size_t cut = 0; cut < b.len; cut++)
        assert_int_equal(wsframe_parse((const unsigned char *)b.data, cut, &v), 0);
    assert_int_equal(wsframe_parse((const unsigned char *)b.data, b.len, &v), (long long)b.len);
    buf_free(&b);
}

static void test_parse_rejects(void **state)
{
    (void)state;
    wsframe_view v;
    const unsigned char rsv[] = {0xC1, 0};                   /* RSV1 */
    const unsigned char long16[] = {0x81, 126, 0, 5, 'a'};   /* 5 in the 16-bit form */
    const unsigned char long64[10] = {0x81, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const unsigned char top64[10] = {0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(wsframe_parse(rsv, sizeof rsv, &v), -1);
    assert_int_equal(wsframe_parse(long16, sizeof long16, &v), -1);
    assert_int_equal(wsframe_parse(long64, sizeof long64, &v), -1);
    assert_int_equal(wsframe_parse(top64, sizeof top64, &v), -1);
    /* a client frame (masked) parses, with the 4 mask bytes skipped */
    const unsigned char masked[] = {0x81, 0x82, 1, 2, 3, 4, 'a' ^ 1, 'b' ^ 2};
    assert_int_equal(wsframe_parse(masked, sizeof masked, &v), sizeof masked);
    assert_true(v.masked);
    assert_int_equal(v.len, 2);
    assert_ptr_equal(v.payload, masked + 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_sizes),
        cmocka_unit_test(test_several_frames_round_trip),
        cmocka_unit_test(test_partial_is_incomplete),
        cmocka_unit_test(test_parse_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
