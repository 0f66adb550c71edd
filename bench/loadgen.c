/*
 * bench/loadgen.c — load generator for chatd and its references.
 *
 * Speaks Engine.IO v4 / Socket.IO v5 itself, over raw WebSocket (own HTTP upgrade, own framing,
 * client masking) or over HTTP long-polling (handshake GET, POST for client packets, held GET for
 * server packets). No client library, one thread, one epoll set.
 *
 * Open loop: messages are sent on a fixed schedule (start + k / rate); each message carries its
 * *scheduled* send time (CLOCK_MONOTONIC ns) in "ts" (or in its clientId, for servers that rewrite
 * the payload), and every receiver measures latency from that timestamp. So a generator that falls
 * behind shows up as latency, never as a lower offered rate.
 *
 * Scenarios (--scenario):
 *   idle     open N connections (paced by --connect-rate / --concurrency), join, hold, report the
 *            connect rate and the server's RSS per connection (--pid).
 *   storm    the same as idle with no pacing: connect rate, connect latency, errors.
 *   fanout   R rooms x M members; at --rate messages/s a member of each room in turn emits
 *            chat-message to its room; deliveries, latency percentiles, server CPU per 1,000
 *            deliveries (--pid / --cpu-cmd). --ramp multiplies the rate step by step while
 *            p99 <= --slo-ms and delivered >= 99.9 %, and reports the best step.
 *   persist  like fanout, but room member 0 is a customer that opens a chat with its first
 *            chat-message (ack carries the chatId) and sends with acks; the other members observe
 *            the chat (observe-chat) and receive. Ack latency is measured too.
 * --transport polling runs any of them over HTTP long-polling instead of WebSocket.
 *
 * Output: one JSON object per line on stdout ("kind":"step" per ramp step, "kind":"result" once).
 * Trust: the server under test is trusted to speak the protocol; malformed input closes the
 * connection and is counted, it never crashes the generator.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------ */
/* time and histograms                                                                         */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * Log-linear histogram (HdrHistogram-like): values below 64 are exact, above that each power of
 * two is split into 64 sub-buckets, so any recorded value is known within 1/64 (1.6 %).
 * Values are nanoseconds. One per metric, static storage, never freed.
 */
#define H_SUB_BITS 6
#define H_SUB (1 << H_SUB_BITS)
#define H_BUCKETS ((64 - H_SUB_BITS + 1) * H_SUB)

struct hist {
    uint64_t n;
    int64_t max;
    uint64_t c[H_BUCKETS];
};

static int h_index(uint64_t v)
{
    if (v < H_SUB)
        return (int)v;
    int e = 63 - __builtin_clzll(v);
    return (e - H_SUB_BITS + 1) * H_SUB + (int)((v >> (e - H_SUB_BITS)) & (H_SUB - 1));
}

/* Middle of bucket i, the value reported for it. */
static double h_value(int i)
{
    if (i < H_SUB)
        return i;
    int e = i / H_SUB + H_SUB_BITS - 1;
    uint64_t sub = (uint64_t)(i % H_SUB);
    uint64_t lo = (H_SUB + sub) << (e - H_SUB_BITS);
    return (double)lo + (double)((uint64_t)1 << (e - H_SUB_BITS)) / 2.0;
}

static void h_add(struct hist *h, int64_t v)
{
    if (v < 0)
        v = 0;
    h->c[h_index((uint64_t)v)]++;
    h->n++;
    if (v > h->max)
        h->max = v;
}

/* Value (ns) at quantile q in [0,1]; 0 for an empty histogram. */
static double h_quantile(const struct hist *h, double q)
{
    if (!h->n)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->n + 0.999999);
    if (want < 1)
        want = 1;
    uint64_t acc = 0;
    for (int i = 0; i < H_BUCKETS; i++) {
        acc += h->c[i];
        if (acc >= want) {
            double v = h_value(i);
            return v > (double)h->max ? (double)h->max : v;
        }
    }
    return (double)h->max;
}

static void h_reset(struct hist *h) { memset(h, 0, sizeof(*h)); }

/* ------------------------------------------------------------------------------------------ */
/* byte buffers                                                                                 */

/* A growable byte buffer; live data is p[off..len). Owned by its container. */
struct buf {
    char *p;
    size_t off, len, cap;
};

static void buf_reserve(struct buf *b, size_t n)
{
    if (b->len + n <= b->cap)
        return;
    if (b->off) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + n <= b->cap)
            return;
    }
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        fprintf(stderr, "loadgen: out of memory\n");
        abort();
    }
    b->p = p;
    b->cap = cap;
}

