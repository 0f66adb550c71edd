/*
 * bench/relay.c — the floor on loopback: a trivial single-threaded epoll server that speaks just
 * enough Engine.IO v4 / Socket.IO v5 over WebSocket for bench/loadgen.c.
 *
 *   GET /socket.io/?EIO=4&transport=websocket   -> 101, then the open packet 0{"sid":…}
 *   40/chat,{…}                                  -> 40/chat,{"sid":…}   (no auth check)
 *   42/chat,N["join",{"chatId":X}]               -> joins room X, 43/chat,N[{"ok":true}]
 *   42/chat,["chat-message",{"chatId":X,…}]      -> the same packet to every member of X (sender
 *                                                   included) when the sender joined X
 *   2 -> 3; anything else is ignored. No pings, no timeouts, no polling transport.
 *
 * The broadcast frame is encoded once and written to each member's socket. It does the minimum
 * a Socket.IO server must do per delivery (one write per member), so its CPU per 1,000
 * deliveries is the kernel's share that no server can avoid.
 *
 * Usage: relay [ADDR:PORT]  (default: $CHATD_LISTEN or 127.0.0.1:8099)
 * Trust: clients are the load generator; bad input closes that client only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

struct buf {
    char *p;
    size_t off, len, cap;
};

static void buf_put(struct buf *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        if (b->off) {
            memmove(b->p, b->p + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->len + n)
            cap *= 2;
        if (cap != b->cap) {
            b->p = realloc(b->p, cap);
            if (!b->p)
                abort();
            b->cap = cap;
        }
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

struct room;

/* One per accepted connection; freed when it closes. */
struct client {
    int fd;
    int id;
    int upgraded;
    int epout;
    struct buf in, out;
    struct room *rooms[8];
    int nrooms;
};

/* One per room name ever joined; members are removed on close; never freed. */
struct room {
    char *name;
    struct client **m;
    int n, cap;
    struct room *next;
};

#define RBUCKETS 8192
static struct room *rtab[RBUCKETS];
static int epfd;
static int next_id;

static uint32_t hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static struct room *room_get(const char *name, size_t n, int create)
{
    uint32_t h = hash(name, n) % RBUCKETS;
    for (struct room *r = rtab[h]; r; r = r->next)
        if (strlen(r->name) == n && !memcmp(r->name, name, n))
            return r;
    if (!create)
        return NULL;
    struct room *r = calloc(1, sizeof(*r));
    r->name = strndup(name, n);
    r->next = rtab[h];
    rtab[h] = r;
    return r;
}

static void arm(struct client *c, int out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->epout = out;
}

static void cwrite(struct client *c, const void *d, size_t n)
{
    if (c->fd < 0)
        return;
    if (c->out.len == c->out.off) {
        ssize_t w = send(c->fd, d, n, MSG_NOSIGNAL);
        if (w < 0)
            w = 0;
        if ((size_t)w == n)
            return;
        d = (const char *)d + w;
        n -= (size_t)w;
    }
    buf_put(&c->out, d, n);
    if (!c->epout)
        arm(c, 1);
}

