/* Socket.IO v5 layer: turns Engine.IO messages into namespace/socket events.
 * Protocol errors close the whole connection (SPEC §12.21); other clients are
 * never affected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/log.h"
#include "common/strmap.h"
#include "common/xalloc.h"
#include "gateway/sio.h"
#include "gateway/sio_packet.h"

struct room;

struct membership {
    struct room *room;
    size_t idx; /* position in room->members */
};

struct room {
    char *name;
    sio_socket **members;
    size_t n, cap;
};

struct sio_nsp {
    sio_server *srv;
    char *name;
    sio_nsp_ops ops;
    void *ctx;
    strmap rooms; /* name -> struct room */
};

struct pending_ack {
    struct pending_ack *next;
    int64_t id;
    sio_ack_cb cb;
    void *ctx;
};

struct sio_client;

struct sio_socket {
    struct sio_client *client; /* NULL once disconnected */
    sio_nsp *nsp;
    char id[24];
    unsigned refs;
    bool connected; /* CONNECT accepted */
    bool gone;      /* disconnected or rejected */
    struct membership *rooms;
    size_t nrooms, caprooms;
    struct pending_ack *acks;
    int64_t next_ack;
    void *user;
    sio_socket *next; /* in the client's list */
};

/* One per Engine.IO session. */
struct sio_client {
    sio_server *srv;
    eio_sock *eio;
    sio_socket *sockets;
    /* a BINARY_EVENT/ACK waiting for its attachments */
    char *bin_text;
    size_t bin_len;
    int bin_need;
    gw_frame *bin_att[SIO_MAX_ATTACHMENTS];
    int bin_have;
};

#define MAX_NSPS 8

struct sio_server {
    eio_server *eio;
    sio_nsp *nsps[MAX_NSPS];
    int nnsps;
    buf_t scratch;
};

/* ---- sockets ---------------------------------------------------------------- */

void sio_socket_ref(sio_socket *s) { s->refs++; }
bool sio_connected(const sio_socket *s) { return s->connected && !s->gone; }
const char *sio_id(const sio_socket *s) { return s->id; }
sio_nsp *sio_nsp_of(const sio_socket *s) { return s->nsp; }
eio_sock *sio_eio(const sio_socket *s) { return s->client ? s->client->eio : NULL; }
void *sio_get_user(const sio_socket *s) { return s->user; }
void sio_set_user(sio_socket *s, void *user) { s->user = user; }
const char *sio_nsp_name(const sio_nsp *nsp) { return nsp->name; }

void sio_socket_unref(sio_socket *s)
{
    if (!s || --s->refs)
        return;
    free(s->rooms);
    free(s);
}

void sio_random_id(char out[21])
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char r[20];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        for (size_t i = 0; i < sizeof r; i++)
            r[i] = (unsigned char)rand();
    for (int i = 0; i < 20; i++)
        out[i] = abc[r[i] & 63];
    out[20] = '\0';
}

static void leave_all(sio_socket *s)
{
    while (s->nrooms)
        sio_leave(s, s->rooms[s->nrooms - 1].room->name);
}

static void fail_acks(sio_socket *s)
{
    struct pending_ack *a = s->acks;
    s->acks = NULL;
    while (a) {
        struct pending_ack *n = a->next;
        if (a->cb)
            a->cb(a->ctx, s, NULL);
        free(a);
        a = n;
    }
}