static void buf_put(struct buf *b, const void *d, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static size_t buf_avail(const struct buf *b) { return b->len - b->off; }
static char *buf_data(const struct buf *b) { return b->p + b->off; }

static void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

static void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ------------------------------------------------------------------------------------------ */
/* options and state                                                                            */

enum scenario { SC_IDLE, SC_STORM, SC_FANOUT, SC_PERSIST };
enum transport { TR_WS, TR_POLLING };

static struct {
    const char *host;
    int port;
    enum scenario sc;
    enum transport tr;
    const char *label;
    const char *ns;
    int conns, rooms, members;
    double rate;          /* messages/s offered (fanout, persist) */
    double duration;      /* measure window per step, s */
    double warmup;        /* s before each measure window */
    double drain;         /* max s after each window */
    double hold;          /* idle/storm: s to hold after connecting, before sampling RSS */
    double connect_rate;  /* new connections/s, 0 = unpaced */
    int concurrency;      /* max handshakes in flight */
    double connect_timeout;
    int join;
    int size;             /* text bytes */
    int ramp;             /* fanout/persist: ramp mode */
    double ramp_factor;
    int ramp_steps;
    int ramp_retries;     /* failed steps retried at the same rate before the ramp stops */
    double slo_ms;
    double min_ratio;
    int batch_us;         /* minimum gap between polls (0: wake for every event) */
    pid_t pids[16];
    int npids;
    pid_t trees[8];       /* --pid-tree: a process, its reaped children and its live children */
    int ntrees;
    const char *cpu_cmd;
    const char *token;
    const char *customer_tokens; /* file, one token per line (persist) */
    const char *agent_token;
    const char *agent_tokens;    /* file, one token per line: one per observer socket (persist) */
    const char *auth_extra;      /* JSON members appended to the auth object */
} opt = {
    .host = "127.0.0.1",
    .port = 8080,
    .sc = SC_FANOUT,
    .tr = TR_WS,
    .label = "server",
    .ns = "/chat",
    .conns = 0,
    .rooms = 100,
    .members = 10,
    .rate = 600,
    .duration = 10,
    .warmup = 2,
    .drain = 3,
    .hold = 2,
    .connect_rate = 0,
    .concurrency = 256,
    .connect_timeout = 60,
    .join = 1,
    .size = 32,
    .ramp = 0,
    .ramp_factor = 1.25,
    .ramp_steps = 16,
    .ramp_retries = 1,
    .slo_ms = 50,
    .min_ratio = 0.999,
    .token = "bench",
};

enum ep_kind { EP_WS, EP_GET, EP_POST };

/* One TCP connection. A WebSocket conn has one, a polling conn two (GET and POST). */
struct ep {
    int fd;
    int kind;
    int connected;
    int epout;  /* EPOLLOUT armed */
    int busy;   /* polling: a request is in flight */
    struct conn *c;
    struct buf in, out;
};

enum cstate {
    C_NEW,      /* not started */
    C_HTTP,     /* TCP connecting / upgrade or handshake sent */
    C_OPEN,     /* WebSocket up, waiting for the Engine.IO open packet */
    C_NSCONN,   /* Socket.IO CONNECT sent */
    C_SETUP,    /* join / open-chat / observe sent, waiting for its ack */
    C_WAITCHAT, /* persist observer: waiting for its room's chat id */
    C_READY,
    C_DEAD,
};

#define ACK_RING 4096

/* One simulated client. Created for the whole run in one array; never freed before exit. */
struct conn {
    int id, room, member;
    int state;
    int setup_ack;
    int64_t t0;
    uint32_t mask;
    struct ep a, b;
    char sid[64];
    struct buf pend; /* polling: client packets waiting for the next POST */
    struct buf inflight_post; /* polling: body of the POST in flight, resent once if a reused
                                 keep-alive connection is closed before any response byte */
    int post_retried;
    int64_t last_seq; /* persist: last "seq" of a delivered chat-message (gap/order check) */
    uint32_t next_ack;
    int64_t ack_ts[ACK_RING];
    uint32_t ack_id[ACK_RING];
    struct buf frag;
};

struct room {
    int ready;      /* members ready */
    char chat[96];  /* persist: chat id from the customer's first ack */
};

static struct conn *conns;
static struct room *rooms;
static int epfd;
static volatile sig_atomic_t stop_flag;
static uint64_t run_id;
static char **ctokens, **atokens;
static int nctokens, natokens;

enum phase { P_CONNECT, P_HOLD, P_WARM, P_MEASURE, P_DRAIN, P_DONE };

static struct {
    int phase;
    int started, inflight, ready, dead, ever_ready;
    int64_t t_begin, t_first_ready, t_last_ready, t_connected, t_phase;
    int64_t m_start, m_end; /* measure window (scheduled send times) */
    int64_t send_t0;
    uint64_t send_k;
    double rate;
    uint64_t sent, sent_win, skipped;
    uint64_t expected_win, delivered_win, arrivals_win, arrivals_total;
    uint64_t acks_win, ack_errors, acks_total;
    uint64_t post_reconnects;
    uint64_t seq_checked, seq_gaps, seq_disorder;
    uint64_t errs_connect, errs_http, errs_closed, errs_refused, errs_proto;
    double cpu0, cpu1, gen_cpu0, gen_cpu1, mach0, mach1, steal0, steal1;
    long rss_before, rss_after;
    struct hist lat, ack, conn;
    int step, retries;
    double best_rate, best_delivered;
    char last_json[8192];
    char best_json[8192];
} st;

/* ------------------------------------------------------------------------------------------ */
/* process accounting                                                                           */

static double proc_cpu_s(pid_t pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = 0;
    char *p = strrchr(line, ')');
    if (!p)
        return 0;
    unsigned long ut = 0, stt = 0;
    /* fields after ')' : state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt) != 2)
        return 0;
    return (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
}

/* utime+stime+cutime+cstime of pid (its own and its reaped children's CPU), in seconds. */
static double proc_cpu_with_reaped_s(pid_t pid, pid_t *ppid)
{
    char path[64], line[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = 0;
    char *p = strrchr(line, ')');
    if (!p)
        return -1;
    int pp = 0;
    unsigned long ut = 0, stt = 0;
    long cut = 0, cst = 0;
    if (sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %ld %ld", &pp, &ut, &stt, &cut,
               &cst) != 5)
        return -1;
    if (ppid)
        *ppid = pp;
    return (double)(ut + stt + (unsigned long)cut + (unsigned long)cst) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU of root with everything it reaped, plus its live children's own CPU (one /proc scan). */
static double tree_cpu_s(pid_t root)
{
    double s = proc_cpu_with_reaped_s(root, NULL);
    if (s < 0)
        return 0;
    DIR *d = opendir("/proc");
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        pid_t pid = (pid_t)atoi(de->d_name), pp = 0;
        if (pid == root)
            continue;
        /* cheap parent check first; only children get their full figure */
        double v = proc_cpu_with_reaped_s(pid, &pp);
        if (v >= 0 && pp == root)
            s += proc_cpu_s(pid);
    }
    if (d)
        closedir(d);
    return s;
}

/* Server-side CPU seconds: --pid processes, --pid-tree trees, plus the output of --cpu-cmd
 * (which blocks the generator while it runs: prefer --pid-tree). */
static double cpu_part_now[24], cpu_part0[24], cpu_part1[24];

static double server_cpu_s(void)
{
    double s = 0;
    for (int i = 0; i < opt.npids; i++)
        s += cpu_part_now[i] = proc_cpu_s(opt.pids[i]);
    for (int i = 0; i < opt.ntrees; i++)
        s += cpu_part_now[opt.npids + i] = tree_cpu_s(opt.trees[i]);
    if (opt.cpu_cmd) {
        FILE *f = popen(opt.cpu_cmd, "r");
        if (f) {
            double v = 0;
            if (fscanf(f, "%lf", &v) == 1)
                s += v;
            pclose(f);
        }
    }
    return s;
}

static long proc_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmRSS:", 6)) {
            v = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* Busy CPU seconds of the whole machine (all cores, everything but idle and iowait), steal
 * included (time the hypervisor gave our vCPUs to someone else is time we could not run);
 * *steal gets the steal part alone. */
static double machine_busy_s(double *steal)
{
    *steal = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return 0;
    unsigned long long v[10] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 8)
        return 0;
    /* user nice system idle iowait irq softirq steal (guest is inside user) */
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    *steal = (double)v[7] / (double)sysconf(_SC_CLK_TCK);
    return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* ------------------------------------------------------------------------------------------ */
/* socket plumbing                                                                              */

static void ep_arm(struct ep *e, int out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = e};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, e->fd, &ev) == 0)
        e->epout = out;
}

