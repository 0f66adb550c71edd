/* The /chat namespace (SPEC §2-6): roles from the JWT, persistence in
 * PostgreSQL before any publish, rooms, catch-up, and cross-node fan-out over
 * Redis pub/sub. Internal header of gateway/chat_*.c. */
#ifndef CHATD_CHAT_H
#define CHATD_CHAT_H
#include <stdbool.h>
#include <stdint.h>

#include <cJSON.h>
#include <uv.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/strmap.h"
#include "gateway/auth.h"
#include "gateway/csr.h"
#include "gateway/sio.h"
#include "store/messages.h"
#include "store/pg.h"
#include "store/redis.h"

#define CHAT_FANOUT_CHANNEL "chatd:fanout"

/* One per process, created by chat_app_new in `chatd serve`. */
typedef struct chat_app {
    uv_loop_t *loop;
    const chatd_config *cfg;
    auth_keys keys;
    pg_client *pg;
    redis_client *redis;
    sio_server *sio;
    sio_nsp *nsp;
    char node_id[128];
    strmap sockets; /* sio socket id -> chat_sock (this node's) */
    strmap pids;    /* recovery pid -> chat_sock (this node's) */
    bool hooks_started;
    bool redis_was_down;
    void *presence, *timers, *queue; /* module state, owned by chat_presence.c etc. */
    struct chat_order *order;        /* gateway/chat_order.c */
    struct {
        uint64_t connects, messages, broadcasts, fanout_in, fanout_out;
    } stats;
} chat_app;

/* A live message delivery waiting for a socket's catch-up to finish. */
struct held_msg {
    char *chat_id;
    int64_t seq;
    gw_frame *frame;
};

/* One per accepted /chat socket; sio user data. Freed on disconnect, so async
 * callbacks look it up again through sio_get_user() after checking
 * sio_connected(). */
typedef struct chat_sock {
    chat_app *app;
    sio_socket *s;
    /* A send can close the socket (slow consumer) and its disconnect would free this struct
     * under a loop that is still sending: while busy, the disconnect only marks it dead and
     * the loop frees it when done (chat_sock_unbusy). */
    int busy;
    bool dead;
    auth_principal p;
    const char *role;    /* "customer" | "agent" */
    char *identity_room; /* identity:{org}:{role}:{key} */
    char *config_id;     /* context.configId (customers), or NULL */
    /* catch-up in progress: live chat messages are held, then de-duplicated by seq */
    bool catching_up;
    cJSON *catchup_next; /* chatId -> seq: chats to read when the current read ends */
    struct held_msg *held;
    size_t nheld, capheld;
    /* connection state recovery (csr.h): what was sent, for the record kept
     * when the socket drops; pid of the session; a recovery being applied */
    csr_log csr;
    char pid[24];
    bool recovered;
    char recover_sid[24];
    cJSON *recover_have; /* chatId -> seq, until the session answer is built */
    /* event rate limit: token bucket */
    double tokens;
    uint64_t refill_ms;
} chat_sock;

chat_app *chat_app_new(uv_loop_t *loop, const chatd_config *cfg, sio_server *sio,
                       pg_client *pg, redis_client *redis, char *err, size_t errlen);
void chat_app_free(chat_app *app);
/* Stops the modules' timers (before the loop drains at shutdown). Accepts NULL. */
void chat_app_stop(chat_app *app);
/* Attaches the Redis client (created after the app, whose pointer it carries)
 * and subscribes to the fan-out channel. */
void chat_app_set_redis(chat_app *app, redis_client *redis);
/* Redis pub/sub messages of the fan-out channel (wired as redis on_message). */
void chat_on_fanout(void *ctx, const char *pattern, const char *channel, size_t channel_len,
                    const char *data, size_t len);
bool chat_app_ready(const chat_app *app);
/* Redis command connection state changes (wired as redis on_state): after an
 * outage every local socket re-joins the chats it belongs to. */
void chat_on_redis_state(void *ctx, enum redis_state st, const char *err);
/* redis_options.on_sub_back: the fan-out subscription was lost alone and is back. */
void chat_on_fanout_back(void *ctx);

/* ---- helpers shared by the handler files ---------------------------------------- */

/* Room names (caller frees). */
char *chat_room(const char *org, const char *chat_id);

/* Acks: {"ok":true,<fields>} / {"ok":false,"error":{"code","message"}}. fields may be NULL. */
void chat_ack_ok(sio_socket *s, int64_t ack_id, const char *fields);
void chat_ack_err(sio_socket *s, int64_t ack_id, const char *code, const char *message);

/* Emits ["event", payload] to a room on every node. except: a local socket to skip (or NULL).
 * volatile: may be dropped for backed-up sockets. */
void chat_emit_room(chat_app *app, const char *room, const char *event, const char *payload,
                    const sio_socket *except, bool is_volatile);
/* ["chat-message", <message>, "<chatId>:<seq>"]: the trailing string is the
 * Socket.IO recovery offset (csr.h). */
void chat_message_args(buf_t *b, const char *chat_id, int64_t seq, const char *message_json,
                       size_t message_len);
