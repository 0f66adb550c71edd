/* libwebsockets shell: one protocol handles every HTTP request and WebSocket on
 * the port. HTTP requests are routed by path prefix to handlers (Engine.IO
 * polling, REST, health); WebSocket callbacks go to the Engine.IO server.
 * The shell only moves bytes: no protocol decisions are made here. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <libwebsockets.h>
#include <uv.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "gateway/eio.h"
#include "gateway/http.h"

_Static_assert(GW_PRE >= LWS_PRE, "frame headroom must cover LWS_PRE");

struct route {
    char *prefix;
    size_t plen;
    http_handler fn;
    void *ctx;
};

static struct route *routes;
static size_t nroutes;
static eio_server *g_eio;
static char **cors;
static size_t ncors;
static bool cors_any;

/* One per lws connection; lws allocates and zeroes it. */
struct pss {
    http_req *req; /* current HTTP request */
    eio_ws ws;     /* WebSocket state when upgraded */
};

void http_lws_set_eio(eio_server *eio)
{
    g_eio = eio;
}

/* ---- parked requests ------------------------------------------------------------
 * A request whose answer comes later (a long-poll above all) is "parked".
 * lws 4.1 neither reads nor reports a peer's FIN while a transaction is in
 * progress (warmcat/libwebsockets#2455): the socket stays readable and the
 * loop spins on it until the answer is written. So a parked request stops
 * reading (rx flow control), and its socket joins a private epoll set that
 * waits for EPOLLRDHUP alone (the same socket may sit in several epoll sets;
 * pipelined bytes wake nobody). When the peer has gone, the connection is
 * closed, which aborts the request (on_abort) as a closed connection does:
 * the Node server reacts the same way ("poll connection closed prematurely"). */
static int park_epfd = -1;
static uv_poll_t park_poll;

static void park(http_req *req)
{
    if (req->parked || req->responded || !req->wsi || park_epfd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLRDHUP, .data.ptr = req};
    if (epoll_ctl(park_epfd, EPOLL_CTL_ADD, lws_get_socket_fd(req->wsi), &ev) != 0)
        return; /* not watched: the peer's FIN is seen when the answer is written */
    req->parked = true;
    lws_rx_flow_control(req->wsi, 0);
}

static void unpark(http_req *req)
{
    if (!req->parked)
        return;
    req->parked = false;
    if (req->wsi) {
        epoll_ctl(park_epfd, EPOLL_CTL_DEL, lws_get_socket_fd(req->wsi), NULL);
        lws_rx_flow_control(req->wsi, 1);
    }
}

static void on_park_event(uv_poll_t *h, int status, int events)
{
    (void)h, (void)status, (void)events;
    struct epoll_event evs[64];
    int n = epoll_wait(park_epfd, evs, 64, 0);
    for (int i = 0; i < n; i++) {
        http_req *req = evs[i].data.ptr;
        struct lws *wsi = req->wsi;
        unpark(req);
        if (wsi)
            lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, LWS_TO_KILL_ASYNC);
    }
}

void http_lws_start(uv_loop_t *loop)
{
    if (park_epfd >= 0)
        return;
    park_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (park_epfd < 0) {
        log_warn("http: epoll_create1 failed: a dropped long-poll is noticed at its next answer");
        return;
    }
    uv_poll_init(loop, &park_poll, park_epfd);
    uv_poll_start(&park_poll, UV_READABLE, on_park_event);
    uv_unref((uv_handle_t *)&park_poll); /* never keeps the loop alive by itself */
}

static void on_park_closed(uv_handle_t *h)
{
    (void)h;
    close(park_epfd);
    park_epfd = -1;
}

void http_lws_stop(void)
{
    if (park_epfd >= 0 && !uv_is_closing((uv_handle_t *)&park_poll))
        uv_close((uv_handle_t *)&park_poll, on_park_closed);
}

void http_route_add(const char *prefix, http_handler fn, void *ctx)
{
    routes = xrealloc(routes, (nroutes + 1) * sizeof *routes);
    routes[nroutes++] = (struct route){xstrdup(prefix), strlen(prefix), fn, ctx};
}

void http_routes_clear(void)
{
    for (size_t i = 0; i < nroutes; i++)
        free(routes[i].prefix);
    free(routes);
    routes = NULL;
    nroutes = 0;
    for (size_t i = 0; i < ncors; i++)
        free(cors[i]);
    free(cors);
    cors = NULL;
    ncors = 0;
}