/* Removes s from its client and runs on_disconnect (for accepted sockets). */
static void socket_remove(sio_socket *s, const char *reason)
{
    if (s->gone)
        return;
    s->gone = true;
    struct sio_client *c = s->client;
    for (sio_socket **pp = &c->sockets; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    if (s->connected && s->nsp->ops.on_disconnecting)
        s->nsp->ops.on_disconnecting(s->nsp->ctx, s, reason);
    leave_all(s);
    fail_acks(s);
    if (s->connected && s->nsp->ops.on_disconnect)
        s->nsp->ops.on_disconnect(s->nsp->ctx, s, reason);
    s->connected = false;
    s->client = NULL;
    sio_socket_unref(s);
}

static sio_socket *find_socket(struct sio_client *c, const char *nsp, size_t len)
{
    for (sio_socket *s = c->sockets; s; s = s->next)
        if (strlen(s->nsp->name) == len && !memcmp(s->nsp->name, nsp, len))
            return s;
    return NULL;
}

/* ---- sending ------------------------------------------------------------------ */

/* Encodes one packet into frames: out[0] the text header+JSON, then attachments. */
static int encode(sio_server *srv, const sio_nsp *nsp, enum sio_type type, int64_t ack_id,
                  const char *json, size_t len, gw_frame **att, int natt, gw_frame **out,
                  int maxout)
{
    if (natt + 1 > maxout)
        return -1;
    buf_t *b = &srv->scratch;
    buf_reset(b);
    buf_putc(b, '4'); /* Engine.IO MESSAGE */
    if (natt > 0)
        type = type == SIO_ACK ? SIO_BINARY_ACK : SIO_BINARY_EVENT;
    sio_encode_header(b, type, nsp->name, natt, ack_id);
    buf_append(b, json, len);
    out[0] = frame_new(b->data, b->len, false);
    for (int i = 0; i < natt; i++)
        out[i + 1] = frame_ref(att[i]);
    return natt + 1;
}

static int send_frames(sio_socket *s, gw_frame **frames, int n, unsigned flags)
{
    int rc = 0;
    eio_sock *e = sio_eio(s);
    for (int i = 0; i < n && e; i++)
        if (rc >= 0 && eio_send_frame(e, frames[i], flags) < 0)
            rc = -1;
    for (int i = 0; i < n; i++)
        frame_unref(frames[i]);
    return e ? rc : -1;
}

static int send_packet(sio_socket *s, enum sio_type type, int64_t ack_id, const char *json,
                       size_t len, gw_frame **att, int natt, unsigned flags)
{
    if (!s->client)
        return -1;
    gw_frame *frames[SIO_MAX_ATTACHMENTS + 1];
    int n = encode(s->client->srv, s->nsp, type, ack_id, json, len, att, natt, frames,
                   SIO_MAX_ATTACHMENTS + 1);
    if (n < 0)
        return -1;
    return send_frames(s, frames, n, natt ? 0 : flags);
}

int sio_emit(sio_socket *s, const char *args, size_t len, gw_frame **att, int natt,
             unsigned flags)
{
    if (!sio_connected(s))
        return -1;
    return send_packet(s, SIO_EVENT, -1, args, len, att, natt, flags);
}

int sio_ack(sio_socket *s, int64_t ack_id, const char *args, size_t len, gw_frame **att,
            int natt)
{
    if (!sio_connected(s) || ack_id < 0)
        return -1;
    return send_packet(s, SIO_ACK, ack_id, args, len, att, natt, 0);
}

int sio_emit_with_ack(sio_socket *s, const char *args, size_t len, sio_ack_cb cb, void *ctx)
{
    if (!sio_connected(s))
        return -1;
    struct pending_ack *a = xmalloc(sizeof *a);
    a->id = s->next_ack++;
    a->cb = cb;
    a->ctx = ctx;
    a->next = s->acks;
    s->acks = a;
    return send_packet(s, SIO_EVENT, a->id, args, len, NULL, 0, 0);
}

void sio_accept(sio_socket *s)
{
    sio_accept_recoverable(s, NULL, NULL);
}

void sio_accept_recoverable(sio_socket *s, const char *sid, const char *pid)
{
    if (s->gone || s->connected)
        return;
    s->connected = true;
    if (sid && strlen(sid) < sizeof s->id)
        snprintf(s->id, sizeof s->id, "%s", sid);
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{\"sid\":");
    buf_json_str(&b, s->id, strlen(s->id));
    if (pid) {
        buf_puts(&b, ",\"pid\":");
        buf_json_str(&b, pid, strlen(pid));
    }
    buf_putc(&b, '}');
    send_packet(s, SIO_CONNECT, -1, b.data, b.len, NULL, 0, 0);
    buf_free(&b);
}

void sio_reject(sio_socket *s, const char *json)
{
    if (s->gone)
        return;
    if (s->client)
        send_packet(s, SIO_CONNECT_ERROR, -1, json, strlen(json), NULL, 0, 0);
    s->connected = false; /* never accepted: no on_disconnect */
    socket_remove(s, "connect error");
}

void sio_disconnect(sio_socket *s)
{
    if (s->gone)
        return;
    if (s->connected)
        send_packet(s, SIO_DISCONNECT, -1, "", 0, NULL, 0, 0);
    socket_remove(s, "server namespace disconnect");
}

/* ---- rooms -------------------------------------------------------------------- */

void sio_socket_rooms(const sio_socket *s, void (*fn)(void *ctx, const char *room), void *ctx)
{
    for (size_t i = 0; i < s->nrooms; i++)
        fn(ctx, s->rooms[i].room->name);
}

void sio_join(sio_socket *s, const char *name)
{
    if (s->gone || sio_in_room(s, name))
        return;
    sio_nsp *nsp = s->nsp;
    size_t nl = strlen(name);
    struct room *r = strmap_get(&nsp->rooms, name, nl);
    if (!r) {
        r = xcalloc(1, sizeof *r);
        r->name = xstrdup(name);
        strmap_put(&nsp->rooms, name, nl, r);
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 4;
        r->members = xrealloc(r->members, r->cap * sizeof *r->members);
    }
    if (s->nrooms == s->caprooms) {
        s->caprooms = s->caprooms ? s->caprooms * 2 : 4;
        s->rooms = xrealloc(s->rooms, s->caprooms * sizeof *s->rooms);
    }
    s->rooms[s->nrooms++] = (struct membership){r, r->n};
    r->members[r->n++] = s;
}

static struct membership *membership_of(const sio_socket *s, const struct room *r)
{
    for (size_t i = 0; i < s->nrooms; i++)
        if (s->rooms[i].room == r)
            return &s->rooms[i];
    return NULL;
}

void sio_leave(sio_socket *s, const char *name)
{
    sio_nsp *nsp = s->nsp;
    size_t nl = strlen(name);
    struct room *r = strmap_get(&nsp->rooms, name, nl);
    struct membership *m = r ? membership_of(s, r) : NULL;
    if (!m)
        return;
    /* swap-remove from the room, fixing the moved member's index */
    size_t idx = m->idx;
    sio_socket *last = r->members[--r->n];
    if (idx != r->n) {
        r->members[idx] = last;
        membership_of(last, r)->idx = idx;
    }
    /* and from the socket */
    *m = s->rooms[--s->nrooms];
    if (r->n == 0) {
        strmap_del(&nsp->rooms, name, nl);
        free(r->members);
        free(r->name);
        free(r);
    }
}

bool sio_in_room(const sio_socket *s, const char *name)
{
    for (size_t i = 0; i < s->nrooms; i++)
        if (!strcmp(s->rooms[i].room->name, name))
            return true;
    return false;
}

size_t sio_room_size(const sio_nsp *nsp, const char *room)
{
    struct room *r = strmap_get(&nsp->rooms, room, strlen(room));
    return r ? r->n : 0;
}

int sio_event_frames(const sio_nsp *nsp, const char *args, size_t len, gw_frame **att, int natt,
                     gw_frame **out, int maxout)
{
    return encode(nsp->srv, nsp, SIO_EVENT, -1, args, len, att, natt, out, maxout);
}

static size_t broadcast_frames(sio_nsp *nsp, const char *room, gw_frame **frames, int nframes,
                               const sio_socket *except, unsigned flags)
{
    struct room *r = strmap_get(&nsp->rooms, room, strlen(room));
    if (!r)
        return 0;
    if (nframes > 1)
        flags &= ~EIO_SEND_VOLATILE; /* a binary packet is never split by a drop */
    size_t sent = 0;
    /* A send may cut a slow member, which leaves the room: walk a snapshot. */
    size_t n = r->n;
    sio_socket *small[64];
    sio_socket **members = n <= 64 ? small : xmalloc(n * sizeof *members);
    memcpy(members, r->members, n * sizeof *members);
    for (size_t i = 0; i < n; i++)
        sio_socket_ref(members[i]);
    for (size_t i = 0; i < n; i++) {
        sio_socket *m = members[i];
        eio_sock *e = sio_eio(m);
        if (m != except && e && sio_connected(m)) {
            int ok = 1;
            for (int k = 0; k < nframes && ok; k++)
                ok = eio_send_frame(e, frames[k], flags) == 0;
            sent += ok;
        }
    }
    for (size_t i = 0; i < n; i++)
        sio_socket_unref(members[i]);
    if (members != small)
        free(members);
    return sent;
}

int sio_send_frames(sio_socket *s, gw_frame **frames, int nframes, unsigned flags)
{
    eio_sock *e = sio_eio(s);
    if (!e || !sio_connected(s))
        return -1;
    if (nframes > 1)
        flags &= ~EIO_SEND_VOLATILE;
    for (int k = 0; k < nframes; k++)
        if (eio_send_frame(e, frames[k], flags) != 0)
            return -1;
    return 0;
}

size_t sio_room_foreach(sio_nsp *nsp, const char *room, void (*fn)(void *ctx, sio_socket *s),
                        void *ctx)
{
    struct room *r = strmap_get(&nsp->rooms, room, strlen(room));
    if (!r)
        return 0;
    size_t n = r->n;
    sio_socket *small[64];
    sio_socket **members = n <= 64 ? small : xmalloc(n * sizeof *members);
    memcpy(members, r->members, n * sizeof *members);
    for (size_t i = 0; i < n; i++)
        sio_socket_ref(members[i]);
    for (size_t i = 0; i < n; i++) {
        if (!members[i]->gone)
            fn(ctx, members[i]);
        sio_socket_unref(members[i]);
    }
    if (members != small)
        free(members);
    return n;
}

size_t sio_broadcast(sio_nsp *nsp, const char *room, const char *args, size_t len,
                     gw_frame **att, int natt, const sio_socket *except, unsigned flags)
{
    gw_frame *frames[SIO_MAX_ATTACHMENTS + 1];
    int n = sio_event_frames(nsp, args, len, att, natt, frames, SIO_MAX_ATTACHMENTS + 1);
    if (n < 0)
        return 0;
    size_t sent = broadcast_frames(nsp, room, frames, n, except, flags);
    for (int i = 0; i < n; i++)
        frame_unref(frames[i]);
    return sent;
}

/* ---- receiving ------------------------------------------------------------------ */

static void on_connect_packet(struct sio_client *c, const sio_packet *p)
{
    sio_nsp *nsp = NULL;
    for (int i = 0; i < c->srv->nnsps; i++)
        if (strlen(c->srv->nsps[i]->name) == p->nsp_len &&
            !memcmp(c->srv->nsps[i]->name, p->nsp, p->nsp_len))
            nsp = c->srv->nsps[i];
    if (!nsp) {
        buf_t b;
        buf_init(&b);
        buf_putc(&b, '4');
        buf_putc(&b, '4');
        if (!(p->nsp_len == 1 && p->nsp[0] == '/')) {
            buf_append(&b, p->nsp, p->nsp_len);
            buf_putc(&b, ',');
        }
        buf_puts(&b, "{\"message\":\"Invalid namespace\"}");
        eio_send_message(c->eio, b.data + 1, b.len - 1);
        buf_free(&b);
        return;
    }
    if (find_socket(c, p->nsp, p->nsp_len))
        return; /* already connected (or connecting) to it */
    sio_socket *s = xcalloc(1, sizeof *s);
    s->client = c;
    s->nsp = nsp;
    s->refs = 1;
    sio_random_id(s->id);
    s->next = c->sockets;
    c->sockets = s;
    sio_socket_ref(s); /* the handler may reject (and free) inside the call */
    nsp->ops.on_connect(nsp->ctx, s, p->json, p->data, p->data_len);
    sio_socket_unref(s);
}

static void on_ack_packet(sio_socket *s, const sio_packet *p)
{
    for (struct pending_ack **pp = &s->acks; *pp; pp = &(*pp)->next) {
        struct pending_ack *a = *pp;
        if (a->id == p->ack_id) {
            *pp = a->next;
            if (a->cb)
                a->cb(a->ctx, s, p->json);
            free(a);
            return;
        }
    }
}

static void dispatch_event(sio_socket *s, const sio_packet *p, gw_frame **att, int natt)
{
    const cJSON *first = p->json->child;
    char num[32];
    const char *name = first->valuestring;
    if (cJSON_IsNumber(first)) {
        snprintf(num, sizeof num, "%g", first->valuedouble);
        name = num;
    }
    sio_event ev = {
        .name = name,
        .args = first->next,
        .data = p->data,
        .len = p->data_len,
        .ack_id = p->ack_id,
        .attachments = att,
        .nattach = natt,
    };
    if (sio_skip_first_element(p->data, p->data_len, &ev.rest) != 0)
        ev.rest = p->data_len - 1; /* unreachable after validation; keep it safe */
    if (s->nsp->ops.on_event)
        s->nsp->ops.on_event(s->nsp->ctx, s, &ev);
}

/* Handles one decoded packet; returns -1 when the connection must close. */
static int handle_packet(struct sio_client *c, const sio_packet *p, gw_frame **att, int natt)
{
    if (p->type == SIO_CONNECT) {
        on_connect_packet(c, p);
        return 0;
    }
    sio_socket *s = find_socket(c, p->nsp, p->nsp_len);
    switch (p->type) {
    case SIO_DISCONNECT:
        if (s)
            socket_remove(s, "client namespace disconnect");
        return 0;
    case SIO_EVENT:
    case SIO_BINARY_EVENT:
        if (!s)
            return -1; /* an event before CONNECT */
        if (s->connected) {
            sio_socket_ref(s);
            dispatch_event(s, p, att, natt);
            sio_socket_unref(s);
        }
        return 0;
    case SIO_ACK:
    case SIO_BINARY_ACK:
        if (!s)
            return -1;
        on_ack_packet(s, p);
        return 0;
    default: /* CONNECT_ERROR is server-to-client only */
        return -1;
    }
}

static void bin_reset(struct sio_client *c)
{
    free(c->bin_text);
    c->bin_text = NULL;
    for (int i = 0; i < c->bin_have; i++)
        frame_unref(c->bin_att[i]);
    c->bin_have = c->bin_need = 0;
}

static void on_message(void *ctx, eio_sock *e, const char *data, size_t len, bool binary)
{
    struct sio_client *c = eio_get_user(e);
    if (!c)
        return;
    if (binary) {
        if (!c->bin_text) {
            eio_abort(e, "parse error"); /* attachment without a packet */
            return;
        }
        c->bin_att[c->bin_have++] = frame_new(data, len, true);
        if (c->bin_have < c->bin_need)
            return;
        /* Take the packet out of the client first: the handler may close it. */
        gw_frame *att[SIO_MAX_ATTACHMENTS];
        int natt = c->bin_have;
        memcpy(att, c->bin_att, (size_t)natt * sizeof *att);
        char *text = c->bin_text;
        size_t tlen = c->bin_len;
        c->bin_text = NULL;
        c->bin_have = c->bin_need = 0;
        sio_packet p;
        int rc = sio_decode(text, tlen, &p);
        if (rc == SIO_OK) {
            rc = handle_packet(c, &p, att, natt);
            sio_packet_clear(&p);
        }
        free(text);
        for (int i = 0; i < natt; i++)
            frame_unref(att[i]);
        if (rc != 0)
            eio_abort(e, "parse error");
        return;
    }
    if (c->bin_text) {
        eio_abort(e, "parse error"); /* text while attachments are due */
        return;
    }
    sio_packet p;
    int rc = sio_decode(data, len, &p);
    if (rc != SIO_OK) {
        log_debug("sio %s: %s", eio_sid(e), sio_strerror(rc));
        eio_abort(e, "parse error");
        return;
    }
    if ((p.type == SIO_BINARY_EVENT || p.type == SIO_BINARY_ACK) && p.attachments > 0) {
        c->bin_text = xstrndup(data, len);
        c->bin_len = len;
        c->bin_need = p.attachments;
        sio_packet_clear(&p);
        return;
    }
    rc = handle_packet(c, &p, NULL, 0);
    sio_packet_clear(&p);
    if (rc != 0)
        eio_abort(e, "parse error");
}

static void on_open(void *ctx, eio_sock *e)
{
    struct sio_client *c = xcalloc(1, sizeof *c);
    c->srv = ctx;
    c->eio = e;
    eio_set_user(e, c);
}

static void on_close(void *ctx, eio_sock *e, const char *reason)
{
    struct sio_client *c = eio_get_user(e);
    if (!c)
        return;
    eio_set_user(e, NULL);
    while (c->sockets)
        socket_remove(c->sockets, reason);
    bin_reset(c);
    free(c);
}

sio_server *sio_server_new(eio_server *eio, const char *path)
{
    sio_server *srv = xcalloc(1, sizeof *srv);
    srv->eio = eio;
    buf_init(&srv->scratch);
    eio_app app = {on_open, on_message, on_close, srv};
    eio_add_endpoint(eio, path, &app);
    return srv;
}

sio_nsp *sio_add_namespace(sio_server *srv, const char *name, const sio_nsp_ops *ops, void *ctx)
{
    if (srv->nnsps == MAX_NSPS)
        abort();
    sio_nsp *nsp = xcalloc(1, sizeof *nsp);
    nsp->srv = srv;
    nsp->name = xstrdup(name);
    nsp->ops = *ops;
    nsp->ctx = ctx;
    strmap_init(&nsp->rooms);
    srv->nsps[srv->nnsps++] = nsp;
    return nsp;
}

void sio_server_free(sio_server *srv)
{
    if (!srv)
        return;
    for (int i = 0; i < srv->nnsps; i++) {
        sio_nsp *nsp = srv->nsps[i];
        size_t it;
        for (strmap_entry *e = strmap_first(&nsp->rooms, &it); e; e = strmap_next(&nsp->rooms, e, &it)) {
            struct room *r = e->value;
            free(r->members);
            free(r->name);
            free(r);
        }
        strmap_free(&nsp->rooms);
        free(nsp->name);
        free(nsp);
    }
    buf_free(&srv->scratch);
    free(srv);
}
