/* store/redis.h — the Redis client of chatd: hiredis async on the shared
 * libuv loop (STYLE §14-17). I/O shell; the pure parts are store/keys.h,
 * queue/queue.h and presence/presence.h.
 *
 * One redis_client per process holds two connections:
 *   - the command connection: commands and EVALSHA of the lua/ scripts;
 *   - the subscriber connection: SUBSCRIBE / PSUBSCRIBE for cross-node
 *     fan-out and keyspace notifications; subscriptions are remembered and
 *     re-sent after every reconnect.
 * Each connection has an explicit state, a connect timeout (covering AUTH,
 * SELECT, SCRIPT LOAD, CONFIG), and reconnects by itself with exponential
 * backoff (backoff_min_ms doubling up to backoff_max_ms, with jitter).
 * A command that gets no reply within command_timeout_ms takes the command
 * connection down (every pending callback then sees "no reply") and it
 * reconnects.
 *
 * Callback contract (redis_reply_cb): runs exactly once per command, always
 * from the loop, never inside the call that issued the command:
 *   reply != NULL, err == NULL : Redis answered (reply may be an error reply,
 *                                REDIS_REPLY_ERROR; decoders map it). The
 *                                reply is borrowed: valid only during the call.
 *   reply == NULL, err != NULL : no answer (Redis down, not ready yet,
 *                                connection lost, timeout, client freed):
 *                                callers answer `unavailable`.
 * A pending command can be detached (redis_op_detach): its callback never
 * runs, for example when the socket that asked has closed. The redis_op
 * handle is valid until the callback runs or redis_op_detach is called; keep
 * it only if you may detach, and clear it in the callback. (Carrying a socket
 * id in ctx and looking it up in the callback is the other accepted way.)
 *
 * Scripts: at each (re)connect every script of the rk_script table is read
 * from the lua directory (lib.lua prepended; read once, at redis_new) and
 * loaded with SCRIPT LOAD. redis_eval sends EVALSHA; on a NOSCRIPT error
 * (SCRIPT FLUSH, failover) the script is loaded again and the call retried
 * once, transparently.
 *
 * Keyspace notifications: unless notify_keyspace is false, each connect runs
 * CONFIG GET notify-keyspace-events and, when E or x is missing, CONFIG SET
 * with them added to the existing flags (never clobbering others). A refused
 * CONFIG (managed Redis) is logged and ignored.
 */
#ifndef CHATD_STORE_REDIS_H
#define CHATD_STORE_REDIS_H
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "common/config.h"
#include "common/xalloc.h"
#include "store/keys.h"

typedef struct redis_client redis_client;
typedef struct redis_op redis_op;

enum redis_state {
    RDS_IDLE = 0,   /* created, redis_start not called yet */
    RDS_RESOLVING,  /* resolving the host name (uv_getaddrinfo) */
    RDS_CONNECTING, /* TCP connect in progress */
    RDS_INIT,       /* connected: AUTH / SELECT / SCRIPT LOAD / CONFIG / SUBSCRIBE */
    RDS_READY,      /* usable */
    RDS_BACKOFF,    /* down, waiting before the next attempt */
    RDS_CLOSING,    /* redis_free called */
};
const char *redis_state_str(enum redis_state st);

typedef void (*redis_reply_cb)(void *ctx, redisReply *reply, const char *err);
/* A pub/sub message. pattern is NULL for SUBSCRIBE channels. Buffers are
 * borrowed for the duration of the call (not NUL-terminated: use the lengths). */
typedef void (*redis_message_cb)(void *ctx, const char *pattern, const char *channel,
                                 size_t channel_len, const char *data, size_t data_len);
/* Command connection state changes (READY after a (re)connect, BACKOFF when
 * it went down). err is a short reason or NULL. */
typedef void (*redis_state_cb)(void *ctx, enum redis_state st, const char *err);

typedef struct redis_options {
    const char *url;          /* redis://[[user]:password@]host[:port][/db] */
    const char *lua_dir;      /* NULL: rk_lua_dir() */
    bool load_scripts;        /* read and SCRIPT LOAD the lua/ scripts (true) */
    bool notify_keyspace;     /* make sure notify-keyspace-events has E and x */
    int connect_timeout_ms;   /* 0: 3000 */
    int command_timeout_ms;   /* 0: 5000 */
    int backoff_min_ms;       /* 0: 100 */
    int backoff_max_ms;       /* 0: 5000 */
    redis_state_cb on_state;  /* the command connection's state (ready / backoff) */
    void *state_ctx;
    /* The subscriber connection is back after it was lost (not its first start): publications
     * of the gap never arrived. It can be lost alone (a pub/sub output buffer limit, a proxy),
     * with on_state saying nothing. Gets state_ctx. */
    void (*on_sub_back)(void *ctx);
    redis_message_cb on_message;
    void *message_ctx;
} redis_options;

/* Defaults (scripts on, notifications per cfg, url from cfg). Strings are
 * borrowed from cfg. cfg may be NULL (local defaults). */
void redis_options_init(redis_options *o, const chatd_config *cfg);

/* Creates a client (nothing is sent before redis_start). Returns NULL and
 * logs when the URL is malformed or a script file cannot be read. Strings of
 * opt are copied. */
GW_NODISCARD redis_client *redis_new(uv_loop_t *loop, const redis_options *opt);
/* Starts connecting both connections; returns 0. */
int redis_start(redis_client *r);
/* Closes both connections: every pending callback runs with (NULL, "closing")
 * (some synchronously, inside this call), then the uv handles close; the
 * memory is released in the last close callback, so the loop must run once
 * more. Accepts NULL. The client must not be used after this call. */
void redis_free(redis_client *r);

bool redis_is_ready(const redis_client *r);        /* command connection READY */
bool redis_sub_is_ready(const redis_client *r);    /* subscriber connection READY */
enum redis_state redis_get_state(const redis_client *r);
int redis_db(const redis_client *r);                /* database number of the URL */
/* Number of completed (re)connects of the command connection (tests, metrics). */
unsigned long redis_connect_count(const redis_client *r);

/* Sends one command. argv/argvlen are copied. Never returns NULL. */
redis_op *redis_cmd_argv(redis_client *r, int argc, const char **argv, const size_t *argvlen,
                         redis_reply_cb cb, void *ctx);
/* Convenience: NUL-terminated string arguments, NULL-terminated list. */
redis_op *redis_cmd(redis_client *r, redis_reply_cb cb, void *ctx, const char *arg0, ...)
    __attribute__((sentinel));
/* EVALSHA of a script (a->script) or a plain command (RK_NO_SCRIPT); a is
 * copied (the caller may reuse it right away). */
redis_op *redis_eval(redis_client *r, const rk_argv *a, redis_reply_cb cb, void *ctx);
/* The callback of op will not run. op must still be pending. */
void redis_op_detach(redis_op *op);

/* Subscriptions of the subscriber connection (remembered; re-sent after a
 * reconnect). Messages go to opt->on_message. Return 0, or -1 if already
 * subscribed / not subscribed. */
int redis_subscribe(redis_client *r, const char *channel);
int redis_psubscribe(redis_client *r, const char *pattern);
int redis_unsubscribe(redis_client *r, const char *channel);
int redis_punsubscribe(redis_client *r, const char *pattern);
/* SUBSCRIBE __keyevent@DB__:expired for the URL's database. */
int redis_subscribe_expired(redis_client *r);

/* PUBLISH on the command connection (cross-node fan-out). */
redis_op *redis_publish(redis_client *r, const char *channel, const char *data, size_t len,
                        redis_reply_cb cb, void *ctx);

#endif
