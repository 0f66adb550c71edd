/* HTTP requests on the shared port (libwebsockets shell, gateway/http_lws.c).
 *
 * One http_req exists per in-flight request. It is reference counted: the shell
 * holds one reference until the connection closes or the response is written;
 * a handler that answers later (after a Redis/PostgreSQL reply, or a long-poll)
 * takes its own with http_req_ref and drops it with http_req_unref. When the
 * client goes away first, req->wsi becomes NULL, on_abort runs, and a late
 * http_respond is a harmless no-op. */
#ifndef CHATD_HTTP_H
#define CHATD_HTTP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

struct lws;
struct lws_context;

enum http_method { HTTP_GET, HTTP_POST, HTTP_PUT, HTTP_PATCH, HTTP_DELETE, HTTP_OPTIONS, HTTP_HEAD, HTTP_OTHER };

typedef struct http_req http_req;
struct http_req {
    struct lws *wsi; /* NULL once the connection is gone */
    unsigned refs;
    enum http_method method;
    char *path;          /* URL path without the query, as sent */
    char *query;         /* raw query string without '?', "" if none */
    char *origin;        /* header values, "" when absent */
    char *authorization;
    char *content_type;
    char *x_filename;
    char peer[64];
    int64_t content_length; /* -1 when absent */
    /* body: set on_body (and max_body) from the route handler to receive it;
     * on_body runs once, when the body ended, or as soon as it is known to be
     * over max_body (a Content-Length over it, or the bytes so far) with
     * body_too_large set: the handler then answers 413 and the shell closes the
     * connection after it, reading no more of the body. */
    int64_t max_body;
    buf_t body;
    bool body_too_large;
    void (*on_body)(http_req *req);
    void (*on_abort)(http_req *req); /* client gone before the response */
    void *user;
    bool parked; /* shell state: waiting for a late answer (see http_lws.c) */
    bool close_after; /* shell state: close the connection once the response is written */
    /* response */
    bool responded, written;
    int status;
    const char *resp_ctype;
    buf_t resp;
    buf_t resp_headers; /* extra "name: value\r\n" lines */
};

/* A route claims every path that starts with prefix (first match wins). */
typedef void (*http_handler)(void *ctx, http_req *req);
void http_route_add(const char *prefix, http_handler fn, void *ctx);
void http_routes_clear(void);

/* CORS: comma separated allowed origins ("*" = any, "" = none). */
void http_set_cors(const char *origins);
bool http_origin_allowed(const char *origin);

void http_req_ref(http_req *req);
void http_req_unref(http_req *req);
/* Queues the response (copied) and asks the shell to write it. Once per request. */
void http_respond(http_req *req, int status, const char *ctype, const void *body, size_t len);
void http_respond_json(http_req *req, int status, const char *json);
/* Spec-shaped error: {"error":{"code":..,"message":..}}. */
void http_respond_error(http_req *req, int status, const char *code, const char *message);
void http_add_header(http_req *req, const char *name, const char *value);

/* Copies the URL-decoded value of query parameter `name` into out; returns
 * out, or NULL when absent (pure helper). */
const char *http_query_get(const char *query, const char *name, char *out, size_t outlen);

/* The lws protocol table entry of the shell (HTTP and WebSocket). */
extern const struct lws_protocols http_lws_protocol;
/* Starts / stops the shell's sweep of requests waiting for a late answer
 * (main, on the server's loop). */
struct uv_loop_s;
void http_lws_start(struct uv_loop_s *loop);
void http_lws_stop(void);
/* Set by main: WebSocket callbacks are forwarded to the Engine.IO server. */
struct eio_server;
void http_lws_set_eio(struct eio_server *eio);

/* The request's raw query string ("a=1&b=2"; "" when none), joined from lws' URL-arg fragments,
 * whatever their length. Caller frees. */
struct lws;
char *http_lws_query(struct lws *wsi);

#endif