void http_set_cors(const char *origins)
{
    const char *p = origins ? origins : "";
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && isspace((unsigned char)*p))
            p++, n--;
        while (n && isspace((unsigned char)p[n - 1]))
            n--;
        if (n == 1 && *p == '*')
            cors_any = true;
        else if (n) {
            cors = xrealloc(cors, (ncors + 1) * sizeof *cors);
            cors[ncors++] = xstrndup(p, n);
        }
        if (!e)
            break;
        p = e + 1;
    }
}

bool http_origin_allowed(const char *origin)
{
    if (!origin || !*origin)
        return false;
    if (cors_any)
        return true;
    for (size_t i = 0; i < ncors; i++)
        if (!strcmp(cors[i], origin))
            return true;
    return false;
}

/* ---- requests ------------------------------------------------------------ */

static char *hdr_dup(struct lws *wsi, enum lws_token_indexes t)
{
    int n = lws_hdr_total_length(wsi, t);
    if (n <= 0)
        return xstrdup("");
    char *s = xmalloc((size_t)n + 1);
    if (lws_hdr_copy(wsi, s, n + 1, t) < 0)
        s[0] = '\0';
    return s;
}

static char *custom_dup(struct lws *wsi, const char *name)
{
    int nl = (int)strlen(name);
    int n = lws_hdr_custom_length(wsi, name, nl);
    if (n <= 0)
        return xstrdup("");
    char *s = xmalloc((size_t)n + 1);
    if (lws_hdr_custom_copy(wsi, s, n + 1, name, nl) < 0)
        s[0] = '\0';
    return s;
}

void http_req_ref(http_req *req)
{
    req->refs++;
}

void http_req_unref(http_req *req)
{
    if (!req || --req->refs)
        return;
    free(req->path);
    free(req->query);
    free(req->origin);
    free(req->authorization);
    free(req->content_type);
    free(req->x_filename);
    buf_free(&req->body);
    buf_free(&req->resp);
    buf_free(&req->resp_headers);
    free(req);
}

void http_add_header(http_req *req, const char *name, const char *value)
{
    buf_printf(&req->resp_headers, "%s: %s\r\n", name, value);
}

void http_respond(http_req *req, int status, const char *ctype, const void *body, size_t len)
{
    if (req->responded)
        return;
    req->responded = true;
    unpark(req);
    req->status = status;
    req->resp_ctype = ctype;
    buf_append(&req->resp, body, len);
    if (req->wsi)
        lws_callback_on_writable(req->wsi);
}

void http_respond_json(http_req *req, int status, const char *json)
{
    http_respond(req, status, "application/json", json, strlen(json));
}

