/* Engine.IO v4 server: sessions over HTTP long-polling and WebSocket, the
 * polling->WebSocket upgrade, heartbeats and bounded outbound queues. Both
 * transports feed one session core and drain one queue, so behaviour cannot
 * diverge per transport (STYLE §29).
 *
 * Threading: everything runs on the one libuv loop. */
#ifndef CHATD_EIO_H
#define CHATD_EIO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/buf.h"
#include "gateway/frame.h"
#include "gateway/http.h"

typedef struct eio_server eio_server;
typedef struct eio_sock eio_sock;

/* What sits on an endpoint (the Socket.IO layer, or the bare echo of the
 * conformance mode). data/len of on_message borrow the transport's buffer. */
typedef struct eio_app {
    void (*on_open)(void *ctx, eio_sock *s);
    void (*on_message)(void *ctx, eio_sock *s, const char *data, size_t len, bool binary);
    void (*on_close)(void *ctx, eio_sock *s, const char *reason);
    void *ctx;
} eio_app;

typedef struct eio_options {
    int ping_interval_ms;
    int ping_timeout_ms;
    int64_t max_payload;
    int64_t max_outbound; /* per-session queued bytes before it is cut */
    int conn_rate_per_s;  /* new sessions per second per peer address, burst 4x (0 = off) */
} eio_options;

eio_server *eio_server_new(uv_loop_t *loop, const eio_options *opt);
/* Registers an endpoint at `path` (e.g. "/socket.io/") with the HTTP router. */
void eio_add_endpoint(eio_server *srv, const char *path, const eio_app *app);
/* Closes every session (clean WebSocket close, pending polls answered). */
void eio_close_all(eio_server *srv, const char *reason);
/* Frees the server once every session is gone (after the loop ran their closes). */
void eio_server_free(eio_server *srv);
size_t eio_session_count(const eio_server *srv);

#define EIO_SEND_VOLATILE 1u /* may be dropped when the socket is backed up */

/* Queues one packet in its WebSocket form (text "<type><data>" or raw binary).
 * Takes its own reference to f. Returns 0, 1 when a volatile frame was dropped,
 * or -1 when the session is closed (or was just cut for exceeding its bound). */
int eio_send_frame(eio_sock *s, gw_frame *f, unsigned flags);
/* Convenience: a MESSAGE packet with text data. */
int eio_send_message(eio_sock *s, const char *data, size_t len);
/* Server-side close: queued packets are flushed first. */
void eio_close(eio_sock *s, const char *reason);
/* Protocol error: the transport is closed at once, queued packets dropped. */
void eio_abort(eio_sock *s, const char *reason);
bool eio_is_closed(const eio_sock *s);

void *eio_get_user(const eio_sock *s);
void eio_set_user(eio_sock *s, void *user);
const char *eio_sid(const eio_sock *s);

/* ---- for the lws shell only ---------------------------------------------- */
struct lws;
/* Per-WebSocket connection state, embedded in the lws per-session data. */
typedef struct eio_ws {
    struct lws *wsi;
    eio_sock *s;
    eio_server *srv;
    bool is_probe;  /* attached to a polling session, upgrade not finished */
    bool kill;      /* close as soon as writeable (refused upgrade, error) */
    bool established;
    bool want_write; /* a WRITEABLE callback is requested and not yet run */
    buf_t rx;       /* message reassembly across fragments */
    bool rx_binary;
    bool rx_overflow;
    gw_frame *ctl;  /* a control frame for this connection only ("3probe") */
    const void *pending_ep; /* endpoint chosen in FILTER, session created in ESTABLISHED */
} eio_ws;

int eio_ws_filter(eio_server *srv, eio_ws *c, struct lws *wsi);
void eio_ws_established(eio_ws *c);
int eio_ws_receive(eio_ws *c, const void *in, size_t len);
int eio_ws_writeable(eio_ws *c);
void eio_ws_closed(eio_ws *c);

#endif
