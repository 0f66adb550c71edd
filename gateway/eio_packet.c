#include "gateway/eio_packet.h"

#include <stdio.h>
#include <string.h>

int eio_decode_text(const char *buf, size_t len, eio_packet *out)
{
    if (len == 0)
        return EIO_ERR_EMPTY;
    if (buf[0] < '0' || buf[0] > '6')
        return EIO_ERR_TYPE;
    out->type = (enum eio_type)(buf[0] - '0');
    out->binary = false;
    out->data = buf + 1;
    out->len = len - 1;
    return EIO_OK;
}

int eio_decode_payload(const char *buf, size_t len, buf_t *scratch, eio_packet_cb cb, void *ctx)
{
    size_t pos = 0;
    if (len == 0)
        return EIO_ERR_EMPTY;
    for (;;) {
        const char *rec = buf + pos;
        const char *sep = memchr(rec, 0x1e, len - pos);
        size_t rlen = sep ? (size_t)(sep - rec) : len - pos;
        eio_packet p;
        if (rlen > 0 && rec[0] == 'b') {
            buf_reset(scratch);
            if (eio_base64_decode(scratch, rec + 1, rlen - 1) != 0)
                return EIO_ERR_BASE64;
            p.type = EIO_MESSAGE;
            p.binary = true;
            p.data = scratch->data ? scratch->data : "";
            p.len = scratch->len;
        } else {
            int rc = eio_decode_text(rec, rlen, &p);
            if (rc != EIO_OK)
                return rc;
        }
        if (cb(ctx, &p) != 0)
            return EIO_ERR_ABORTED;
        if (!sep)
            return EIO_OK;
        pos += rlen + 1;
    }
}

void eio_payload_append(buf_t *out, const char *data, size_t len, bool binary)
{
    if (out->len)
        buf_putc(out, 0x1e);
    if (binary) {
        buf_putc(out, 'b');
        eio_base64_encode(out, (const unsigned char *)data, len);
    } else {
        buf_append(out, data, len);
    }
}

void eio_open_packet(buf_t *out, const char *sid, bool upgrades_websocket, int ping_interval_ms,
                     int ping_timeout_ms, int64_t max_payload)
{
    buf_printf(out,
               "0{\"sid\":\"%s\",\"upgrades\":[%s],\"pingInterval\":%d,\"pingTimeout\":%d,"
               "\"maxPayload\":%lld}",
               sid, upgrades_websocket ? "\"websocket\"" : "", ping_interval_ms, ping_timeout_ms,
               (long long)max_payload);
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void eio_base64_encode(buf_t *out, const unsigned char *in, size_t len)
{
    buf_reserve(out, (len + 2) / 3 * 4);
    char *o = out->data + out->len;
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = b64[(v >> 6) & 63];
        *o++ = b64[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0);
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = i + 1 < len ? b64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int eio_base64_decode(buf_t *out, const char *in, size_t len)
{
    /* Padding is optional; anything but a valid alphabet char or trailing '=' fails. */
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    buf_reserve(out, len / 4 * 3 + 3);
    unsigned char *o = (unsigned char *)out->data + out->len;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    out->len = (size_t)((char *)o - out->data);
    out->data[out->len] = '\0';
    return 0;
}

const char *eio_strerror(int status)
{
    switch (status) {
    case EIO_OK: return "ok";
    case EIO_ERR_EMPTY: return "empty packet";
    case EIO_ERR_TYPE: return "unknown packet type";
    case EIO_ERR_BASE64: return "invalid base64";
    case EIO_ERR_ABORTED: return "aborted";
    }
    return "unknown error";
}
