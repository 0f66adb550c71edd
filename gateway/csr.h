/* Socket.IO connection state recovery for /chat (SPEC §6), the pure part:
 * no I/O, unit-tested in tests/unit/test_csr.c.
 *
 * socket.io-client 4.6+ keeps the `pid` of the CONNECT answer and, when the
 * last argument of an event is a string, that string (the offset); both come
 * back in its next CONNECT. chatd appends "<chatId>:<seq>" to every
 * chat-message it sends: the same bytes for every recipient, so a broadcast
 * is still encoded once.
 *
 * Each socket keeps a log: per chat it follows, the last seq queued to it
 * (or the seq it had when it joined), and a ring of the most recent
 * (chat, seq) it was sent, in send order. When the socket drops for a reason a
 * client recovers from, the log becomes a record in Redis (csr_record_json),
 * which any node can take back (GETDEL). The offset marks the last message the
 * client processed: what was sent before it arrived (one ordered transport),
 * what follows it in the ring did not. csr_recover turns record + offset into
 * "chatId -> last seq the client has", which the catch-up path replays from
 * PostgreSQL. An offset the ring cannot place (it wrapped past it) means the
 * session is not recovered: the client catches up by seq as on any connect.
 */
#ifndef CHATD_CSR_H
#define CHATD_CSR_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "common/buf.h"

#define CSR_RING_MAX 256 /* messages in flight a recovery can place */

enum csr_from { CSR_HAVE, CSR_JOIN, CSR_SENT };

struct csr_chat {
    char *id;
    int64_t last;       /* last seq queued to the socket, or the seq it has / joined at */
    enum csr_from from; /* where `last` came from */
};

struct csr_ent {
    uint32_t chat; /* index in chats */
    int64_t seq;
};

typedef struct csr_log {
    struct csr_chat *chats;
    size_t nchats, capchats;
    struct csr_ent *ring; /* allocated on the first message, grows to CSR_RING_MAX */
    size_t cap, len, head; /* head: index of the oldest entry */
    bool wrapped;          /* older entries were overwritten */
} csr_log;

void csr_log_free(csr_log *l); /* and zeroes it */
/* The socket has chat_id up to `seq` (the client said so, or was told so in
 * `session`). No effect when the chat is already in the log. */
void csr_log_seed(csr_log *l, const char *chat_id, int64_t seq);
/* The socket became a member of chat_id's room at `seq`. Joins decided on
 * several nodes arrive in any order: until a message was sent, the earliest
 * join point wins (never below what the socket has). */
void csr_log_join(csr_log *l, const char *chat_id, int64_t seq);
/* Message seq of chat_id was queued to the socket. */
void csr_log_note(csr_log *l, const char *chat_id, int64_t seq);
/* Last seq queued (or seeded) for chat_id; -1 when unknown. */
int64_t csr_log_last(const csr_log *l, const char *chat_id);

/* Appends the offset of a message: "<chatId>:<seq>" as a JSON string. */
void csr_offset_json(buf_t *b, const char *chat_id, int64_t seq);

/* The record kept in Redis for a dropped socket: its sid, who it was
 * (identity), `follows` (chatId -> seq the socket was sent up to, for every
 * chat it followed) and the ring. Returns a malloc'd JSON string. */
char *csr_record_json(const csr_log *l, const char *sid, const char *identity,
                      const cJSON *follows);

typedef struct csr_recovery {
    char sid[24];
    cJSON *have; /* chatId -> last seq the client has (owned) */
} csr_recovery;

/* Reads a record for a client of `identity` whose last offset is `offset`
 * (NULL when it received nothing with one). Returns 0 and fills out (the
 * caller frees out->have with cJSON_Delete), or -1 and *why when the session
 * cannot be recovered exactly. */
int csr_recover(const char *record, size_t len, const char *identity, const char *offset,
                csr_recovery *out, const char **why);

/* Disconnect reasons a client reconnects from (Socket.IO's recoverable set,
 * plus chatd's "slow consumer"). */
bool csr_reason_recoverable(const char *reason);

#endif