void http_respond_error(http_req *req, int status, const char *code, const char *message)
{
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{\"error\":{\"code\":");
    buf_json_str(&b, code, strlen(code));
    buf_puts(&b, ",\"message\":");
    buf_json_str(&b, message, strlen(message));
    buf_puts(&b, "}}");
    http_respond(req, status, "application/json", b.data, b.len);
    buf_free(&b);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

const char *http_query_get(const char *query, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *p = query;
    while (p && *p) {
        const char *amp = strchr(p, '&');
        const char *end = amp ? amp : p + strlen(p);
        if ((size_t)(end - p) >= nl && !strncmp(p, name, nl) && (p + nl == end || p[nl] == '=')) {
            const char *v = p + nl + (p + nl < end ? 1 : 0);
            size_t o = 0;
            while (v < end && o + 1 < outlen) {
                if (*v == '%' && end - v >= 3 && hexval(v[1]) >= 0 && hexval(v[2]) >= 0) {
                    out[o++] = (char)(hexval(v[1]) * 16 + hexval(v[2]));
                    v += 3;
                } else {
                    out[o++] = *v == '+' ? ' ' : *v;
                    v++;
                }
            }
            out[o] = '\0';
            return out;
        }
        p = amp ? amp + 1 : NULL;
    }
    return NULL;
}

static enum http_method method_of(int m)
{
    switch (m) {
    case LWSHUMETH_GET: return HTTP_GET;
    case LWSHUMETH_POST: return HTTP_POST;
    case LWSHUMETH_OPTIONS: return HTTP_OPTIONS;
    case LWSHUMETH_PUT: return HTTP_PUT;
    case LWSHUMETH_PATCH: return HTTP_PATCH;
    case LWSHUMETH_DELETE: return HTTP_DELETE;
    case LWSHUMETH_HEAD: return HTTP_HEAD;
    default: return HTTP_OTHER;
    }
}

/* Joins lws' URL-arg fragments back into one raw query string (caller frees). The copy buffer
 * holds the whole query, so no fragment is too long for it: a fixed buffer made
 * lws_hdr_copy_fragment fail on a long one (a JWT in socket.io-client's `query` option, which
 * comes before EIO/transport/sid) and every later parameter was lost. */
char *http_lws_query(struct lws *wsi)
{
    buf_t q;
    buf_init(&q);
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    char *frag = xmalloc(total > 0 ? (size_t)total + 1 : 1);
    for (int i = 0; total > 0; i++) {
        int n = lws_hdr_copy_fragment(wsi, frag, total + 1, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            break; /* no fragment i */
        if (q.len)
            buf_putc(&q, '&');
        buf_append(&q, frag, (size_t)n);
    }
    free(frag);
    return buf_steal(&q, NULL); /* "" when there is no query */
}

static http_req *req_new(struct lws *wsi)
{
    http_req *req = xcalloc(1, sizeof *req);
    req->refs = 1;
    req->wsi = wsi;
    buf_init(&req->body);
    buf_init(&req->resp);
    buf_init(&req->resp_headers);
    char *uri = NULL;
    int ulen = 0;
    req->method = method_of(lws_http_get_uri_and_method(wsi, &uri, &ulen));
    req->path = uri && ulen > 0 ? xstrndup(uri, (size_t)ulen) : xstrdup("/");
    req->query = http_lws_query(wsi);
    req->origin = hdr_dup(wsi, WSI_TOKEN_ORIGIN);
    req->authorization = hdr_dup(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    req->content_type = hdr_dup(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE);
    req->x_filename = custom_dup(wsi, "x-filename:");
    char *conn = hdr_dup(wsi, WSI_TOKEN_CONNECTION);
    /* Say so when we will close: keep-alive clients (Node's agent) otherwise
     * reuse a socket that is about to go away. */
    if (strcasestr(conn, "close"))
        http_add_header(req, "connection", "close");
    free(conn);
    char *cl = hdr_dup(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
    req->content_length = *cl ? strtoll(cl, NULL, 10) : -1;
    free(cl);
    lws_get_peer_simple(wsi, req->peer, sizeof req->peer);
    return req;
}

/* Drops the shell's hold on the connection's request (connection gone or reused). */
static void req_detach(struct pss *pss)
{
    http_req *req = pss->req;
    if (!req)
        return;
    pss->req = NULL;
    unpark(req);
    req->wsi = NULL;
    if (!req->written && req->on_abort)
        req->on_abort(req);
    http_req_unref(req);
}

static void add_cors(http_req *req)
{
    if (http_origin_allowed(req->origin)) {
        http_add_header(req, "access-control-allow-origin", req->origin);
        http_add_header(req, "access-control-allow-credentials", "true");
        http_add_header(req, "vary", "Origin");
    }
}

static int on_body_done(struct pss *pss);
static void body_too_large(struct pss *pss);
static int on_http_writeable(struct lws *wsi, struct pss *pss);

static int on_http(struct lws *wsi, struct pss *pss)
{
    req_detach(pss); /* keep-alive: a previous transaction's leftovers */
    http_req *req = req_new(wsi);
    pss->req = req;
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0); /* long-polls are held on purpose */
    add_cors(req);
    if (req->method == HTTP_OPTIONS) {
        if (http_origin_allowed(req->origin)) {
            http_add_header(req, "access-control-allow-methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS");
            http_add_header(req, "access-control-allow-headers",
                            "authorization, content-type, x-filename");
            http_add_header(req, "access-control-max-age", "600");
        }
        http_respond(req, 204, "text/plain", "", 0);
        return 0;
    }
    for (size_t i = 0; i < nroutes; i++) {
        if (!strncmp(req->path, routes[i].prefix, routes[i].plen)) {
            routes[i].fn(routes[i].ctx, req);
            if (req->on_body && req->max_body > 0 && req->content_length > req->max_body) {
                body_too_large(pss); /* the 413 now, not after reading it all */
                return 0;
            }
            if (!req->on_body)
                park(req); /* answered later (no-op when answered already) */
            return 0;
        }
    }
    http_respond_error(req, 404, "not_found", "no such path");
    return 0;
}

static int on_body_chunk(struct pss *pss, const void *in, size_t len)
{
    http_req *req = pss->req;
    if (!req || !req->on_body || req->body_too_large)
        return 0;
    if (req->max_body > 0 && (int64_t)(req->body.len + len) > req->max_body) {
        body_too_large(pss);
        return 0;
    }
    buf_append(&req->body, in, len);
    return 0;
}

/* The body is over max_body: the handler answers 413 at once and the connection closes after
 * it. Waiting for the end let a client stream without limit into a request it had announced
 * as a terabyte (each chunk restarted lws' timeout). */
static void body_too_large(struct pss *pss)
{
    http_req *req = pss->req;
    struct lws *wsi = req->wsi;
    req->body_too_large = true;
    req->close_after = true;
    buf_free(&req->body);
    on_body_done(pss);
    /* written now: while body bytes keep arriving lws does not offer the connection for
     * writing, and a client that streams on would never see the 413 */
    if (wsi && pss->req && pss->req->responded && !pss->req->written &&
        on_http_writeable(wsi, pss) < 0)
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static int on_body_done(struct pss *pss)
{
    http_req *req = pss->req;
    if (!req || !req->on_body)
        return 0;
    void (*fn)(http_req *) = req->on_body;
    req->on_body = NULL;
    fn(req); /* also when body_too_large: the handler answers 413 and releases */
    park(req);
    return 0;
}

static int on_http_writeable(struct lws *wsi, struct pss *pss)
{
    http_req *req = pss->req;
    if (!req || !req->responded || req->written)
        return 0;
    unsigned char hdrs[LWS_PRE + 4096];
    unsigned char *start = hdrs + LWS_PRE, *p = start, *end = hdrs + sizeof hdrs - 1;
    if (lws_add_http_common_headers(wsi, (unsigned)req->status, req->resp_ctype,
                                    (lws_filepos_t)req->resp.len, &p, end))
        return -1;
    /* extra headers, one "name: value\r\n" line each */
    const char *h = req->resp_headers.data;
    while (h && *h) {
        const char *colon = strchr(h, ':'), *eol = strstr(h, "\r\n");
        if (!colon || !eol || colon > eol)
            break;
        char name[128], val[1024];
        size_t nl = (size_t)(colon - h) < sizeof name - 2 ? (size_t)(colon - h) : sizeof name - 2;
        memcpy(name, h, nl);
        name[nl] = ':';
        name[nl + 1] = '\0';
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        size_t vl = (size_t)(eol - v) < sizeof val - 1 ? (size_t)(eol - v) : sizeof val - 1;
        memcpy(val, v, vl);
        val[vl] = '\0';
        if (lws_add_http_header_by_name(wsi, (unsigned char *)name, (unsigned char *)val, (int)vl,
                                        &p, end))
            return -1;
        h = eol + 2;
    }
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    req->written = true;
    if (req->resp.len) {
        /* lws_write needs LWS_PRE bytes in front of the payload */
        unsigned char *out = xmalloc(LWS_PRE + req->resp.len);
        memcpy(out + LWS_PRE, req->resp.data, req->resp.len);
        int n = lws_write(wsi, out + LWS_PRE, req->resp.len, LWS_WRITE_HTTP_FINAL);
        free(out);
        if (n < (int)req->resp.len)
            return -1;
    }
    bool close = req->close_after;
    req_detach(pss);
    if (close) {
        /* An oversized body is not read on. Closing at once with its bytes unread makes the
         * kernel reset the connection, and a client that has not read the 413 yet loses it.
         * So: send our FIN, drop whatever else arrives (no request is attached any more), and
         * close in 2 s whatever the client does. */
        shutdown(lws_get_socket_fd(wsi), SHUT_WR);
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, 2);
        return 0;
    }
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct pss *pss = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return on_http(wsi, pss);
    case LWS_CALLBACK_HTTP_BODY:
        return on_body_chunk(pss, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return on_body_done(pss);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return on_http_writeable(wsi, pss);
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss)
            req_detach(pss);
        return 0;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return g_eio ? eio_ws_filter(g_eio, &pss->ws, wsi) : 1;
    case LWS_CALLBACK_ESTABLISHED:
        eio_ws_established(&pss->ws);
        return 0;
    case LWS_CALLBACK_RECEIVE:
        return eio_ws_receive(&pss->ws, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return eio_ws_writeable(&pss->ws);
    case LWS_CALLBACK_CLOSED:
        eio_ws_closed(&pss->ws);
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

const struct lws_protocols http_lws_protocol = {
    .name = "chatd",
    .callback = callback,
    .per_session_data_size = sizeof(struct pss),
    /* rx: a per-connection buffer (RSS), bigger messages arrive in several
     * callbacks; tx: lws would otherwise cut every send at the rx size */
    .rx_buffer_size = 2048,
    .tx_packet_size = 1 << 20,
};
