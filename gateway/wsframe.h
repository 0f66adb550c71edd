/* Server->client WebSocket frames (RFC 6455 §5.2), pure code.
 *
 * Several Engine.IO packets queued for one socket during one loop iteration
 * go out as consecutive complete frames in a single write (one send() instead
 * of one per packet). Server frames are unmasked: byte 0 is FIN | opcode
 * (0x1 text, 0x2 binary), byte 1 the 7-bit length or 126 / 127 followed by a
 * 16- or 64-bit big-endian length, then the payload. */
#ifndef CHATD_WSFRAME_H
#define CHATD_WSFRAME_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define WSFRAME_MAX_HEADER 10

/* Writes the header of one final, unmasked frame of `len` payload bytes into
 * out (at least WSFRAME_MAX_HEADER bytes); returns its size: 2, 4 or 10. */
size_t wsframe_header(unsigned char *out, size_t len, bool binary);

/* Appends one complete frame (header + payload) to b. */
void wsframe_append(buf_t *b, const void *data, size_t len, bool binary);

/* One frame read back by wsframe_parse. */
typedef struct wsframe_view {
    bool fin;
    bool masked;
    unsigned opcode;
    uint64_t len;
    const unsigned char *payload; /* still masked when `masked` */
} wsframe_view;

/* Reads the frame at the start of p[0..n) (for tests and the fuzzer: the
 * server never parses its own output). Returns the frame's total size, 0 when
 * n holds only part of it, -1 when the header is invalid (reserved bits set,
 * a length not in its shortest form, or a 64-bit length with the top bit). */
long long wsframe_parse(const unsigned char *p, size_t n, wsframe_view *out);

#endif
