/* Socket.IO v5 server on top of the Engine.IO sessions: namespaces, sockets,
 * acknowledgements both ways, binary attachments and rooms with broadcast.
 *
 * A broadcast encodes its packet once into shared frames; every recipient's
 * queue takes a reference (no per-recipient JSON work or copy). */
#ifndef CHATD_SIO_H
#define CHATD_SIO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "gateway/eio.h"
#include "gateway/frame.h"

typedef struct sio_server sio_server;
typedef struct sio_nsp sio_nsp;
typedef struct sio_socket sio_socket;

/* One received EVENT, borrowed for the duration of the handler call. */
typedef struct sio_event {
    const char *name;     /* event name */
    const cJSON *args;    /* first argument (siblings via ->next), NULL if none */
    const char *data;     /* the JSON array as received: ["name", ...] */
    size_t len;
    size_t rest;          /* offset in data of the ',' or ']' after the name */
    int64_t ack_id;       /* -1 when the client asked for no ack */
    gw_frame **attachments; /* binary attachments (binary frames), in num order */
    int nattach;
} sio_event;

typedef struct sio_nsp_ops {
    /* A client asked to join the namespace. auth is the CONNECT payload object
     * (NULL when none). The handler must call sio_accept or sio_reject, now or
     * later (take a reference with sio_socket_ref to answer later). */
    void (*on_connect)(void *ctx, sio_socket *s, const cJSON *auth, const char *auth_raw,
                       size_t auth_len);
    void (*on_event)(void *ctx, sio_socket *s, const sio_event *ev);
    /* The socket left (client disconnect, transport close, server disconnect).
     * Called once, only for accepted sockets. */
    void (*on_disconnect)(void *ctx, sio_socket *s, const char *reason);
    /* Optional, called just before on_disconnect while the socket is still in
     * its rooms (Socket.IO's "disconnecting"). */
    void (*on_disconnecting)(void *ctx, sio_socket *s, const char *reason);
} sio_nsp_ops;

sio_server *sio_server_new(eio_server *eio, const char *path);
void sio_server_free(sio_server *srv);
sio_nsp *sio_add_namespace(sio_server *srv, const char *name, const sio_nsp_ops *ops, void *ctx);
const char *sio_nsp_name(const sio_nsp *nsp);

void sio_accept(sio_socket *s);
/* Accepts with connection state recovery: the CONNECT answer carries `pid`
 * too, and a non-NULL `sid` (at most 20 characters) replaces the socket's id
 * (a recovered session keeps the id it had). */
void sio_accept_recoverable(sio_socket *s, const char *sid, const char *pid);
/* A random 20-character id of [A-Za-z0-9_-] (120 bits), like socket ids. */
void sio_random_id(char out[21]);
/* CONNECT_ERROR with `json` as data (an object), then the socket is dropped. */
void sio_reject(sio_socket *s, const char *json);
/* Server-side disconnect from the namespace (client sees "io server disconnect"). */
void sio_disconnect(sio_socket *s);

void sio_socket_ref(sio_socket *s);
void sio_socket_unref(sio_socket *s);
bool sio_connected(const sio_socket *s);
const char *sio_id(const sio_socket *s);
sio_nsp *sio_nsp_of(const sio_socket *s);
eio_sock *sio_eio(const sio_socket *s);
void *sio_get_user(const sio_socket *s);
void sio_set_user(sio_socket *s, void *user);

/* Emits an EVENT whose payload is the JSON array `args` (["name", ...]).
 * attachments (may be NULL) are binary frames referenced by placeholders. */
int sio_emit(sio_socket *s, const char *args, size_t len, gw_frame **att, int natt,
             unsigned flags);
/* Answers an ack id with the JSON array `args` ([...]). */
int sio_ack(sio_socket *s, int64_t ack_id, const char *args, size_t len, gw_frame **att,
            int natt);
/* Emits with an ack request; cb gets the ack's arguments (an array), or NULL
 * when the socket disconnected first. */
typedef void (*sio_ack_cb)(void *ctx, sio_socket *s, const cJSON *args);
int sio_emit_with_ack(sio_socket *s, const char *args, size_t len, sio_ack_cb cb, void *ctx);

/* Rooms (per namespace). */
void sio_join(sio_socket *s, const char *room);
void sio_leave(sio_socket *s, const char *room);
bool sio_in_room(const sio_socket *s, const char *room);
/* Calls fn for every room the socket is in (fn must not join or leave). */
void sio_socket_rooms(const sio_socket *s, void (*fn)(void *ctx, const char *room), void *ctx);
size_t sio_room_size(const sio_nsp *nsp, const char *room);
/* Sends an EVENT to every member of room except `except` (may be NULL).
 * Returns the number of sockets it was queued for. */
size_t sio_broadcast(sio_nsp *nsp, const char *room, const char *args, size_t len,
                     gw_frame **att, int natt, const sio_socket *except, unsigned flags);
/* Builds the frames of an EVENT once (for callers that fan out themselves). */
int sio_event_frames(const sio_nsp *nsp, const char *args, size_t len, gw_frame **att, int natt,
                     gw_frame **out, int maxout);
/* Queues ready-made frames (from sio_event_frames) for one socket. */
int sio_send_frames(sio_socket *s, gw_frame **frames, int nframes, unsigned flags);
/* Calls fn for every member of room (a snapshot: fn may join, leave or
 * disconnect sockets). Returns the number of members visited. */
size_t sio_room_foreach(sio_nsp *nsp, const char *room, void (*fn)(void *ctx, sio_socket *s),
                        void *ctx);

#endif
