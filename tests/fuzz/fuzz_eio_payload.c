/* libFuzzer target for the Engine.IO decoders (gateway/eio_packet.c).
 *
 * Input: a polling payload (records joined by 0x1e, "b<base64>" binary). The
 * whole input also goes through eio_decode_text. When the payload decodes, the
 * delivered records are re-encoded with eio_payload_append and decoded again:
 * the same records must come back (round trip). Built by `make build/fuzz/...`
 * with -fsanitize=fuzzer,address,undefined; the pure sources are included. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.c"
#include "common/xalloc.c"
#include "gateway/eio_packet.c"

struct rec {
    enum eio_type type;
    bool binary;
    char *data;
    size_t len;
};

struct recs {
    struct rec *r;
    size_t n, cap;
};

static int collect(void *ctx, const eio_packet *p)
{
    struct recs *rs = ctx;
    if (rs->n == rs->cap) {
        rs->cap = rs->cap ? rs->cap * 2 : 8;
        rs->r = xrealloc(rs->r, rs->cap * sizeof *rs->r);
    }
    struct rec *r = &rs->r[rs->n++];
    r->type = p->type;
    r->binary = p->binary;
    r->len = p->len;
    r->data = xmalloc(p->len + 1);
    if (p->len)
        memcpy(r->data, p->data, p->len);
    return 0;
}

static void recs_free(struct recs *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        free(rs->r[i].data);
    free(rs->r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    eio_packet p;
    if (eio_decode_text(in, size, &p) == EIO_OK) {
        if (p.len != size - 1 || p.data != in + 1 || p.type > EIO_NOOP)
            abort();
    }

    buf_t scratch;
    buf_init(&scratch);
    struct recs a = {0};
    int rc = eio_decode_payload(in, size, &scratch, collect, &a);
    if (rc != EIO_OK && rc != EIO_ERR_EMPTY && rc != EIO_ERR_TYPE && rc != EIO_ERR_BASE64)
        abort();
    if (rc == EIO_OK) {
        buf_t enc;
        buf_init(&enc);
        for (size_t i = 0; i < a.n; i++) {
            if (a.r[i].binary) {
                eio_payload_append(&enc, a.r[i].data, a.r[i].len, true);
            } else {
                /* text: the WebSocket form "<type><data>" */
                buf_t one;
                buf_init(&one);
                buf_putc(&one, (char)('0' + a.r[i].type));
                buf_append(&one, a.r[i].data, a.r[i].len);
                eio_payload_append(&enc, one.data, one.len, false);
                buf_free(&one);
            }
        }
        struct recs b = {0};
        if (eio_decode_payload(enc.data, enc.len, &scratch, collect, &b) != EIO_OK || b.n != a.n)
            abort();
        for (size_t i = 0; i < a.n; i++)
            if (a.r[i].type != b.r[i].type || a.r[i].binary != b.r[i].binary || a.r[i].len != b.r[i].len ||
                memcmp(a.r[i].data, b.r[i].data, a.r[i].len) != 0)
                abort();
        recs_free(&b);
        buf_free(&enc);
    }
    recs_free(&a);

    /* base64 decode of the raw input, then encode/decode round trip */
    buf_t dec, enc2, dec2;
    buf_init(&dec);
    buf_init(&enc2);
    buf_init(&dec2);
    if (eio_base64_decode(&dec, in, size) == 0) {
        eio_base64_encode(&enc2, (const unsigned char *)dec.data, dec.len);
        if (eio_base64_decode(&dec2, enc2.data, enc2.len) != 0 || dec2.len != dec.len ||
            (dec.len && memcmp(dec.data, dec2.data, dec.len) != 0))
            abort();
    }
    buf_free(&dec);
    buf_free(&enc2);
    buf_free(&dec2);
    buf_free(&scratch);
    return 0;
}
