#include "gateway/wsframe.h"

size_t wsframe_header(unsigned char *out, size_t len, bool binary)
{
    out[0] = (unsigned char)(0x80 | (binary ? 0x2 : 0x1));
    if (len < 126) {
        out[1] = (unsigned char)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        return 4;
    }
    out[1] = 127;
    uint64_t l = len;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (unsigned char)(l >> (56 - 8 * i));
    return 10;
}

void wsframe_append(buf_t *b, const void *data, size_t len, bool binary)
{
    unsigned char h[WSFRAME_MAX_HEADER];
    size_t hl = wsframe_header(h, len, binary);
    buf_reserve(b, hl + len);
    buf_append(b, h, hl);
    if (len)
        buf_append(b, data, len);
}

long long wsframe_parse(const unsigned char *p, size_t n, wsframe_view *out)
{
    if (n < 2)
        return 0;
    if (p[0] & 0x70)
        return -1; /* RSV1-3: no extension is negotiated */
    out->fin = p[0] & 0x80;
    out->opcode = p[0] & 0x0f;
    out->masked = p[1] & 0x80;
    uint64_t len = p[1] & 0x7f;
    size_t hl = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        if (len < 126)
            return -1;
        hl = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        if (len <= 0xffff || len >> 63)
            return -1;
        hl = 10;
    }
    if (out->masked)
        hl += 4;
    if (n < hl || len > n - hl)
        return 0;
    out->len = len;
    out->payload = p + hl;
    return (long long)(hl + len);
}