static void ep_close(struct ep *e)
{
    if (e->fd >= 0) {
        /* RST instead of FIN: no TIME_WAIT, so repeated runs never exhaust loopback ports. */
        struct linger lg = {1, 0};
        setsockopt(e->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(e->fd);
        e->fd = -1;
    }
    buf_free(&e->in);
    buf_free(&e->out);
    e->connected = 0;
    e->busy = 0;
}

static void conn_ready(struct conn *c);

/* Marks c dead (counted by the caller's error class) and closes its sockets. */
static void conn_fail(struct conn *c, uint64_t *counter)
{
    if (c->state == C_DEAD)
        return;
    if (c->state != C_READY && c->state != C_NEW)
        st.inflight--;
    if (c->state == C_READY) {
        rooms[c->room].ready--;
        st.ready--;
    }
    c->state = C_DEAD;
    st.dead++;
    if (counter)
        (*counter)++;
    ep_close(&c->a);
    ep_close(&c->b);
    buf_free(&c->pend);
    buf_free(&c->inflight_post);
    buf_free(&c->frag);
}

static int ep_open(struct ep *e, struct conn *c, int kind)
{
    e->c = c;
    e->kind = kind;
    e->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (e->fd < 0)
        return -1;
    int one = 1;
    setsockopt(e->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    inet_pton(AF_INET, opt.host, &sa.sin_addr);
    if (connect(e->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
        close(e->fd);
        e->fd = -1;
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = e};
    epoll_ctl(epfd, EPOLL_CTL_ADD, e->fd, &ev);
    e->epout = 1;
    return 0;
}

/* Writes (or queues) n bytes; returns -1 when the connection is broken. */
static int ep_write(struct ep *e, const void *d, size_t n)
{
    if (e->fd < 0)
        return -1;
    if (!e->connected || buf_avail(&e->out)) {
        buf_put(&e->out, d, n);
        return 0;
    }
    ssize_t w = send(e->fd, d, n, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        w = 0;
    }
    if ((size_t)w < n) {
        buf_put(&e->out, (const char *)d + w, n - (size_t)w);
        if (!e->epout)
            ep_arm(e, 1);
    }
    return 0;
}

static int ep_flush(struct ep *e)
{
    while (buf_avail(&e->out)) {
        ssize_t w = send(e->fd, buf_data(&e->out), buf_avail(&e->out), MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        buf_consume(&e->out, (size_t)w);
    }
    if (e->epout)
        ep_arm(e, 0);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Engine.IO / Socket.IO client side                                                           */

static char scratch_frame[1 << 16];

static void poll_flush_post(struct conn *c);

/* Sends one Engine.IO packet (text) on c's transport. */
static void conn_send(struct conn *c, const char *p, size_t n)
{
    if (c->state == C_DEAD)
        return;
    if (opt.tr == TR_POLLING) {
        if (buf_avail(&c->pend))
            buf_put(&c->pend, "\x1e", 1);
        buf_put(&c->pend, p, n);
        poll_flush_post(c);
        return;
    }
    char *f = scratch_frame;
    char *heap = NULL;
    if (n + 14 > sizeof(scratch_frame))
        f = heap = malloc(n + 14);
    size_t h = 0;
    f[h++] = (char)0x81;
    if (n < 126) {
        f[h++] = (char)(0x80 | n);
    } else if (n < 65536) {
        f[h++] = (char)(0x80 | 126);
        f[h++] = (char)(n >> 8);
        f[h++] = (char)n;
    } else {
        f[h++] = (char)(0x80 | 127);
        for (int i = 7; i >= 0; i--)
            f[h++] = (char)((uint64_t)n >> (8 * i));
    }
    uint8_t mk[4];
    memcpy(mk, &c->mask, 4);
    memcpy(f + h, mk, 4);
    h += 4;
    uint64_t m8;
    memcpy(&m8, mk, 4);
    memcpy((char *)&m8 + 4, mk, 4);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= m8;
        memcpy(f + h + i, &w, 8);
    }
    for (; i < n; i++)
        f[h + i] = (char)(p[i] ^ mk[i & 3]);
    if (ep_write(&c->a, f, h + n) < 0)
        conn_fail(c, &st.errs_closed);
    free(heap);
}

static void send_nsconnect(struct conn *c)
{
    char pkt[2048];
    const char *tok = opt.token;
    if (opt.sc == SC_PERSIST) {
        if (c->member == 0 && nctokens)
            tok = ctokens[c->room % nctokens];
        else if (c->member != 0 && natokens)
            tok = atokens[(c->room * (opt.members - 1) + c->member - 1) % natokens];
        else if (c->member != 0 && opt.agent_token)
            tok = opt.agent_token;
    }
    int n = snprintf(pkt, sizeof(pkt), "40%s,{\"token\":\"%s\"%s%s}", opt.ns, tok,
                     opt.auth_extra ? "," : "", opt.auth_extra ? opt.auth_extra : "");
    c->state = C_NSCONN;
    conn_send(c, pkt, (size_t)n);
}

static void send_setup(struct conn *c)
{
    char pkt[512];
    int n;
    c->setup_ack = (int)(++c->next_ack);
    if (opt.sc == SC_PERSIST) {
        if (c->member == 0) {
            n = snprintf(pkt, sizeof(pkt),
                         "42%s,%d[\"chat-message\",{\"clientId\":\"open-%" PRIu64 "-%d\",\"text\":\"hello\"}]",
                         opt.ns, c->setup_ack, run_id, c->id);
        } else if (!rooms[c->room].chat[0]) {
            c->state = C_WAITCHAT;
            return;
        } else {
            n = snprintf(pkt, sizeof(pkt), "42%s,%d[\"observe-chat\",{\"chatId\":\"%s\"}]", opt.ns,
                         c->setup_ack, rooms[c->room].chat);
        }
    } else {
        n = snprintf(pkt, sizeof(pkt), "42%s,%d[\"join\",{\"chatId\":\"room-%d\"}]", opt.ns,
                     c->setup_ack, c->room);
    }
    c->state = C_SETUP;
    conn_send(c, pkt, (size_t)n);
}

static void conn_ready(struct conn *c)
{
    int64_t t = now_ns();
    c->state = C_READY;
    st.inflight--;
    st.ready++;
    st.ever_ready++;
    rooms[c->room].ready++;
    h_add(&st.conn, t - c->t0);
    if (!st.t_first_ready)
        st.t_first_ready = t;
    st.t_last_ready = t;
    if (opt.sc == SC_PERSIST && c->member == 0) {
        /* release this room's observers */
        int base = c->room * opt.members;
        for (int i = 1; i < opt.members && base + i < opt.conns; i++)
            if (conns[base + i].state == C_WAITCHAT)
                send_setup(&conns[base + i]);
    }
}

/* Scheduled timestamp carried by a delivered chat-message: "ts":N, else clientId "N-…". */
static int64_t frame_ts(const char *p, size_t n)
{
    const char *t = memmem(p, n, "\"ts\":", 5);
    if (t)
        return strtoll(t + 5, NULL, 10);
    t = memmem(p, n, "\"clientId\":\"", 12);
    if (t && t[12] >= '0' && t[12] <= '9')
        return strtoll(t + 12, NULL, 10);
    return -1;
}

static int starts(const char *p, size_t n, const char *s)
{
    size_t l = strlen(s);
    return n >= l && !memcmp(p, s, l);
}

/* Persisted messages carry a per-chat "seq": every socket must see them gap-free, in order. */
static void check_seq(struct conn *c, const char *p, size_t n)
{
    const char *k = memmem(p, n, "\"seq\":", 6);
    if (!k)
        return;
    int64_t seq = strtoll(k + 6, NULL, 10);
    if (c->last_seq > 0) {
        st.seq_checked++;
        if (seq <= c->last_seq)
            st.seq_disorder++;
        else if (seq != c->last_seq + 1)
            st.seq_gaps++;
    }
    if (seq > c->last_seq)
        c->last_seq = seq;
}

static void on_delivery(struct conn *c, const char *p, size_t n)
{
    int64_t t = now_ns();
    if (opt.sc == SC_PERSIST)
        check_seq(c, p, n);
    st.arrivals_total++;
    if (st.phase == P_MEASURE && t >= st.m_start)
        st.arrivals_win++;
    int64_t ts = frame_ts(p, n);
    if (ts >= st.m_start && ts < st.m_end && st.m_end) {
        st.delivered_win++;
        h_add(&st.lat, t - ts);
    }
}

/* Socket.IO packet (the Engine.IO "4" already stripped), namespace prefixed. */
static void handle_sio(struct conn *c, const char *p, size_t n)
{
    if (n < 1)
        return;
    char type = p[0];
    const char *q = p + 1;
    size_t ql = n - 1;
    size_t nsl = strlen(opt.ns);
    if (ql >= nsl + 1 && !memcmp(q, opt.ns, nsl) && q[nsl] == ',') {
        q += nsl + 1;
        ql -= nsl + 1;
    } else {
        return; /* another namespace: ignore */
    }
    switch (type) {
    case '0':
        if (c->state == C_NSCONN) {
            if (opt.join || opt.sc == SC_PERSIST)
                send_setup(c);
            else
                conn_ready(c);
        }
        break;
    case '4':
        conn_fail(c, &st.errs_refused);
        break;
    case '2':
        if (starts(q, ql, "[\"chat-message\""))
            on_delivery(c, q, ql);
        break;
    case '3': {
        uint32_t id = (uint32_t)strtoul(q, NULL, 10);
        int ok = memmem(q, ql, "\"ok\":true", 9) != NULL;
        if (c->state == C_SETUP && (int)id == c->setup_ack) {
            if (!ok) {
                conn_fail(c, &st.errs_proto);
                return;
            }
            if (opt.sc == SC_PERSIST && c->member == 0) {
                const char *k = memmem(q, ql, "\"chatId\":\"", 10);
                if (!k) {
                    conn_fail(c, &st.errs_proto);
                    return;
                }
                k += 10;
                size_t i = 0;
                while (k + i < q + ql && k[i] != '"' && i < sizeof(rooms[0].chat) - 1)
                    i++;
                memcpy(rooms[c->room].chat, k, i);
                rooms[c->room].chat[i] = 0;
            }
            conn_ready(c);
            return;
        }
        int slot = id % ACK_RING;
        if (c->ack_id[slot] == id && c->ack_ts[slot]) {
            int64_t ts = c->ack_ts[slot];
            c->ack_ts[slot] = 0;
            st.acks_total++;
            if (!ok)
                st.ack_errors++;
            if (ts >= st.m_start && ts < st.m_end && st.m_end) {
                st.acks_win++;
                h_add(&st.ack, now_ns() - ts);
            }
        }
        break;
    }
    default:
        break;
    }
}

static void handle_eio(struct conn *c, const char *p, size_t n)
{
    if (n < 1)
        return;
    switch (p[0]) {
    case '0':
        if (c->state == C_OPEN)
            send_nsconnect(c);
        break;
    case '2': {
        char pong[128];
        size_t l = n < sizeof(pong) ? n : sizeof(pong);
        memcpy(pong, p, l);
        pong[0] = '3';
        conn_send(c, pong, l);
        break;
    }
    case '4':
        handle_sio(c, p + 1, n - 1);
        break;
    case '1':
        conn_fail(c, &st.errs_closed);
        break;
    default:
        break;
    }
}

/* Parses server WebSocket frames from c->a.in. */
static void ws_read_frames(struct conn *c)
{
    struct buf *b = &c->a.in;
    while (c->state != C_DEAD && buf_avail(b) >= 2) {
        uint8_t *f = (uint8_t *)buf_data(b);
        size_t av = buf_avail(b), h = 2;
        uint64_t len = f[1] & 0x7f;
        if (len == 126) {
            if (av < 4)
                return;
            len = ((uint64_t)f[2] << 8) | f[3];
            h = 4;
        } else if (len == 127) {
            if (av < 10)
                return;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = (len << 8) | f[2 + i];
            h = 10;
        }
        int masked = f[1] & 0x80;
        if (masked)
            h += 4;
        if (len > (64u << 20)) {
            conn_fail(c, &st.errs_proto);
            return;
        }
        if (av < h + len) {
            buf_reserve(b, h + len - av);
            return;
        }
        char *pl = (char *)f + h;
        if (masked)
            for (uint64_t i = 0; i < len; i++)
                pl[i] ^= f[h - 4 + (i & 3)];
        int op = f[0] & 0x0f, fin = f[0] & 0x80;
        if (op == 0 || ((op == 1 || op == 2) && !fin)) {
            buf_put(&c->frag, pl, len);
            if (fin) {
                handle_eio(c, buf_data(&c->frag), buf_avail(&c->frag));
                if (c->state != C_DEAD)
                    buf_consume(&c->frag, buf_avail(&c->frag));
            }
        } else if (op == 1 || op == 2) {
            handle_eio(c, pl, len);
        } else if (op == 8) {
            conn_fail(c, &st.errs_closed);
            return;
        } else if (op == 9) {
            uint8_t pong[6 + 125];
            size_t l = len > 125 ? 125 : len;
            pong[0] = 0x8a;
            pong[1] = (uint8_t)(0x80 | l);
            memset(pong + 2, 0, 4);
            memcpy(pong + 6, pl, l);
            ep_write(&c->a, pong, 6 + l);
        }
        if (c->state == C_DEAD)
            return;
        buf_consume(b, h + len);
    }
}

/*
 * HTTP/1.1 response parsing for the upgrade and the polling transport.
 * Returns 1 with *status / body set (body borrowed from b or tmp, valid until the next call) and
 * *consumed bytes, 0 when more bytes are needed, -1 on a malformed response.
 */
static int http_take(struct buf *b, struct buf *tmp, int *status, const char **body, size_t *blen,
                     size_t *consumed)
{
    char *p = buf_data(b);
    size_t av = buf_avail(b);
    char *e = memmem(p, av, "\r\n\r\n", 4);
    if (!e)
        return av > 65536 ? -1 : 0;
    size_t hl = (size_t)(e - p) + 4;
    if (av < 12 || memcmp(p, "HTTP/1.", 7))
        return -1;
    *status = atoi(p + 9);
    long cl = -1;
    int chunked = 0;
    for (char *l = memchr(p, '\n', hl); l && l < e; l = memchr(l + 1, '\n', (size_t)(e - l))) {
        if (!strncasecmp(l + 1, "content-length:", 15))
            cl = strtol(l + 16, NULL, 10);
        else if (!strncasecmp(l + 1, "transfer-encoding:", 18) && memmem(l, (size_t)(e - l), "chunked", 7))
            chunked = 1;
    }
    if (*status == 101) {
        *body = NULL;
        *blen = 0;
        *consumed = hl;
        return 1;
    }
    if (chunked) {
        size_t pos = hl;
        buf_consume(tmp, buf_avail(tmp));
        for (;;) {
            char *le = memmem(p + pos, av - pos, "\r\n", 2);
            if (!le)
                return 0;
            unsigned long sz = strtoul(p + pos, NULL, 16);
            size_t start = (size_t)(le - p) + 2;
            if (av < start + sz + 2)
                return 0;
            if (sz == 0) {
                /* no trailers expected */
                *body = buf_data(tmp);
                *blen = buf_avail(tmp);
                *consumed = start + 2;
                return 1;
            }
            buf_put(tmp, p + start, sz);
            pos = start + sz + 2;
        }
    }
    if (cl < 0)
        cl = 0;
    if (av < hl + (size_t)cl) {
        buf_reserve(b, hl + (size_t)cl - av);
        return 0;
    }
    *body = p + hl;
    *blen = (size_t)cl;
    *consumed = hl + (size_t)cl;
    return 1;
}

static void poll_get(struct conn *c)
{
    char req[512];
    int n;
    if (c->sid[0])
        n = snprintf(req, sizeof(req),
                     "GET /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\nHost: %s:%d\r\n"
                     "Accept: */*\r\n\r\n",
                     c->sid, opt.host, opt.port);
    else
        n = snprintf(req, sizeof(req),
                     "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: %s:%d\r\n"
                     "Accept: */*\r\n\r\n",
                     opt.host, opt.port);
    c->a.busy = 1;
    if (ep_write(&c->a, req, (size_t)n) < 0)
        conn_fail(c, &st.errs_closed);
}

/* Writes the POST carrying c->inflight_post on c->b. */
static void poll_send_post(struct conn *c)
{
    char hdr[512];
    int n = snprintf(hdr, sizeof(hdr),
                     "POST /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\nHost: %s:%d\r\n"
                     "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: %zu\r\n\r\n",
                     c->sid, opt.host, opt.port, buf_avail(&c->inflight_post));
    c->b.busy = 1;
    if (ep_write(&c->b, hdr, (size_t)n) < 0 ||
        ep_write(&c->b, buf_data(&c->inflight_post), buf_avail(&c->inflight_post)) < 0)
        conn_fail(c, &st.errs_closed);
}

static void poll_flush_post(struct conn *c)
{
    if (c->b.busy || !buf_avail(&c->pend) || !c->sid[0] || c->state == C_DEAD)
        return;
    if (c->b.fd < 0 && ep_open(&c->b, c, EP_POST) < 0) {
        conn_fail(c, &st.errs_connect);
        return;
    }
    buf_consume(&c->inflight_post, buf_avail(&c->inflight_post));
    buf_put(&c->inflight_post, buf_data(&c->pend), buf_avail(&c->pend));
    buf_consume(&c->pend, buf_avail(&c->pend));
    c->post_retried = 0;
    poll_send_post(c);
}

static struct buf chunk_tmp;

static void on_readable_http(struct ep *e)
{
    struct conn *c = e->c;
    for (;;) {
        int status;
        const char *body;
        size_t blen, used;
        int r = http_take(&e->in, &chunk_tmp, &status, &body, &blen, &used);
        if (r == 0)
            return;
        if (r < 0) {
            conn_fail(c, &st.errs_http);
            return;
        }
        if (e->kind == EP_WS) {
            buf_consume(&e->in, used);
            if (status != 101) {
                conn_fail(c, &st.errs_http);
                return;
            }
            c->state = C_OPEN;
            ws_read_frames(c);
            return;
        }
        if (status != 200) {
            conn_fail(c, &st.errs_http);
            return;
        }
        e->busy = 0;
        if (e->kind == EP_GET) {
            if (!c->sid[0]) {
                const char *s = memmem(body, blen, "\"sid\":\"", 7);
                if (!s || body[0] != '0') {
                    conn_fail(c, &st.errs_proto);
                    return;
                }
                s += 7;
                size_t i = 0;
                while (s + i < body + blen && s[i] != '"' && i < sizeof(c->sid) - 1)
                    i++;
                memcpy(c->sid, s, i);
                c->sid[i] = 0;
                buf_consume(&e->in, used);
                c->state = C_OPEN;
                send_nsconnect(c);
            } else {
                /* body is borrowed from e->in / chunk_tmp: copy before handling, handlers may write */
                char *copy = malloc(blen + 1);
                memcpy(copy, body, blen);
                buf_consume(&e->in, used);
                size_t s = 0;
                for (size_t i = 0; i <= blen && c->state != C_DEAD; i++)
                    if (i == blen || copy[i] == 0x1e) {
                        handle_eio(c, copy + s, i - s);
                        s = i + 1;
                    }
                free(copy);
            }
            if (c->state != C_DEAD)
                poll_get(c);
        } else {
            buf_consume(&e->in, used);
            poll_flush_post(c);
        }
        if (c->state == C_DEAD)
            return;
    }
}

static void on_connected(struct ep *e)
{
    struct conn *c = e->c;
    e->connected = 1;
    if (opt.tr == TR_WS) {
        char req[512];
        int n = snprintf(req, sizeof(req),
                         "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: %s:%d\r\n"
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                         opt.host, opt.port);
        ep_write(e, req, (size_t)n);
    } else if (e->kind == EP_GET) {
        poll_get(c);
    }
    if (ep_flush(e) < 0)
        conn_fail(c, &st.errs_connect);
}

static void on_event(struct ep *e, uint32_t ev)
{
    struct conn *c = e->c;
    if (c->state == C_DEAD || e->fd < 0)
        return;
    if (!e->connected && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            conn_fail(c, &st.errs_connect);
            return;
        }
        on_connected(e);
        if (c->state == C_DEAD)
            return;
    } else if (ev & EPOLLOUT) {
        if (ep_flush(e) < 0) {
            conn_fail(c, &st.errs_closed);
            return;
        }
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        for (int rounds = 0; rounds < 16; rounds++) {
            buf_reserve(&e->in, 16384);
            ssize_t r = recv(e->fd, e->in.p + e->in.len, e->in.cap - e->in.len, 0);
            if (r < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                conn_fail(c, &st.errs_closed);
                return;
            }
            if (r == 0 && e->kind == EP_POST && !e->busy && !buf_avail(&e->out)) {
                /* an idle keep-alive connection timed out (Node's keepAliveTimeout is 5 s):
                 * like a browser, open a new one for the next POST */
                ep_close(e);
                st.post_reconnects++;
                return;
            }
            if (r == 0 && e->kind == EP_POST && e->busy && !buf_avail(&e->in) && !c->post_retried) {
                /* closed while our request was in flight, before any response byte: the server
                 * timed the idle connection out as we reused it; retry once on a new one */
                ep_close(e);
                st.post_reconnects++;
                c->post_retried = 1;
                if (ep_open(e, c, EP_POST) < 0) {
                    conn_fail(c, &st.errs_connect);
                    return;
                }
                poll_send_post(c);
                return;
            }
            if (r == 0) {
                if (getenv("LOADGEN_DEBUG"))
                    fprintf(stderr, "loadgen: conn %d (%s, state %d, busy %d) closed by server after %zu bytes pending\n",
                            c->id, e->kind == EP_POST ? "POST" : e->kind == EP_GET ? "GET" : "WS", c->state, e->busy,
                            buf_avail(&e->in));
                conn_fail(c, &st.errs_closed);
                return;
            }
            e->in.len += (size_t)r;
            if (e->kind == EP_WS && c->state >= C_OPEN)
                ws_read_frames(c);
            else
                on_readable_http(e);
            if (c->state == C_DEAD || e->fd < 0)
                return;
            if ((size_t)r < 16384)
                break;
        }
    }
}

static void conn_start(struct conn *c)
{
    c->t0 = now_ns();
    c->state = C_HTTP;
    c->mask = (uint32_t)random() | 1u;
    st.started++;
    st.inflight++;
    if (ep_open(&c->a, c, opt.tr == TR_WS ? EP_WS : EP_GET) < 0 ||
        (opt.tr == TR_POLLING && ep_open(&c->b, c, EP_POST) < 0)) {
        conn_fail(c, &st.errs_connect);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* message schedule                                                                             */

static char textpad[4096];

static void send_one(int64_t ts)
{
    uint64_t k = st.send_k++;
    int room = (int)(k % (uint64_t)opt.rooms);
    int m0 = opt.sc == SC_PERSIST ? 0 : (int)((k / (uint64_t)opt.rooms) % (uint64_t)opt.members);
    struct conn *c = NULL;
    for (int i = 0; i < opt.members; i++) {
        int idx = room * opt.members + (m0 + i) % opt.members;
        if (idx < opt.conns && conns[idx].state == C_READY) {
            c = &conns[idx];
            break;
        }
        if (opt.sc == SC_PERSIST)
            break;
    }
    if (!c) {
        st.skipped++;
        return;
    }
    int in_win = ts >= st.m_start && ts < st.m_end;
    st.sent++;
    if (in_win) {
        st.sent_win++;
        st.expected_win += (uint64_t)rooms[room].ready;
    }
    char pkt[8192];
    int n;
    if (opt.sc == SC_PERSIST) {
        uint32_t id = ++c->next_ack;
        c->ack_id[id % ACK_RING] = id;
        c->ack_ts[id % ACK_RING] = ts;
        n = snprintf(pkt, sizeof(pkt),
                     "42%s,%u[\"chat-message\",{\"chatId\":\"%s\",\"clientId\":\"%" PRId64 "-%" PRIu64
                     "-%d\",\"text\":\"%s\"}]",
                     opt.ns, id, rooms[room].chat, ts, run_id, c->id, textpad);
    } else {
        n = snprintf(pkt, sizeof(pkt),
                     "42%s,[\"chat-message\",{\"chatId\":\"room-%d\",\"clientId\":\"%d-%" PRIu64
                     "\",\"text\":\"%s\",\"ts\":%" PRId64 "}]",
                     opt.ns, room, c->id, k, textpad, ts);
    }
    conn_send(c, pkt, (size_t)n);
}

/* ------------------------------------------------------------------------------------------ */
/* reporting                                                                                    */

static double ms(double ns) { return ns / 1e6; }

static const char *sc_name(void)
{
    switch (opt.sc) {
    case SC_IDLE: return "idle";
    case SC_STORM: return "storm";
    case SC_FANOUT: return "fanout";
    default: return "persist";
    }
}

/* Formats the current step's figures into out (JSON object without the closing brace). */
static void step_json(char *out, size_t cap, const char *kind)
{
    double win_s = (double)(st.m_end - st.m_start) / 1e9;
    double cpu = st.cpu1 - st.cpu0, gcpu = st.gen_cpu1 - st.gen_cpu0;
    double deliv_s = win_s > 0 ? (double)st.arrivals_win / win_s : 0;
    double ratio = st.expected_win ? (double)st.delivered_win / (double)st.expected_win : 0;
    snprintf(out, cap,
             "{\"kind\":\"%s\",\"label\":\"%s\",\"scenario\":\"%s\",\"transport\":\"%s\",\"step\":%d,"
             "\"conns\":%d,\"rooms\":%d,\"members\":%d,\"offered_msgs_per_s\":%.1f,"
             "\"offered_deliveries_per_s\":%.1f,\"window_s\":%.3f,\"sent\":%" PRIu64 ",\"skipped\":%" PRIu64
             ",\"expected\":%" PRIu64 ",\"delivered\":%" PRIu64 ",\"delivered_ratio\":%.5f,"
             "\"delivered_per_s\":%.1f,\"lat_p50_ms\":%.3f,\"lat_p99_ms\":%.3f,\"lat_p999_ms\":%.3f,"
             "\"lat_max_ms\":%.3f,\"acks\":%" PRIu64 ",\"ack_errors\":%" PRIu64 ",\"ack_p50_ms\":%.3f,"
             "\"ack_p99_ms\":%.3f,\"ack_p999_ms\":%.3f,\"msgs_acked_per_s\":%.1f,\"server_cpu_s\":%.3f,"
             "\"cpu_per_1k_deliveries\":%.5f,\"cpu_per_1k_msgs\":%.5f,\"gen_cpu_s\":%.3f,"
             "\"gen_util\":%.3f,\"gen_ceiling_est_per_s\":%.0f,\"machine_busy_cores\":%.2f,"
             "\"other_busy_cores\":%.2f,\"steal_cores\":%.2f,\"batch_us\":%d",
             kind, opt.label, sc_name(), opt.tr == TR_WS ? "websocket" : "polling", st.step, opt.conns,
             opt.rooms, opt.members, st.rate,
             st.rate * (opt.sc == SC_PERSIST ? (double)opt.members : (double)opt.members), win_s, st.sent_win,
             st.skipped, st.expected_win, st.delivered_win, ratio, deliv_s, ms(h_quantile(&st.lat, 0.5)),
             ms(h_quantile(&st.lat, 0.99)), ms(h_quantile(&st.lat, 0.999)), ms((double)st.lat.max),
             st.acks_win, st.ack_errors, ms(h_quantile(&st.ack, 0.5)), ms(h_quantile(&st.ack, 0.99)),
             ms(h_quantile(&st.ack, 0.999)), win_s > 0 ? (double)st.acks_win / win_s : 0, cpu,
             st.arrivals_win ? cpu * 1000.0 / (double)st.arrivals_win : 0,
             st.sent_win ? cpu * 1000.0 / (double)st.sent_win : 0, gcpu, win_s > 0 ? gcpu / win_s : 0,
             gcpu > 0 ? (double)st.arrivals_win / gcpu : 0, win_s > 0 ? (st.mach1 - st.mach0) / win_s : 0,
             win_s > 0 ? (st.mach1 - st.mach0 - cpu - gcpu) / win_s : 0,
             win_s > 0 ? (st.steal1 - st.steal0) / win_s : 0, opt.batch_us);
    /* CPU seconds of each --pid, then each --pid-tree, over the window */
    size_t l = strlen(out);
    l += (size_t)snprintf(out + l, cap - l, ",\"cpu_parts_s\":[");
    for (int i = 0; i < opt.npids + opt.ntrees && l < cap; i++)
        l += (size_t)snprintf(out + l, cap - l, "%s%.3f", i ? "," : "", cpu_part1[i] - cpu_part0[i]);
    if (l < cap)
        snprintf(out + l, cap - l, "]");
}

static void conn_json(char *out, size_t cap)
{
    double cs = st.t_connected > st.t_begin ? (double)(st.t_connected - st.t_begin) / 1e9 : 0;
    long per = -1;
    if (st.rss_before > 0 && st.rss_after > 0 && st.ready > 0)
        per = (st.rss_after - st.rss_before) * 1024L / st.ready;
    snprintf(out, cap,
             ",\"connected\":%d,\"failed\":%d,\"err_connect\":%" PRIu64 ",\"err_http\":%" PRIu64
             ",\"err_refused\":%" PRIu64 ",\"err_closed\":%" PRIu64 ",\"err_proto\":%" PRIu64
             ",\"connect_s\":%.3f,\"connect_per_s\":%.1f,\"connect_p50_ms\":%.3f,\"connect_p99_ms\":%.3f,"
             "\"connect_max_ms\":%.3f,\"rss_before_kb\":%ld,\"rss_after_kb\":%ld,\"rss_per_conn_b\":%ld,"
             "\"alive_at_end\":%d,\"post_reconnects\":%" PRIu64 ",\"seq_checked\":%" PRIu64
             ",\"seq_gaps\":%" PRIu64 ",\"seq_disorder\":%" PRIu64,
             st.ever_ready, st.dead, st.errs_connect, st.errs_http, st.errs_refused, st.errs_closed, st.errs_proto,
             cs, cs > 0 ? st.ever_ready / cs : 0, ms(h_quantile(&st.conn, 0.5)), ms(h_quantile(&st.conn, 0.99)),
             ms((double)st.conn.max), st.rss_before, st.rss_after, per, st.ready, st.post_reconnects,
             st.seq_checked, st.seq_gaps, st.seq_disorder);
}

/* ------------------------------------------------------------------------------------------ */
/* main loop                                                                                    */

static void on_signal(int s) { (void)s; stop_flag = 1; }

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen [options]\n"
            "  --host H --port P          server (127.0.0.1:8080)\n"
            "  --scenario idle|storm|fanout|persist   (fanout)\n"
            "  --transport websocket|polling          (websocket)\n"
            "  --conns N                  connections (idle/storm; fanout: rooms*members)\n"
            "  --rooms R --members M      room layout (100 x 10)\n"
            "  --rate X                   offered messages/s (600); deliveries = X * members\n"
            "  --duration S --warmup S --drain S --hold S\n"
            "  --connect-rate C --concurrency K --connect-timeout S\n"
            "  --no-join                  idle/storm: stop after the namespace CONNECT\n"
            "  --size B                   text bytes per message (32)\n"
            "  --ramp --ramp-factor F --ramp-steps N --ramp-retries N --slo-ms MS --min-ratio R\n"
            "  --pid PID (repeatable)     server processes for CPU and RSS\n"
            "  --pid-tree PID             a process tree's CPU (e.g. the postmaster and its backends)\n"
            "  --cpu-cmd CMD              extra server CPU seconds printed by CMD (blocks while it runs)\n"
            "  --token T                  auth token (bench)\n"
            "  --customer-tokens FILE --agent-token T | --agent-tokens FILE\n"
            "  --auth-extra JSON          members appended to the auth object (persist)\n"
            "  --label NAME               name in the JSON output\n"
            "  --batch-us US              poll at most every US microseconds (adds <= US to latency)\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static struct option lo[] = {
        {"host", 1, 0, 'h'},          {"port", 1, 0, 'p'},          {"scenario", 1, 0, 's'},
        {"transport", 1, 0, 't'},     {"conns", 1, 0, 'n'},         {"rooms", 1, 0, 'R'},
        {"members", 1, 0, 'M'},       {"rate", 1, 0, 'r'},          {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'w'},        {"drain", 1, 0, 'D'},         {"hold", 1, 0, 'H'},
        {"connect-rate", 1, 0, 'c'},  {"concurrency", 1, 0, 'C'},   {"connect-timeout", 1, 0, 'T'},
        {"no-join", 0, 0, 'J'},       {"size", 1, 0, 'z'},          {"ramp", 0, 0, 'A'},
        {"ramp-factor", 1, 0, 'f'},   {"ramp-steps", 1, 0, 'S'},    {"slo-ms", 1, 0, 'L'},
        {"min-ratio", 1, 0, 'm'},     {"pid", 1, 0, 'P'},           {"cpu-cmd", 1, 0, 'X'},
        {"token", 1, 0, 'k'},         {"customer-tokens", 1, 0, 'K'}, {"agent-token", 1, 0, 'a'},
        {"auth-extra", 1, 0, 'e'},    {"batch-us", 1, 0, 'B'},    {"pid-tree", 1, 0, 'Q'},    {"agent-tokens", 1, 0, 'G'},    {"ramp-retries", 1, 0, 'y'},    {"label", 1, 0, 'l'},         {"help", 0, 0, '?'},
        {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 's':
            if (!strcmp(optarg, "idle")) opt.sc = SC_IDLE;
            else if (!strcmp(optarg, "storm")) opt.sc = SC_STORM;
            else if (!strcmp(optarg, "fanout")) opt.sc = SC_FANOUT;
            else if (!strcmp(optarg, "persist")) opt.sc = SC_PERSIST;
            else usage();
            break;
        case 't': opt.tr = !strcmp(optarg, "polling") ? TR_POLLING : TR_WS; break;
        case 'n': opt.conns = atoi(optarg); break;
        case 'R': opt.rooms = atoi(optarg); break;
        case 'M': opt.members = atoi(optarg); break;
        case 'r': opt.rate = atof(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'D': opt.drain = atof(optarg); break;
        case 'H': opt.hold = atof(optarg); break;
        case 'c': opt.connect_rate = atof(optarg); break;
        case 'C': opt.concurrency = atoi(optarg); break;
        case 'T': opt.connect_timeout = atof(optarg); break;
        case 'J': opt.join = 0; break;
        case 'z': opt.size = atoi(optarg); break;
        case 'A': opt.ramp = 1; break;
        case 'f': opt.ramp_factor = atof(optarg); break;
        case 'S': opt.ramp_steps = atoi(optarg); break;
        case 'y': opt.ramp_retries = atoi(optarg); break;
        case 'L': opt.slo_ms = atof(optarg); break;
        case 'm': opt.min_ratio = atof(optarg); break;
        case 'P':
            if (opt.npids < 16) opt.pids[opt.npids++] = (pid_t)atoi(optarg);
            break;
        case 'X': opt.cpu_cmd = optarg; break;
        case 'Q':
            if (opt.ntrees < 8) opt.trees[opt.ntrees++] = (pid_t)atoi(optarg);
            break;
        case 'k': opt.token = optarg; break;
        case 'K': opt.customer_tokens = optarg; break;
        case 'a': opt.agent_token = optarg; break;
        case 'G': opt.agent_tokens = optarg; break;
        case 'e': opt.auth_extra = optarg; break;
        case 'l': opt.label = optarg; break;
        case 'B': opt.batch_us = atoi(optarg); break;
        default: usage();
        }
    }
    if (opt.sc == SC_FANOUT || opt.sc == SC_PERSIST || !opt.conns)
        if (opt.sc == SC_FANOUT || opt.sc == SC_PERSIST)
            opt.conns = opt.rooms * opt.members;
    if (!opt.conns)
        opt.conns = 1000;
    if (opt.sc == SC_IDLE || opt.sc == SC_STORM)
        opt.rooms = (opt.conns + opt.members - 1) / opt.members;
    if (opt.size < 0 || opt.size >= (int)sizeof(textpad))
        opt.size = 32;
    if (opt.rate <= 0 || opt.rooms <= 0 || opt.members <= 0 || opt.conns <= 0)
        usage();
}

static void load_tokens(const char *path, char ***out, int *count)
{
    if (!path)
        return;
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(2);
    }
    char **tokv = NULL;
    int ntok = 0;
    char line[8192];
    int cap = 0;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0])
            continue;
        if (ntok == cap) {
            cap = cap ? cap * 2 : 64;
            tokv = realloc(tokv, (size_t)cap * sizeof(*tokv));
        }
        tokv[ntok++] = strdup(line);
    }
    fclose(f);
    *out = tokv;
    *count = ntok;
}

