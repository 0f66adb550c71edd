/* Typed message operations over store/pg.h: the append path (persist with gap-free seq,
 * idempotent by clientId) and the message row <-> wire JSON mapping. */
#ifndef CHATD_STORE_MESSAGES_H
#define CHATD_STORE_MESSAGES_H
#include <stdint.h>

#include "common/buf.h"
#include "store/pg.h"

typedef enum pg_append_status {
    PG_APPEND_OK = 0,         /* new message stored, seq allocated */
    PG_APPEND_REPLAY,         /* (chatId, clientId) already stored: the original message */
    PG_APPEND_NOT_FOUND,      /* no such chat (or another org's): not_found */
    PG_APPEND_CLOSED,         /* chat closed: conflict */
    PG_APPEND_STALE,          /* owner_version no longer current: drop (AI after takeover) */
    PG_APPEND_BAD_ATTACHMENT, /* an upload id that is not the sender's own */
    PG_APPEND_UNAVAILABLE,    /* database unreachable / timeout: unavailable */
    PG_APPEND_INTERNAL,       /* anything else: internal */
} pg_append_status;

/* "ok", "replay", "not_found", "closed", "stale", "bad_attachment", "unavailable", "internal" */
const char *pg_append_status_str(pg_append_status st);

/* A message row. All strings borrowed from the PGresult: valid only during the callback (copy
 * what must outlive it). NULL = SQL NULL. */
typedef struct pg_message {
    const char *id;
    const char *chat_id;
    int64_t seq;
    const char *client_id;
    const char *sender_type;      /* customer | agent | ai | system */
    const char *sender_id;
    const char *sender_name;
    const char *text;
    const char *attachments_json; /* JSON array text, "[]" when none */
    const char *created_at;       /* ISO-8601 UTC with milliseconds */
    const char *edited_at;
    const char *deleted_at;
} pg_message;

/* The chat as the append saw it (after the append). Borrowed like pg_message. */
typedef struct pg_chat_state {
    const char *status;           /* ai | queued | assigned | closed */
    int owner_version;
    int64_t last_seq;
    const char *org_id;
    const char *customer_key;
    const char *agent_id;
} pg_chat_state;

typedef struct pg_append_req {
    const char *chat_id;          /* required */
    const char *org_id;           /* when set, a chat of another org is not_found */
    const char *client_id;        /* idempotency key, NULL for system/ai messages */
    const char *sender_type;      /* customer | agent | ai | system */
    const char *sender_id;
    const char *sender_name;
    const char *text;
    const char *attachments_json; /* a ready JSON array, or NULL (see upload_ids) */
    const char *const *upload_ids;/* upload ids to resolve (must be the sender's own), or NULL */
    size_t nupload_ids;
    int owner_version;            /* >= 0: refuse (STALE) unless the chat's is equal; < 0: off */
} pg_append_req;

/* msg is set for OK and REPLAY, chat for everything but NOT_FOUND/UNAVAILABLE/INTERNAL;
 * err is a human-readable reason for UNAVAILABLE/INTERNAL, else NULL. Runs exactly once
 * unless cancelled with pg_cancel(pg, id). */
typedef void (*pg_append_cb)(void *ctx, pg_append_status st, const pg_message *msg,
                             const pg_chat_state *chat, const char *err);

/* Appends a message (one round trip, pipelined and batched with concurrent appends, routed by
 * chat id so a chat's appends complete in seq order). Strings in req are copied. */
pg_req_id pg_append_message(pg_client *pg, const pg_append_req *req, pg_append_cb cb, void *ctx);

/* Columns to SELECT from `messages` for pg_message_from_row, e.g.
 *   "SELECT " PG_MESSAGE_COLUMNS " FROM messages WHERE chat_id = $1 ORDER BY seq" */
#define PG_MESSAGE_COLUMNS                                                                    \
    "id, chat_id, seq, client_id, sender_type, sender_id, sender_name, text, "               \
    "attachments::text AS attachments, chatd_iso(created_at) AS created_at, "                \
    "chatd_iso(edited_at) AS edited_at, chatd_iso(deleted_at) AS deleted_at"

/* Reads row `row` of res (columns found by name, as in PG_MESSAGE_COLUMNS) into *out
 * (borrowed from res). Returns 0, or -1 if a required column is missing. */
int pg_message_from_row(const PGresult *res, int row, pg_message *out);

/* Appends the SPEC message object {id, chatId, seq, clientId?, sender:{type,id?,name?}, text,
 * attachments, createdAt, editedAt?, deletedAt?} to out. */
void pg_message_to_json(const pg_message *m, buf_t *out);

#endif