/* Encodes an unmasked server text frame header into h; returns its length. */
static size_t frame_hdr(uint8_t *h, size_t n)
{
    h[0] = 0x81;
    if (n < 126) {
        h[1] = (uint8_t)n;
        return 2;
    }
    if (n < 65536) {
        h[1] = 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    return 10;
}

static void send_text(struct client *c, const char *p, size_t n)
{
    static char f[65536 + 10];
    uint8_t h[10];
    size_t hl = frame_hdr(h, n);
    if (n + hl > sizeof(f))
        return;
    memcpy(f, h, hl);
    memcpy(f + hl, p, n);
    cwrite(c, f, hl + n);
}

static void close_client(struct client *c)
{
    for (int i = 0; i < c->nrooms; i++) {
        struct room *r = c->rooms[i];
        for (int j = 0; j < r->n; j++)
            if (r->m[j] == c) {
                r->m[j] = r->m[--r->n];
                break;
            }
    }
    close(c->fd);
    free(c->in.p);
    free(c->out.p);
    free(c);
}

static const char *find_chat_id(const char *p, size_t n, size_t *len)
{
    const char *k = memmem(p, n, "\"chatId\":\"", 10);
    if (!k)
        return NULL;
    k += 10;
    const char *e = memchr(k, '"', (size_t)(p + n - k));
    if (!e)
        return NULL;
    *len = (size_t)(e - k);
    return k;
}

/* One Engine.IO packet from a client. */
static void on_packet(struct client *c, char *p, size_t n)
{
    char out[256];
    if (n == 1 && p[0] == '2') {
        send_text(c, "3", 1);
        return;
    }
    if (n < 2 || p[0] != '4')
        return;
    if (p[1] == '0') {
        int l;
        if (n >= 8 && !memcmp(p + 2, "/chat,", 6))
            l = snprintf(out, sizeof(out), "40/chat,{\"sid\":\"r%d\"}", c->id);
        else
            l = snprintf(out, sizeof(out), "40{\"sid\":\"r%d\"}", c->id);
        send_text(c, out, (size_t)l);
        return;
    }
    if (p[1] != '2' || n < 8 || memcmp(p + 2, "/chat,", 6))
        return;
    size_t i = 8;
    long ack = -1;
    if (i < n && p[i] >= '0' && p[i] <= '9') {
        ack = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            ack = ack * 10 + (p[i++] - '0');
    }
    const char *args = p + i;
    size_t al = n - i;
    size_t cl;
    const char *cid = find_chat_id(args, al, &cl);
    if (al > 8 && !memcmp(args, "[\"join\"", 7) && cid) {
        struct room *r = room_get(cid, cl, 1);
        if (c->nrooms < 8) {
            if (r->n == r->cap) {
                r->cap = r->cap ? r->cap * 2 : 16;
                r->m = realloc(r->m, (size_t)r->cap * sizeof(*r->m));
            }
            r->m[r->n++] = c;
            c->rooms[c->nrooms++] = r;
        }
        if (ack >= 0) {
            int l = snprintf(out, sizeof(out), "43/chat,%ld[{\"ok\":true}]", ack);
            send_text(c, out, (size_t)l);
        }
        return;
    }
    if (al > 16 && !memcmp(args, "[\"chat-message\"", 15) && cid) {
        struct room *r = room_get(cid, cl, 0);
        int member = 0;
        for (int j = 0; r && j < c->nrooms; j++)
            member |= c->rooms[j] == r;
        if (member) {
            /* the broadcast packet has no ack id: "42/chat," + args */
            static char f[65536 + 32];
            size_t pl = 8 + al;
            uint8_t h[10];
            size_t hl = frame_hdr(h, pl);
            if (pl + hl <= sizeof(f)) {
                memcpy(f, h, hl);
                memcpy(f + hl, "42/chat,", 8);
                memcpy(f + hl + 8, args, al);
                for (int j = 0; j < r->n; j++)
                    cwrite(r->m[j], f, hl + pl);
            }
        }
        if (ack >= 0) {
            int l = snprintf(out, sizeof(out), "43/chat,%ld[{\"ok\":%s}]", ack, member ? "true" : "false");
            send_text(c, out, (size_t)l);
        }
    }
}

/* Returns -1 when the client must be closed. */
static int on_upgrade(struct client *c)
{
    char *p = c->in.p + c->in.off;
    size_t n = c->in.len - c->in.off;
    char *e = memmem(p, n, "\r\n\r\n", 4);
    if (!e)
        return n > 16384 ? -1 : 0;
    const char *k = NULL;
    size_t kl = 0;
    for (char *l = p; l && l < e; l = memchr(l, '\n', (size_t)(e - l))) {
        if (*l == '\n')
            l++;
        if (!strncasecmp(l, "Sec-WebSocket-Key:", 18)) {
            k = l + 18;
            while (*k == ' ')
                k++;
            const char *ke = k;
            while (ke < e && *ke != '\r')
                ke++;
            kl = (size_t)(ke - k);
        }
    }
    if (!k || kl > 64)
        return -1;
    char in[128];
    memcpy(in, k, kl);
    memcpy(in + kl, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    EVP_Digest(in, kl + 36, md, &ml, EVP_sha1(), NULL);
    unsigned char acc[64];
    EVP_EncodeBlock(acc, md, (int)ml);
    char resp[512];
    int rl = snprintf(resp, sizeof(resp),
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n\r\n",
                      acc);
    cwrite(c, resp, (size_t)rl);
    char open[256];
    int ol = snprintf(open, sizeof(open),
                      "0{\"sid\":\"e%d\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,"
                      "\"maxPayload\":1000000}",
                      c->id);
    send_text(c, open, (size_t)ol);
    buf_consume(&c->in, (size_t)(e - p) + 4);
    c->upgraded = 1;
    return 0;
}

/* Parses masked client frames; returns -1 to close. */
static int on_frames(struct client *c)
{
    for (;;) {
        uint8_t *f = (uint8_t *)c->in.p + c->in.off;
        size_t av = c->in.len - c->in.off;
        if (av < 2)
            return 0;
        size_t h = 2;
        uint64_t len = f[1] & 0x7f;
        if (len == 126) {
            if (av < 4)
                return 0;
            len = ((uint64_t)f[2] << 8) | f[3];
            h = 4;
        } else if (len == 127) {
            if (av < 10)
                return 0;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = (len << 8) | f[2 + i];
            h = 10;
        }
        if (!(f[1] & 0x80) || len > 1000000)
            return -1;
        h += 4;
        if (av < h + len)
            return 0;
        uint8_t *mk = f + h - 4;
        char *pl = (char *)f + h;
        for (uint64_t i = 0; i < len; i++)
            pl[i] ^= mk[i & 3];
        int op = f[0] & 0x0f;
        if (op == 8)
            return -1;
        if (op == 1 || op == 2)
            on_packet(c, pl, len);
        buf_consume(&c->in, h + len);
    }
}

int main(int argc, char **argv)
{
    const char *listen_on = argc > 1 ? argv[1] : getenv("CHATD_LISTEN");
    if (!listen_on)
        listen_on = "127.0.0.1:8099";
    char host[64];
    const char *colon = strrchr(listen_on, ':');
    if (!colon || (size_t)(colon - listen_on) >= sizeof(host)) {
        fprintf(stderr, "relay: bad address %s\n", listen_on);
        return 2;
    }
    memcpy(host, listen_on, (size_t)(colon - listen_on));
    host[colon - listen_on] = 0;
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 4096) < 0) {
        perror("relay: bind/listen");
        return 1;
    }
    epfd = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, ls, &lev);
    fprintf(stderr, "relay: listening on %s\n", listen_on);
    struct epoll_event evs[512];
    char rbuf[65536];
    for (;;) {
        int n = epoll_wait(epfd, evs, 512, -1);
        for (int i = 0; i < n; i++) {
            struct client *c = evs[i].data.ptr;
            if (!c) {
                for (;;) {
                    int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                    if (fd < 0)
                        break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    struct client *nc = calloc(1, sizeof(*nc));
                    nc->fd = fd;
                    nc->id = ++next_id;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                while (c->out.len > c->out.off) {
                    ssize_t w = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
                    if (w <= 0)
                        break;
                    buf_consume(&c->out, (size_t)w);
                }
                if (c->out.len == c->out.off)
                    arm(c, 0);
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = recv(c->fd, rbuf, sizeof(rbuf), 0);
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                    continue;
                if (r <= 0) {
                    close_client(c);
                    continue;
                }
                buf_put(&c->in, rbuf, (size_t)r);
                int rc = 0;
                if (!c->upgraded)
                    rc = on_upgrade(c);
                if (rc == 0 && c->upgraded)
                    rc = on_frames(c);
                if (rc < 0)
                    close_client(c);
            }
        }
    }
}