static void begin_window(int64_t t)
{
    st.m_start = t;
    st.m_end = t + (int64_t)(opt.duration * 1e9);
    st.sent_win = st.expected_win = st.delivered_win = st.arrivals_win = st.acks_win = 0;
    st.ack_errors = 0;
    h_reset(&st.lat);
    h_reset(&st.ack);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    load_tokens(opt.customer_tokens, &ctokens, &nctokens);
    load_tokens(opt.agent_tokens, &atokens, &natokens);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    srandom((unsigned)getpid() ^ (unsigned)now_ns());
    run_id = (uint64_t)time(NULL) * 1000 + (uint64_t)(getpid() % 1000);
    memset(textpad, 'x', (size_t)opt.size);
    textpad[opt.size] = 0;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    epfd = epoll_create1(EPOLL_CLOEXEC);
    conns = calloc((size_t)opt.conns, sizeof(*conns));
    rooms = calloc((size_t)opt.rooms + 1, sizeof(*rooms));
    if (!conns || !rooms)
        abort();
    for (int i = 0; i < opt.conns; i++) {
        conns[i].id = i;
        conns[i].room = i / opt.members;
        if (conns[i].room >= opt.rooms)
            conns[i].room = opt.rooms - 1;
        conns[i].member = i % opt.members;
        conns[i].a.fd = conns[i].b.fd = -1;
    }
    if (opt.npids)
        st.rss_before = proc_rss_kb(opt.pids[0]);

    st.phase = P_CONNECT;
    st.t_begin = st.t_phase = now_ns();
    st.rate = opt.rate;
    int64_t last_poll = 0;
    struct epoll_event evs[512];
    char line[8192];
    const int64_t deadline = st.t_begin + (int64_t)((opt.connect_timeout + opt.hold + 10 +
                                                     (opt.warmup + opt.duration + opt.drain + 1) *
                                                         (opt.ramp ? opt.ramp_steps + opt.ramp_retries : 1) +
                                                     opt.warmup) * 1e9);

    while (st.phase != P_DONE) {
        int64_t now = now_ns();
        if (stop_flag || now > deadline) {
            if (st.phase == P_MEASURE || st.phase == P_DRAIN) {
                if (!st.cpu1)
                    st.cpu1 = server_cpu_s(), st.gen_cpu1 = self_cpu_s();
            }
            break;
        }
        int64_t wake = now + 100000000; /* at most 100 ms asleep */

        switch (st.phase) {
        case P_CONNECT: {
            while (st.started < opt.conns && st.inflight < opt.concurrency) {
                if (opt.connect_rate > 0 &&
                    (double)st.started >= opt.connect_rate * (double)(now - st.t_begin) / 1e9) {
                    int64_t next = st.t_begin + (int64_t)((double)st.started / opt.connect_rate * 1e9);
                    if (next < wake)
                        wake = next;
                    break;
                }
                conn_start(&conns[st.started]);
            }
            if (st.ready + st.dead >= opt.conns ||
                now - st.t_begin > (int64_t)(opt.connect_timeout * 1e9)) {
                st.t_connected = st.t_last_ready ? st.t_last_ready : now;
                st.t_phase = now;
                if (opt.sc == SC_IDLE || opt.sc == SC_STORM) {
                    st.phase = P_HOLD;
                } else {
                    st.phase = P_WARM;
                    st.send_t0 = now;
                    st.send_k = 0;
                    /* the first window gets a double warm-up (JIT, caches, TCP windows) */
                    begin_window(now + (int64_t)(2 * opt.warmup * 1e9));
                }
            }
            break;
        }
        case P_HOLD:
            if (now - st.t_phase >= (int64_t)(opt.hold * 1e9)) {
                if (opt.npids)
                    st.rss_after = proc_rss_kb(opt.pids[0]);
                st.phase = P_DONE;
                continue;
            }
            break;
        case P_WARM:
        case P_MEASURE: {
            /* open loop: every message due by now goes out stamped with its scheduled time */
            for (;;) {
                int64_t ts = st.send_t0 + (int64_t)((double)st.send_k * 1e9 / st.rate);
                if (ts > now) {
                    if (ts < wake)
                        wake = ts;
                    break;
                }
                if (st.phase == P_WARM && ts >= st.m_start) {
                    st.phase = P_MEASURE;
                    st.cpu0 = server_cpu_s();
                    memcpy(cpu_part0, cpu_part_now, sizeof(cpu_part0));
                    st.gen_cpu0 = self_cpu_s();
                    st.mach0 = machine_busy_s(&st.steal0);
                }
                if (ts >= st.m_end) {
                    st.phase = P_DRAIN;
                    st.cpu1 = server_cpu_s();
                    memcpy(cpu_part1, cpu_part_now, sizeof(cpu_part1));
                    st.gen_cpu1 = self_cpu_s();
                    st.mach1 = machine_busy_s(&st.steal1);
                    st.t_phase = now;
                    break;
                }
                send_one(ts);
            }
            break;
        }
        case P_DRAIN: {
            int all = st.delivered_win >= st.expected_win &&
                      (opt.sc != SC_PERSIST || st.acks_win >= st.sent_win);
            if (all || now - st.t_phase >= (int64_t)(opt.drain * 1e9)) {
                step_json(line, sizeof(line), "step");
                double ratio = st.expected_win ? (double)st.delivered_win / (double)st.expected_win : 0;
                double p99 = ms(h_quantile(opt.sc == SC_PERSIST ? &st.ack : &st.lat, 0.99));
                double p99d = ms(h_quantile(&st.lat, 0.99));
                int pass = ratio >= opt.min_ratio && p99 <= opt.slo_ms && p99d <= opt.slo_ms;
                if (opt.ramp) {
                    printf("%s,\"pass\":%s}\n", line, pass ? "true" : "false");
                    fflush(stdout);
                }
                if (pass && (double)st.arrivals_win >= st.best_delivered) {
                    st.best_delivered = (double)st.arrivals_win;
                    st.best_rate = st.rate;
                    snprintf(st.best_json, sizeof(st.best_json), "%s", line);
                }
                snprintf(st.last_json, sizeof(st.last_json), "%s", line);
                int retry = opt.ramp && !pass && st.retries < opt.ramp_retries;
                if (retry)
                    st.retries++;
                if (!opt.ramp || (!pass && !retry) || st.step + 1 >= opt.ramp_steps || st.ready == 0) {
                    if (!opt.ramp)
                        snprintf(st.best_json, sizeof(st.best_json), "%s", line);
                    st.phase = P_DONE;
                    continue;
                }
                /* next ramp step: quiet gap of 0.5 s, then warm-up again at the new rate */
                st.step++;
                if (!retry)
                    st.rate *= opt.ramp_factor;
                st.phase = P_WARM;
                st.send_t0 = now + 500000000;
                st.send_k = 0;
                begin_window(st.send_t0 + (int64_t)(opt.warmup * 1e9));
                st.cpu1 = 0;
            }
            break;
        }
        default:
            break;
        }

        int64_t dt = wake - now_ns();
        if (dt < 0)
            dt = 0;
        if (opt.batch_us > 0 && last_poll) {
            /* --batch-us: poll at most every batch_us, so that a busy generator handles many
             * arrivals per wake-up instead of paying a context switch for each; receivers stamp
             * arrivals at processing time, so this adds at most batch_us to measured latency
             * (reported as batch_us in the JSON) */
            int64_t since = now_ns() - last_poll;
            if (since < (int64_t)opt.batch_us * 1000) {
                int64_t nap = (int64_t)opt.batch_us * 1000 - since;
                if (nap > dt)
                    nap = dt;
                struct timespec ns = {.tv_sec = 0, .tv_nsec = nap};
                if (nap > 0)
                    nanosleep(&ns, NULL);
                dt = wake - now_ns();
                if (dt < 0)
                    dt = 0;
            }
        }
        struct timespec tmo = {.tv_sec = dt / 1000000000, .tv_nsec = dt % 1000000000};
        int n = epoll_pwait2(epfd, evs, 512, &tmo, NULL);
        if (n < 0 && errno == ENOSYS)
            n = epoll_wait(epfd, evs, 512, (int)(dt / 1000000));
        last_poll = now_ns();
        for (int i = 0; i < n; i++)
            on_event((struct ep *)evs[i].data.ptr, evs[i].events);
    }

    if (st.phase != P_DONE && !st.best_json[0]) {
        step_json(st.best_json, sizeof(st.best_json), "step");
    }
    if (!st.t_connected)
        st.t_connected = st.t_last_ready ? st.t_last_ready : now_ns();
    char cj[2048];
    conn_json(cj, sizeof(cj));
    if (opt.sc == SC_IDLE || opt.sc == SC_STORM) {
        printf("{\"kind\":\"result\",\"label\":\"%s\",\"scenario\":\"%s\",\"transport\":\"%s\",\"conns\":%d%s,"
               "\"gen_cpu_s\":%.3f}\n",
               opt.label, sc_name(), opt.tr == TR_WS ? "websocket" : "polling", opt.conns, cj, self_cpu_s());
    } else {
        /* the best passing step (ramp) or the only step; a ramp whose first step failed reports
         * that step with ramp_best 0 */
        const char *body = st.best_json[0] ? st.best_json : st.last_json[0] ? st.last_json : "{\"kind\":\"step\"";
        /* replace the leading kind with result */
        const char *rest = strchr(body, ',');
        printf("{\"kind\":\"result\"%s%s,\"ramp\":%s,\"ramp_best_offered_msgs_per_s\":%.1f,"
               "\"ramp_best_delivered_per_s\":%.1f,\"ramp_steps_run\":%d}\n",
               rest ? rest : "", cj, opt.ramp ? "true" : "false", st.best_rate,
               st.best_json[0] && opt.ramp ? st.best_delivered / opt.duration : 0, st.step + 1);
    }
    fflush(stdout);
    for (int i = 0; i < opt.conns; i++) {
        ep_close(&conns[i].a);
        ep_close(&conns[i].b);
    }
    return 0;
}
