/* libFuzzer target for gateway/wsframe.c (the coalesced WebSocket write).
 *
 * Input: a list of frames, each one byte of flags (bit 0: binary, bits 1-2:
 * length class) and a length, then its payload from the rest of the input.
 * They are encoded back to back into one buffer as eio_session.c does, which
 * must read back as exactly those frames, in order, with nothing left over;
 * every shorter cut must read as incomplete, never as a different frame.
 * The raw input also goes through wsframe_parse (no crash, no over-read). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.c"
#include "common/xalloc.c"
#include "gateway/wsframe.c"

#define MAX_FRAMES 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wsframe_view v;
    (void)wsframe_parse(data, size, &v);

    struct {
        size_t off, len;
        bool binary;
    } fr[MAX_FRAMES];
    size_t n = 0, pos = 0;
    while (n < MAX_FRAMES && pos + 3 <= size) {
        unsigned flags = data[pos];
        size_t len = (size_t)data[pos + 1] << 8 | data[pos + 2];
        pos += 3;
        switch ((flags >> 1) & 3) {
        case 0: len &= 0x7f; break;         /* 7-bit form */
        case 1: len += 126; break;          /* 16-bit form */
        case 2: len = 65536 + len; break;   /* 64-bit form: payload repeats the input */
        default: break;
        }
        fr[n].off = size ? pos % size : 0;
        fr[n].len = len;
        fr[n].binary = flags & 1;
        n++;
    }
    buf_t b;
    buf_init(&b);
    for (size_t i = 0; i < n; i++) {
        unsigned char *p = malloc(fr[i].len ? fr[i].len : 1);
        for (size_t k = 0; k < fr[i].len; k++)
            p[k] = data[(fr[i].off + k) % size];
        wsframe_append(&b, p, fr[i].len, fr[i].binary);
        free(p);
    }
    const unsigned char *p = (const unsigned char *)b.data;
    size_t left = b.len;
    for (size_t i = 0; i < n; i++) {
        long long used = wsframe_parse(p, left, &v);
        if (used <= 0 || !v.fin || v.masked || v.opcode != (fr[i].binary ? 2u : 1u) ||
            v.len != fr[i].len)
            abort();
        for (size_t k = 0; k < fr[i].len; k++)
            if (v.payload[k] != data[(fr[i].off + k) % size])
                abort();
        /* a cut inside this frame is incomplete */
        if (used > 1 && wsframe_parse(p, (size_t)used - 1, &v) != 0)
            abort();
        p += used;
        left -= (size_t)used;
    }
    if (left)
        abort();
    buf_free(&b);
    return 0;
}
