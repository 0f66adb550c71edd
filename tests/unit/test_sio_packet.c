/* Unit tests for gateway/sio_packet.c: Socket.IO v5 packets. Table-driven
 * vectors for the 7 types, namespaces, ack ids, attachments, the rejections of
 * the reference parser (socket.io-parser 4.x), the header encoder, the
 * first-element skipper and placeholder counting. Every prefix of every vector
 * must decode cleanly (a packet or an error, never a crash or a leak: run the
 * sanitizer build). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/sio_packet.h"

#define NO_ACK (-1)

static const struct vec {
    const char *in;
    int rc;
    enum sio_type type;
    int attachments;
    const char *nsp;
    int64_t ack_id;
    const char *data; /* NULL: no payload */
} vecs[] = {
    /* CONNECT */
    {"0", SIO_OK, SIO_CONNECT, 0, "/", NO_ACK, NULL},
    {"0{\"token\":\"123\"}", SIO_OK, SIO_CONNECT, 0, "/", NO_ACK, "{\"token\":\"123\"}"},
    {"0/custom,", SIO_OK, SIO_CONNECT, 0, "/custom", NO_ACK, NULL},
    {"0/custom", SIO_OK, SIO_CONNECT, 0, "/custom", NO_ACK, NULL}, /* D2: no trailing comma */
    {"0/custom,{\"token\":\"abc\"}", SIO_OK, SIO_CONNECT, 0, "/custom", NO_ACK, "{\"token\":\"abc\"}"},
    {"0/random", SIO_OK, SIO_CONNECT, 0, "/random", NO_ACK, NULL},
    {"0/chat,{}", SIO_OK, SIO_CONNECT, 0, "/chat", NO_ACK, "{}"},
    {"0/a/b?x=1,", SIO_OK, SIO_CONNECT, 0, "/a/b?x=1", NO_ACK, NULL},
    {"0/,", SIO_OK, SIO_CONNECT, 0, "/", NO_ACK, NULL},
    {"0[]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"0\"x\"", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"0null", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"0{", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},
    /* DISCONNECT */
    {"1", SIO_OK, SIO_DISCONNECT, 0, "/", NO_ACK, NULL},
    {"1/custom,", SIO_OK, SIO_DISCONNECT, 0, "/custom", NO_ACK, NULL},
    {"1/custom", SIO_OK, SIO_DISCONNECT, 0, "/custom", NO_ACK, NULL},
    {"1{}", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL}, /* DISCONNECT with payload */
    {"1/custom,{}", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"1[]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    /* EVENT */
    {"2[\"message\",1,\"2\",{\"3\":[true]}]", SIO_OK, SIO_EVENT, 0, "/", NO_ACK,
     "[\"message\",1,\"2\",{\"3\":[true]}]"},
    {"2456[\"message-with-ack\",1,\"2\",{\"3\":[false]}]", SIO_OK, SIO_EVENT, 0, "/", 456,
     "[\"message-with-ack\",1,\"2\",{\"3\":[false]}]"},
    {"2/custom,[\"a\"]", SIO_OK, SIO_EVENT, 0, "/custom", NO_ACK, "[\"a\"]"},
    {"2/custom,7[\"a\"]", SIO_OK, SIO_EVENT, 0, "/custom", 7, "[\"a\"]"},
    {"20[\"a\"]", SIO_OK, SIO_EVENT, 0, "/", 0, "[\"a\"]"},
    {"2[1,2]", SIO_OK, SIO_EVENT, 0, "/", NO_ACK, "[1,2]"}, /* numeric event name */
    {"2[\"a\"] \n", SIO_OK, SIO_EVENT, 0, "/", NO_ACK, "[\"a\"] \n"},
    {"2123456789012345[\"a\"]", SIO_OK, SIO_EVENT, 0, "/", INT64_C(123456789012345), "[\"a\"]"},
    {"21234567890123456[\"a\"]", SIO_ERR_ACK_ID, 0, 0, NULL, 0, NULL}, /* 16 digits */
    {"2{}", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},                      /* M6 */
    {"2[]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"2", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"2/custom,", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"2[null]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"2[true]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"2[{}]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"2[[\"a\"]]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"2\"a\"", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"2abc[\"message-with-ack\",1,\"2\",{\"3\":[false]}]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL}, /* M7 */
    {"2[\"a\"]x", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},  /* trailing garbage */
    {"2[\"a\"][]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL}, /* two values */
    {"2[\"a\",]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},
    {"2[\"a\"", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},
    {"2['a']", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},
    {"2[\"connect\"]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"2[\"connect_error\",1]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"2[\"disconnect\"]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"2[\"disconnecting\"]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"2[\"newListener\"]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"2[\"removeListener\"]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"2[\"Connect\"]", SIO_OK, SIO_EVENT, 0, "/", NO_ACK, "[\"Connect\"]"}, /* case-sensitive */
    {"2[\"connected\"]", SIO_OK, SIO_EVENT, 0, "/", NO_ACK, "[\"connected\"]"},
    /* JSON as strict as JSON.parse: these bytes would be forwarded unchanged and
     * make every receiving socket.io-client drop its connection */
    {"2[\"a\nb\"]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},      /* raw control char in a string */
    {"2[\"a\tb\"]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},
    {"2[\x01\"a\"]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},     /* 0x01 is not whitespace */
    {"2[\"a\"\x0b]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},
    {"2[\"a\",01]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},      /* leading zero */
    {"2[\"a\",1.]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},      /* dot without digits */
    {"2[\"a\",.5]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},
    {"2[\"a\",1e]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},
    {"2[\"a\",+1]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},
    {"2[\"a\",tru]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},
    {"2[\"a\",{\"k\":1,}]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},
    {"2[\"a\",{k:1}]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},
    {"2[\"\\x\"]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},       /* bad escape */
    {"2[\"\\u12g4\"]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},
    {"2[\"\xff\"]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},      /* invalid UTF-8 */
    {"2[\"\xc3\"]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},      /* truncated sequence */
    {"2[\"\xc0\xaf\"]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},  /* overlong */
    {"2[\"\xed\xa0\x80\"]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL}, /* UTF-16 surrogate in UTF-8 */
    {"2[\"\xf4\x90\x80\x80\"]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL}, /* > U+10FFFF */
    {"2 [\"a\"]", SIO_OK, SIO_EVENT, 0, "/", NO_ACK, " [\"a\"]"},
    {"2[\"a\" , -0.5e-3 ,\r\n{\"k\" : [ true , false , null ]}]", SIO_OK, SIO_EVENT, 0, "/", NO_ACK,
     "[\"a\" , -0.5e-3 ,\r\n{\"k\" : [ true , false , null ]}]"},
    {"2[\"h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\",\"\\u00e9\\n\\\"\\\\\\/\"]", SIO_OK, SIO_EVENT, 0, "/",
     NO_ACK, "[\"h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\",\"\\u00e9\\n\\\"\\\\\\/\"]"},
    /* lone surrogate escapes: JSON.parse accepts them (JSON.stringify writes
     * them for a string cut inside an emoji); the bytes stay as received */
    {"2[\"a\",\"x\\ud800\"]", SIO_OK, SIO_EVENT, 0, "/", NO_ACK, "[\"a\",\"x\\ud800\"]"},
    {"2[\"a\",\"\\udc00y\",\"\\uD83D\\uDE00\",\"\\ud83d\"]", SIO_OK, SIO_EVENT, 0, "/", NO_ACK,
     "[\"a\",\"\\udc00y\",\"\\uD83D\\uDE00\",\"\\ud83d\"]"},
    {"2[\"a\",\"\\\\ud800\"]", SIO_OK, SIO_EVENT, 0, "/", NO_ACK, "[\"a\",\"\\\\ud800\"]"}, /* not an escape */
    {"2[\"a\",\"\\ud800\\u\"]", SIO_ERR_JSON, 0, 0, NULL, 0, NULL},
    /* ACK */
    {"3456[1,\"2\",{\"3\":[false]}]", SIO_OK, SIO_ACK, 0, "/", 456, "[1,\"2\",{\"3\":[false]}]"},
    {"3/custom,1[]", SIO_OK, SIO_ACK, 0, "/custom", 1, "[]"},
    {"31{}", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"31", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"31\"x\"", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    /* CONNECT_ERROR */
    {"4/random,{\"message\":\"Invalid namespace\"}", SIO_OK, SIO_CONNECT_ERROR, 0, "/random", NO_ACK,
     "{\"message\":\"Invalid namespace\"}"},
    {"4\"boom\"", SIO_OK, SIO_CONNECT_ERROR, 0, "/", NO_ACK, "\"boom\""},
    {"4", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"4[]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"41", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"4abc", SIO_ERR_JSON, 0, 0, NULL, 0, NULL}, /* C6/M5 (in an Engine.IO "4" message: "abc") */
    /* BINARY_EVENT / BINARY_ACK */
    {"52-[\"message\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]", SIO_OK,
     SIO_BINARY_EVENT, 2, "/", NO_ACK,
     "[\"message\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]"},
    {"52-789[\"m\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]", SIO_OK,
     SIO_BINARY_EVENT, 2, "/", 789,
     "[\"m\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]"},
    {"51-/custom,3[\"m\",{\"_placeholder\":true,\"num\":0}]", SIO_OK, SIO_BINARY_EVENT, 1, "/custom", 3,
     "[\"m\",{\"_placeholder\":true,\"num\":0}]"},
    {"50-[\"m\"]", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL}, /* 0: socket.io-parser refuses it */
    {"62-789[{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]", SIO_OK, SIO_BINARY_ACK,
     2, "/", 789, "[{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]"},
    {"61-/x,5[{\"a\":[{\"_placeholder\":true,\"num\":0}]}]", SIO_OK, SIO_BINARY_ACK, 1, "/x", 5,
     "[{\"a\":[{\"_placeholder\":true,\"num\":0}]}]"},
    {"510-[\"m\"]", SIO_OK, SIO_BINARY_EVENT, 10, "/", NO_ACK, "[\"m\"]"},
    {"511-[\"m\"]", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL}, /* over SIO_MAX_ATTACHMENTS */
    {"564-[\"m\"]", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL},
    {"599999999999999999999-[\"m\"]", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL},
    {"5[\"m\"]", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL},       /* no count */
    {"5-[\"m\"]", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL},      /* empty count */
    {"52[\"m\"]", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL},      /* no dash */
    {"52", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL},
    {"5a-[\"m\"]", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL},
    {"51-[\"m\",{\"_placeholder\":true,\"num\":1}]", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL},
    {"51-[\"m\",{\"_placeholder\":true,\"num\":-1}]", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL},
    {"51-[\"m\",{\"_placeholder\":true,\"num\":0.5}]", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL},
    {"51-[\"m\",{\"_placeholder\":true,\"num\":\"0\"}]", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL},
    {"51-[\"m\",{\"_placeholder\":true}]", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL},
    {"50-[\"m\",{\"_placeholder\":true,\"num\":0}]", SIO_ERR_ATTACHMENTS, 0, 0, NULL, 0, NULL},
    {"51-[\"m\",{\"_placeholder\":false,\"num\":7}]", SIO_OK, SIO_BINARY_EVENT, 1, "/", NO_ACK,
     "[\"m\",{\"_placeholder\":false,\"num\":7}]"}, /* not a placeholder */
    {"51-[\"disconnect\"]", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"51-{}", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"51-", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    {"61-1{}", SIO_ERR_PAYLOAD, 0, 0, NULL, 0, NULL},
    /* types */
    {"", SIO_ERR_EMPTY, 0, 0, NULL, 0, NULL},
    {"7", SIO_ERR_TYPE, 0, 0, NULL, 0, NULL},
    {"abc", SIO_ERR_TYPE, 0, 0, NULL, 0, NULL},
    {"/2[\"a\"]", SIO_ERR_TYPE, 0, 0, NULL, 0, NULL},
    {" 2[\"a\"]", SIO_ERR_TYPE, 0, 0, NULL, 0, NULL},
};

/* Decodes from an exact-size heap copy so ASan catches any over-read. */
static int decode_exact(const char *in, size_t len, sio_packet *p, char **copy_out)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, in, len);
    *copy_out = copy;
    return sio_decode(copy, len, p);
}

static void test_decode_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) {
        const struct vec *v = &vecs[i];
        sio_packet p;
        char *copy;
        int rc = decode_exact(v->in, strlen(v->in), &p, &copy);
        if (rc != v->rc)
            fail_msg("vector %zu '%s': rc %d (%s), want %d (%s)", i, v->in, rc, sio_strerror(rc), v->rc,
                     sio_strerror(v->rc));
        if (rc == SIO_OK) {
            if (p.type != v->type || p.attachments != v->attachments || p.ack_id != v->ack_id)
                fail_msg("vector %zu '%s': type %d att %d ack %lld", i, v->in, p.type, p.attachments,
                         (long long)p.ack_id);
            if (p.nsp_len != strlen(v->nsp) || memcmp(p.nsp, v->nsp, p.nsp_len) != 0)
                fail_msg("vector %zu '%s': nsp '%.*s', want '%s'", i, v->in, (int)p.nsp_len, p.nsp, v->nsp);
            if (v->data) {
                assert_non_null(p.json);
                assert_int_equal(p.data_len, strlen(v->data));
                assert_memory_equal(p.data, v->data, p.data_len);
                assert_true(p.data >= copy && p.data + p.data_len == copy + strlen(v->in));
            } else {
                assert_null(p.json);
                assert_int_equal(p.data_len, 0);
            }
            sio_packet_clear(&p);
            assert_null(p.json);
        } else {
            assert_null(p.json); /* nothing to clear on error */
        }
        free(copy);
    }
}

/* The conformance-suite frames arrive as Engine.IO messages "4<sio>": strip the
 * '4' the way the gateway does and check the Socket.IO verdict. */
static void test_decode_suite_frames(void **state)
{
    (void)state;
    static const struct {
        const char *frame;
        int rc;
    } f[] = {
        {"40", SIO_OK},
        {"41", SIO_OK},
        {"41{}", SIO_ERR_PAYLOAD},   /* DISCONNECT with payload */
        {"4abc", SIO_ERR_TYPE},      /* C6/M5: Socket.IO type 'a' */
        {"42{}", SIO_ERR_PAYLOAD},   /* M6 */
        {"42[]", SIO_ERR_PAYLOAD},
        {"42abc[\"message-with-ack\",1,\"2\",{\"3\":[false]}]", SIO_ERR_JSON}, /* M7 */
        {"40/random", SIO_OK},
        {"41/custom", SIO_OK},
        {"42[\"message\",\"message to main namespace\"]", SIO_OK},
        {"452-[\"message\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]", SIO_OK},
        {"452-789[\"message-with-ack\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
         SIO_OK},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        sio_packet p;
        char *copy;
        int rc = decode_exact(f[i].frame + 1, strlen(f[i].frame) - 1, &p, &copy);
        if (rc != f[i].rc)
            fail_msg("frame '%s': rc %d, want %d", f[i].frame, rc, f[i].rc);
        sio_packet_clear(&p);
        free(copy);
    }
}

/* The parsed tree matches the payload. */
static void test_decode_json_tree(void **state)
{
    (void)state;
    const char *in = "2/chat,12[\"join\",{\"chatId\":\"c1\",\"n\":[1,2]}]";
    sio_packet p;
    assert_int_equal(sio_decode(in, strlen(in), &p), SIO_OK);
    assert_true(cJSON_IsArray(p.json));
    assert_int_equal(cJSON_GetArraySize(p.json), 2);
    assert_string_equal(cJSON_GetArrayItem(p.json, 0)->valuestring, "join");
    const cJSON *o = cJSON_GetArrayItem(p.json, 1);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(o, "chatId")->valuestring, "c1");
    sio_packet_clear(&p);
    sio_packet_clear(&p); /* idempotent */
}

/* A lone surrogate becomes U+FFFD in the tree; the pair stays a pair. */
static void test_decode_lone_surrogate_tree(void **state)
{
    (void)state;
    const char *in = "2[\"m\",\"a\\ud800b\",\"\\ud83d\\ude00\"]";
    sio_packet p;
    assert_int_equal(sio_decode(in, strlen(in), &p), SIO_OK);
    assert_string_equal(cJSON_GetArrayItem(p.json, 1)->valuestring, "a\xef\xbf\xbd" "b");
    assert_string_equal(cJSON_GetArrayItem(p.json, 2)->valuestring, "\xf0\x9f\x98\x80");
    assert_memory_equal(p.data, in + 1, strlen(in) - 1); /* bytes unchanged */
    sio_packet_clear(&p);
}

/* Truncation at every byte of every vector (valid or not): a packet or an
 * error, never a crash, and no leak when the caller clears only on success. */
static void test_decode_every_prefix(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) {
        size_t len = strlen(vecs[i].in);
        for (size_t cut = 0; cut <= len; cut++) {
            sio_packet p;
            char *copy;
            int rc = decode_exact(vecs[i].in, cut, &p, &copy);
            assert_true(rc <= 0 && rc >= SIO_ERR_PAYLOAD);
            if (rc == SIO_OK) {
                assert_true(p.type <= SIO_BINARY_ACK);
                assert_true(p.nsp_len >= 1 && p.nsp[0] == '/');
                assert_true(p.data_len <= cut);
                if (p.data_len)
                    assert_non_null(p.json);
                sio_packet_clear(&p);
            } else {
                assert_null(p.json);
            }
            free(copy);
        }
    }
}

/* Seeded random mutations of the vectors (for machines without clang and
 * libFuzzer, STYLE §28): the same invariants as tests/fuzz/fuzz_sio_decode.c,
 * including the encode/decode round trip. Seed from TEST_SEED, else fixed. */
static uint32_t rnd_state;
static uint32_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 17;
    rnd_state ^= rnd_state << 5;
    return rnd_state;
}

static void test_decode_random_mutations(void **state)
{
    (void)state;
    const char *seed_env = getenv("TEST_SEED");
    rnd_state = seed_env ? (uint32_t)strtoul(seed_env, NULL, 10) | 1u : 0x2545F491u;
    static const char tokens[] = "0123456789[]{}\",:-/\\ \x1e\x00\xff" "abcenrtu.";
    char in[512];
    for (int iter = 0; iter < 50000; iter++) {
        const char *base = vecs[rnd() % (sizeof vecs / sizeof vecs[0])].in;
        size_t len = strlen(base);
        memcpy(in, base, len);
        for (int m = 0, n = 1 + (int)(rnd() % 4); m < n; m++) {
            size_t pos = len ? rnd() % (len + 1) : 0;
            switch (rnd() % 4) {
            case 0: /* delete */
                if (pos < len) {
                    memmove(in + pos, in + pos + 1, len - pos - 1);
                    len--;
                }
                break;
            case 1: /* insert */
                if (len + 1 < sizeof in) {
                    memmove(in + pos + 1, in + pos, len - pos);
                    in[pos] = tokens[rnd() % (sizeof tokens - 1)];
                    len++;
                }
                break;
            case 2: /* replace with any byte */
                if (pos < len)
                    in[pos] = (char)(rnd() & 0xff);
                break;
            case 3: /* truncate */
                len = pos;
                break;
            }
        }
        sio_packet p;
        char *copy;
        int rc = decode_exact(in, len, &p, &copy);
        assert_true(rc <= 0 && rc >= SIO_ERR_PAYLOAD);
        if (rc != SIO_OK) {
            assert_null(p.json);
            free(copy);
            continue;
        }
        if (p.type == SIO_EVENT || p.type == SIO_BINARY_EVENT) {
            size_t after;
            assert_int_equal(sio_skip_first_element(p.data, p.data_len, &after), 0);
        }
        if (!memchr(p.nsp, '\0', p.nsp_len)) {
            char nsp[512];
            memcpy(nsp, p.nsp, p.nsp_len);
            nsp[p.nsp_len] = '\0';
            buf_t b;
            buf_init(&b);
            sio_encode_header(&b, p.type, nsp, p.attachments, p.ack_id);
            buf_append(&b, p.data, p.data_len);
            sio_packet q;
            if (sio_decode(b.data, b.len, &q) != SIO_OK)
                fail_msg("round trip of '%.*s' failed", (int)len, in);
            assert_int_equal(q.type, p.type);
            assert_int_equal(q.attachments, p.attachments);
            assert_int_equal(q.ack_id, p.ack_id);
            assert_int_equal(q.nsp_len, p.nsp_len);
            assert_int_equal(q.data_len, p.data_len);
            sio_packet_clear(&q);
            buf_free(&b);
        }
        sio_packet_clear(&p);
        free(copy);
    }
}

/* ---- encoder ------------------------------------------------------------ */

static void test_encode_header(void **state)
{
    (void)state;
    static const struct {
        enum sio_type type;
        const char *nsp;
        int att;
        int64_t ack;
        const char *want;
    } e[] = {
        {SIO_CONNECT, NULL, 0, -1, "0"},
        {SIO_CONNECT, "/", 0, -1, "0"},
        {SIO_CONNECT, "/custom", 0, -1, "0/custom,"},
        {SIO_DISCONNECT, "/chat", 0, -1, "1/chat,"},
        {SIO_EVENT, NULL, 0, -1, "2"},
        {SIO_EVENT, NULL, 0, 0, "20"},
        {SIO_EVENT, "/custom", 0, 12, "2/custom,12"},
        {SIO_ACK, NULL, 0, 456, "3456"},
        {SIO_CONNECT_ERROR, "/random", 0, -1, "4/random,"},
        {SIO_BINARY_EVENT, NULL, 2, -1, "52-"},
        {SIO_BINARY_EVENT, "/x", 1, 3, "51-/x,3"},
        {SIO_BINARY_ACK, NULL, 2, 789, "62-789"},
        {SIO_BINARY_ACK, NULL, 0, 1, "60-1"},
        {SIO_ACK, NULL, 0, INT64_C(999999999999999), "3999999999999999"},
        {SIO_EVENT, NULL, 0, -5, "2"}, /* any negative id = none */
    };
    for (size_t i = 0; i < sizeof e / sizeof e[0]; i++) {
        buf_t b;
        buf_init(&b);
        buf_puts(&b, "4"); /* appends after what is there */
        sio_encode_header(&b, e[i].type, e[i].nsp, e[i].att, e[i].ack);
        if (strcmp(b.data + 1, e[i].want) != 0)
            fail_msg("encode %zu: '%s', want '%s'", i, b.data + 1, e[i].want);
        assert_int_equal(b.len, strlen(e[i].want) + 1);
        buf_free(&b);
    }
}

/* header + payload decodes back to the same fields */
static void test_encode_decode_round_trip(void **state)
{
    (void)state;
    static const struct {
        enum sio_type type;
        const char *nsp;
        int att;
        int64_t ack;
        const char *payload;
    } r[] = {
        {SIO_CONNECT, "/", 0, -1, ""},
        {SIO_CONNECT, "/custom", 0, -1, "{\"token\":\"x\"}"},
        {SIO_DISCONNECT, "/custom", 0, -1, ""},
        {SIO_EVENT, "/chat", 0, 42, "[\"chat-message\",{\"chatId\":\"1\"}]"},
        {SIO_ACK, "/", 0, 0, "[{\"ok\":true}]"},
        {SIO_CONNECT_ERROR, "/nope", 0, -1, "{\"message\":\"Invalid namespace\"}"},
        {SIO_BINARY_EVENT, "/chat", 1, -1, "[\"f\",{\"_placeholder\":true,\"num\":0}]"},
        {SIO_BINARY_ACK, "/", 2, 9, "[{\"_placeholder\":true,\"num\":1},{\"_placeholder\":true,\"num\":0}]"},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
        buf_t b;
        buf_init(&b);
        sio_encode_header(&b, r[i].type, r[i].nsp, r[i].att, r[i].ack);
        buf_puts(&b, r[i].payload);
        sio_packet p;
        int rc = sio_decode(b.data, b.len, &p);
        if (rc != SIO_OK)
            fail_msg("round trip %zu '%s': %s", i, b.data, sio_strerror(rc));
        assert_int_equal(p.type, r[i].type);
        assert_int_equal(p.attachments, r[i].att);
        assert_int_equal(p.ack_id, r[i].ack);
        assert_int_equal(p.nsp_len, strlen(r[i].nsp));
        assert_memory_equal(p.nsp, r[i].nsp, p.nsp_len);
        assert_int_equal(p.data_len, strlen(r[i].payload));
        sio_packet_clear(&p);
        buf_free(&b);
    }
}

/* ---- sio_skip_first_element --------------------------------------------- */

static void test_skip_first_element(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;
        size_t after;
    } s[] = {
        {"[\"message\",1,2]", 0, 10},
        {"[\"message\"]", 0, 10},
        {"[\"a\\\"b\",1]", 0, 7},  /* escaped quote */
        {"[\"a\\\\\",1]", 0, 6},   /* escaped backslash before the closing quote */
        {"[\"\",1]", 0, 3},
        {"[\"\\u0041\"]", 0, 9},
        {" [ \"a\" , 1]", 0, 7},  /* whitespace */
        {"[12,\"x\"]", 0, 3},
        {"[-1.5e+3]", 0, 8},
        {"[0]", 0, 2},
        {"[\"\xc3\xa9t\xc3\xa9\",1]", 0, 8}, /* UTF-8 */
        {"", -1, 0},
        {"[", -1, 0},
        {"[]", -1, 0},
        {"{}", -1, 0},
        {"\"a\"", -1, 0},
        {"[\"abc", -1, 0},
        {"[\"abc\\", -1, 0},
        {"[\"abc\\\"]", -1, 0},
        {"[\"abc\"", -1, 0},
        {"[\"a\" x]", -1, 0},
        {"[\"a\":1]", -1, 0},
        {"[1", -1, 0},
        {"[true,1]", -1, 0},
        {"[null]", -1, 0},
        {"[{\"a\":1},2]", -1, 0},
        {"[[1],2]", -1, 0},
    };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        size_t len = strlen(s[i].in);
        char *copy = malloc(len ? len : 1);
        memcpy(copy, s[i].in, len);
        size_t after = 12345;
        int rc = sio_skip_first_element(copy, len, &after);
        if (rc != s[i].rc)
            fail_msg("skip %zu '%s': rc %d, want %d", i, s[i].in, rc, s[i].rc);
        if (rc == 0) {
            if (after != s[i].after)
                fail_msg("skip %zu '%s': after %zu, want %zu", i, s[i].in, after, s[i].after);
            assert_true(copy[after] == ',' || copy[after] == ']');
        } else {
            assert_int_equal(after, 12345); /* untouched on failure */
        }
        /* every prefix: never reads past the end, result stays inside */
        for (size_t cut = 0; cut <= len; cut++) {
            size_t a2;
            char *c2 = malloc(cut ? cut : 1);
            memcpy(c2, s[i].in, cut);
            if (sio_skip_first_element(c2, cut, &a2) == 0)
                assert_true(a2 < cut);
            free(c2);
        }
        free(copy);
    }
}

/* A NUL byte is not part of a JSON number: "[1\0]" does not start with a valid
 * first element. (strchr(set, '\0') matches the terminator, so a bare
 * strchr-based character class accepts NUL.) */
static void test_skip_first_element_nul_in_number(void **state)
{
    (void)state;
    const char in[] = {'[', '1', '\0', ']'};
    size_t after = 0;
    assert_int_equal(sio_skip_first_element(in, sizeof in, &after), -1);
}

/* The use the gateway makes of it: turn ["name",a,b] into the ACK array [a,b]
 * or rename the event, reusing the argument bytes. */
static void test_skip_first_element_rewrite(void **state)
{
    (void)state;
    const char *data = "[\"message-with-ack\",1,\"2\",{\"3\":[false]}]";
    size_t after;
    assert_int_equal(sio_skip_first_element(data, strlen(data), &after), 0);
    buf_t b;
    buf_init(&b);
    sio_encode_header(&b, SIO_ACK, NULL, 0, 456);
    buf_putc(&b, '[');
    buf_append(&b, data + after + 1, strlen(data) - after - 1);
    assert_string_equal(b.data, "3456[1,\"2\",{\"3\":[false]}]");
    buf_reset(&b);
    sio_encode_header(&b, SIO_EVENT, NULL, 0, -1);
    buf_puts(&b, "[\"message-back\"");
    buf_append(&b, data + after, strlen(data) - after);
    assert_string_equal(b.data, "2[\"message-back\",1,\"2\",{\"3\":[false]}]");
    /* no arguments: [name] -> [] */
    const char *only = "[\"x\"]";
    assert_int_equal(sio_skip_first_element(only, 5, &after), 0);
    assert_int_equal(only[after], ']');
    buf_free(&b);
}

/* ---- reserved names and placeholders ------------------------------------ */

static void test_reserved_event(void **state)
{
    (void)state;
    const char *yes[] = {"connect", "connect_error", "disconnect", "disconnecting", "newListener",
                         "removeListener"};
    const char *no[] = {"", "message", "Connect", "connect ", "error", "ping", "newlistener"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        assert_true(sio_reserved_event(yes[i]));
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        assert_false(sio_reserved_event(no[i]));
}

static void test_count_placeholders(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        int attachments;
        int want;
    } c[] = {
        {"[\"m\"]", 0, 0},
        {"[\"m\",{\"_placeholder\":true,\"num\":0}]", 1, 1},
        {"[\"m\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]", 2, 2},
        {"[{\"a\":{\"b\":[{\"_placeholder\":true,\"num\":1}]}},{\"_placeholder\":true,\"num\":0}]", 2, 2},
        {"[{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":0}]", 1, 2}, /* reuse */
        {"[{\"_placeholder\":true,\"num\":2}]", 2, -1},
        {"[{\"_placeholder\":true,\"num\":-1}]", 2, -1},
        {"[{\"_placeholder\":true,\"num\":1.5}]", 2, -1},
        {"[{\"_placeholder\":true,\"num\":null}]", 2, -1},
        {"[{\"_placeholder\":true}]", 2, -1},
        {"[{\"_placeholder\":1,\"num\":0}]", 2, 0}, /* only literal true counts */
        {"[{\"_placeholder\":true,\"num\":1e300}]", 2, -1},
        {"{\"x\":{\"_placeholder\":true,\"num\":0}}", 1, 1},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        cJSON *j = cJSON_Parse(c[i].json);
        assert_non_null(j);
        int n = sio_count_placeholders(j, c[i].attachments);
        if (n != c[i].want)
            fail_msg("placeholders %zu: %d, want %d", i, n, c[i].want);
        cJSON_Delete(j);
    }
    assert_int_equal(sio_count_placeholders(NULL, 3), 0);

    /* deep nesting is refused, not recursed without bound */
    buf_t b;
    buf_init(&b);
    for (int i = 0; i < 200; i++)
        buf_putc(&b, '[');
    for (int i = 0; i < 200; i++)
        buf_putc(&b, ']');
    cJSON *deep = cJSON_Parse(b.data);
    assert_non_null(deep);
    assert_int_equal(sio_count_placeholders(deep, 1), -1);
    cJSON_Delete(deep);
    buf_free(&b);
}

/* Text checks for JSON and ids that do not come through a socket (REST bodies and paths). */
static void test_text_checks(void **state)
{
    (void)state;
#define V(lit) sio_json_valid(lit, sizeof(lit) - 1)
    assert_true(V("{\"a\":\"x\"}"));
    assert_true(V("{\"a\":\"\xc3\xa9\"}"));
    assert_false(V("{\"a\":\"\xff\"}"));            /* not UTF-8 */
    assert_false(V("{\"a\":\"\x01\"}"));            /* a raw control character */
    assert_false(V("{\"a\":\"x\0y\"}"));            /* a raw NUL */
    assert_false(V("{\"a\":01}"));
    assert_false(V("{\"a\":1} x"));
#undef V
#define N(lit) sio_json_has_nul(lit, sizeof(lit) - 1)
    assert_true(N("[\"a\\u0000b\"]"));
    assert_true(N("[\"\\\\\\u0000\"]"));          /* an escaped backslash, then a NUL */
    assert_false(N("[\"C escape: \\\\u0000\"]"));  /* an escaped backslash, then text */
    assert_false(N("[\"u0000\"]"));
    assert_false(N("[\"\\u0001\"]"));
#undef N
#define T(lit) sio_text_valid(lit, sizeof(lit) - 1)
    assert_true(T(""));
    assert_true(T("chat-1"));
    assert_true(T("\xc3\xa9t\xc3\xa9"));
    assert_false(T("\xff"));
    assert_false(T("\xc3\x28"));
    assert_false(T("\xed\xa0\x80")); /* a UTF-16 surrogate */
    assert_false(T("a\nb"));
    assert_false(T("a\x7f"));
    assert_false(T("a\0b"));
#undef T
}

static void test_strerror(void **state)
{
    (void)state;
    for (int s = SIO_ERR_PAYLOAD; s <= SIO_OK; s++)
        assert_string_not_equal(sio_strerror(s), "unknown error");
    assert_string_equal(sio_strerror(99), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_vectors),
        cmocka_unit_test(test_decode_suite_frames),
        cmocka_unit_test(test_decode_json_tree),
        cmocka_unit_test(test_decode_lone_surrogate_tree),
        cmocka_unit_test(test_decode_every_prefix),
        cmocka_unit_test(test_decode_random_mutations),
        cmocka_unit_test(test_encode_header),
        cmocka_unit_test(test_encode_decode_round_trip),
        cmocka_unit_test(test_skip_first_element),
        cmocka_unit_test(test_skip_first_element_nul_in_number),
        cmocka_unit_test(test_skip_first_element_rewrite),
        cmocka_unit_test(test_reserved_event),
        cmocka_unit_test(test_count_placeholders),
        cmocka_unit_test(test_text_checks),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests_name("sio_packet", tests, NULL, NULL);
}
