/* Socket.IO v5 packet codec (pure: bytes in, packets out, no I/O).
 *
 * Text form: <type>[<attachments>-][<nsp>,][<ack id>][<JSON>]
 * Validation follows the reference parser (socket.io-parser 4.x): unknown type,
 * bad attachment count, unparsable JSON or a payload of the wrong shape for its
 * type is an error, and the caller closes the connection (SPEC §12.21). */
#ifndef CHATD_SIO_PACKET_H
#define CHATD_SIO_PACKET_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "common/buf.h"

enum sio_type {
    SIO_CONNECT = 0,
    SIO_DISCONNECT = 1,
    SIO_EVENT = 2,
    SIO_ACK = 3,
    SIO_CONNECT_ERROR = 4,
    SIO_BINARY_EVENT = 5,
    SIO_BINARY_ACK = 6,
};

enum sio_status {
    SIO_OK = 0,
    SIO_ERR_EMPTY = -1,
    SIO_ERR_TYPE = -2,
    SIO_ERR_ATTACHMENTS = -3,
    SIO_ERR_ACK_ID = -4,
    SIO_ERR_JSON = -5,
    SIO_ERR_PAYLOAD = -6, /* valid JSON, wrong shape for the packet type */
};

/* Binary attachments of one packet: 1..10, as socket.io-parser's decoder (maxAttachments 10;
 * a count of 0 is "Illegal attachments"). Each waits in memory until the packet is whole: with
 * 64 a client could park 64 x maxPayload per connection. */
#define SIO_MAX_ATTACHMENTS 10

/* A decoded packet. nsp and data borrow from the input buffer; json is owned
 * (NULL when there is no payload) and released by sio_packet_clear. */
typedef struct sio_packet {
    enum sio_type type;
    int attachments;
    const char *nsp; /* "/" when absent */
    size_t nsp_len;
    int64_t ack_id;  /* -1 when absent */
    const char *data;
    size_t data_len;
    cJSON *json;
} sio_packet;

/* Decodes one packet. On error *out holds nothing that needs clearing. */
int sio_decode(const char *buf, size_t len, sio_packet *out);
void sio_packet_clear(sio_packet *p);

/* Appends the packet header (everything before the JSON). nsp NULL or "/" = main. */
void sio_encode_header(buf_t *out, enum sio_type type, const char *nsp, int attachments,
                       int64_t ack_id);

/* For an EVENT payload `["name", a, b]`: the offset just past the first element,
 * pointing at ',' or ']'. Lets handlers reuse the argument bytes unchanged
 * (rename an event, turn its arguments into an ACK) without re-encoding.
 * Returns 0, or -1 if data does not start with an array whose first element is
 * a string or a number. */
int sio_skip_first_element(const char *data, size_t len, size_t *after);

/* True for the event names the protocol reserves (connect, disconnect, ...). */
bool sio_reserved_event(const char *name);

/* Counts {"_placeholder":true,"num":N} objects in a tree; returns -1 when one
 * is malformed or its num is out of [0, attachments). */
int sio_count_placeholders(const cJSON *json, int attachments);

/* True when [s, s+len) is one JSON value as JSON.parse takes it and a WebSocket text frame may
 * carry it: no raw control characters in strings, valid UTF-8 (the rule every socket payload
 * passes, for JSON that arrives another way, e.g. a REST body). */
bool sio_json_valid(const char *s, size_t len);

/* True when [s, s+len) is valid UTF-8 without control characters (U+0000-U+001F, U+007F):
 * text that PostgreSQL stores and a client can display, e.g. an id taken from a URL. */
bool sio_text_valid(const char *s, size_t len);

/* True when the JSON text [s, s+len) (valid per sio_json_valid) has a string holding U+0000,
 * i.e. an escape \u0000. An escaped backslash followed by "u0000" is text, not a NUL. */
bool sio_json_has_nul(const char *s, size_t len);

const char *sio_strerror(int status);

#endif