void chat_message_args_row(buf_t *b, const pg_message *m);
/* Emits a persisted chat-message (seq-tagged, so held catch-up deliveries de-duplicate). */
void chat_emit_message(chat_app *app, const char *org, const char *chat_id, int64_t seq,
                       const char *message_json);
/* Delivery order of persisted messages per chat on this node (chat_order.c). */
void chat_order_start(chat_app *app);
void chat_order_stop(chat_app *app);
/* Last seq this node delivered to a chat's room (or was told at a join); -1 when unknown. */
int64_t chat_order_last(chat_app *app, const char *chat_id);
/* Whether this node delivered a message of the chat after seq (to sockets that
 * were in its room then). */
bool chat_order_passed(chat_app *app, const char *chat_id, int64_t seq);
/* A socket of this node joined a chat whose last seq was last_seq then. */
void chat_order_seen(chat_app *app, const char *room, const char *chat_id, int64_t last_seq);
/* Delivers message `seq` of a chat in order (may hold it behind a gap). */
void chat_order_deliver(chat_app *app, const char *room, const char *chat_id, int64_t seq,
                        gw_frame *f);
/* Queues a chat-message frame for every member of room (catch-up holds apply). */
void chat_deliver_frame(chat_app *app, const char *room, const char *chat_id, int64_t seq,
                        gw_frame *f);

/* Every socket of identity room `identity` (all nodes) joins / leaves `room`. */
void chat_identity_join(chat_app *app, const char *identity, const char *room);
void chat_identity_leave(chat_app *app, const char *identity, const char *room);
/* The same join, for a chat whose last seq is last_seq now: nodes without a
 * reader of the chat yet start its delivery order there. */
void chat_identity_join_at(chat_app *app, const char *identity, const char *room,
                           const char *chat_id, int64_t last_seq);

/* Emits `chat-state` {chatId, status, agent?} to the chat room. agent_json may be NULL. */
void chat_emit_state(chat_app *app, const char *org, const char *chat_id, const char *status,
                     const char *agent_json, const char *queue_json);

/* An operation in flight for a socket: holds a reference; the callback checks
 * chat_op_sock() (NULL when the socket left meanwhile). */
typedef struct chat_op {
    chat_app *app;
    sio_socket *s;
    void (*next)(chat_sock *cs, struct chat_op *op); /* continuation after a check */
    int64_t ack_id;
    char *chat_id;
    char *str;   /* op-specific */
    int64_t num; /* op-specific */
    cJSON *json; /* op-specific, owned */
} chat_op;
chat_op *chat_op_new(sio_socket *s, int64_t ack_id, const char *chat_id);
chat_sock *chat_op_sock(chat_op *op);
void chat_op_free(chat_op *op);
/* Answers an op from a failed query: unavailable or internal. */
void chat_op_fail(chat_op *op, const char *err, const PGresult *res);

/* Event handlers (one per file group). Each validates its payload and acks. */
typedef void (*chat_handler)(chat_sock *cs, const sio_event *ev);
void chat_on_message(chat_sock *cs, const sio_event *ev);
void chat_on_typing(chat_sock *cs, const sio_event *ev);
void chat_on_read(chat_sock *cs, const sio_event *ev);
void chat_on_history(chat_sock *cs, const sio_event *ev);
void chat_on_close(chat_sock *cs, const sio_event *ev);
void chat_on_observe(chat_sock *cs, const sio_event *ev);
void chat_on_unobserve(chat_sock *cs, const sio_event *ev);
void chat_on_set_status(chat_sock *cs, const sio_event *ev);    /* chat_presence.c */
void chat_on_pick_next(chat_sock *cs, const sio_event *ev);     /* chat_agent.c */
void chat_on_transfer(chat_sock *cs, const sio_event *ev);      /* chat_agent.c */
void chat_on_request_agent(chat_sock *cs, const sio_event *ev); /* chat_agent.c */

/* Who may write (send, type, close) to a chat, decided from one row of
 * CHAT_OWNER_SQL ($1 chat id, $2 org): the owning customer, or the assigned
 * agent (SPEC 12.8). A missing row or another customer's chat is NOT_FOUND; an
 * agent on a closed chat is CLOSED (conflict), on someone else's FORBIDDEN.
 * A customer writing into its own closed chat is OK here: the append answers
 * conflict, or replays a retried clientId. Shared by the socket and REST. */
enum chat_access { CHAT_ACCESS_OK, CHAT_ACCESS_NOT_FOUND, CHAT_ACCESS_FORBIDDEN, CHAT_ACCESS_CLOSED };
extern const char CHAT_OWNER_SQL[];
enum chat_access chat_write_access(const PGresult *res, const auth_principal *p);

/* Why the body of a chat-message (the socket event's payload or a REST POST, `raw` its JSON
 * text) is refused as bad_request, or NULL: clientId, text, attachments and NUL characters.
 * chatId is the caller's business. Shared so that both ways in take the same messages. */
const char *chat_message_invalid(const cJSON *pl, const char *raw, size_t rawlen);

/* Payload helpers: a string member (NULL when absent or not a string). */
const char *chat_json_str(const cJSON *obj, const char *name);
/* An integer member >= 0 into *out; returns 0, 1 when absent, -1 when not a non-negative integer. */
int chat_json_int(const cJSON *obj, const char *name, int64_t *out);

#endif
