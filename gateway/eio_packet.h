/* Engine.IO v4 packet codec (pure: bytes in, packets out, no I/O).
 *
 * Wire forms handled here:
 *   WebSocket text frame   "<type><data>"        type '0'..'6'
 *   WebSocket binary frame  raw bytes            always a MESSAGE
 *   polling payload         records joined by 0x1e; a record "b<base64>" is a binary MESSAGE
 * Input is untrusted: every function bounds-checks and never reads past len. */
#ifndef CHATD_EIO_PACKET_H
#define CHATD_EIO_PACKET_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

enum eio_type {
    EIO_OPEN = 0,
    EIO_CLOSE = 1,
    EIO_PING = 2,
    EIO_PONG = 3,
    EIO_MESSAGE = 4,
    EIO_UPGRADE = 5,
    EIO_NOOP = 6,
};

enum eio_status {
    EIO_OK = 0,
    EIO_ERR_EMPTY = -1,   /* zero-length packet */
    EIO_ERR_TYPE = -2,    /* unknown packet type character */
    EIO_ERR_BASE64 = -3,  /* bad base64 in a "b" record */
    EIO_ERR_ABORTED = -4, /* the callback asked to stop */
};

/* A decoded packet. data/len borrow from the input (or from the scratch buffer
 * for base64-decoded binary); valid until the next call that reuses them. */
typedef struct eio_packet {
    enum eio_type type;
    bool binary;
    const char *data;
    size_t len;
} eio_packet;

/* Decodes one WebSocket text frame. */
int eio_decode_text(const char *buf, size_t len, eio_packet *out);

/* Calls cb for every record of a polling payload, in order. Binary records are
 * decoded into `scratch` (reset per record). A non-zero return of cb stops the
 * walk with EIO_ERR_ABORTED. Returns EIO_OK or the first error; records before
 * an error have already been delivered. */
typedef int (*eio_packet_cb)(void *ctx, const eio_packet *p);
int eio_decode_payload(const char *buf, size_t len, buf_t *scratch, eio_packet_cb cb, void *ctx);

/* Appends one packet to a polling payload being built in out (adds the 0x1e
 * separator when out is not empty). `data` is the WebSocket form: for text,
 * "<type><data>"; for binary, the raw bytes (written as "b" + base64). */
void eio_payload_append(buf_t *out, const char *data, size_t len, bool binary);

/* The open packet "0{...}" with exactly the keys the protocol names. */
void eio_open_packet(buf_t *out, const char *sid, bool upgrades_websocket, int ping_interval_ms,
                     int ping_timeout_ms, int64_t max_payload);

/* Standard base64 with padding. decode returns 0, or -1 on bad input. */
void eio_base64_encode(buf_t *out, const unsigned char *in, size_t len);
int eio_base64_decode(buf_t *out, const char *in, size_t len);

const char *eio_strerror(int status);

#endif
