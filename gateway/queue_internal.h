/* Shared between gateway/chat_queue.c (the queue module: enqueue, release,
 * queue-position pushes, rebuild from PostgreSQL, no-reply timers) and
 * gateway/chat_agent.c (pick-next, transfer-chat, request-agent).
 *
 * Consistency rule (SPEC §7, issue 5): PostgreSQL decides, Redis routes.
 *   - into the queue (open, request-agent, transfer to skills, no-reply):
 *     PostgreSQL first, then the Redis enqueue/transfer; a Redis failure
 *     leaves a chat queued in PostgreSQL only, which the periodic rebuild
 *     puts back into Redis;
 *   - out of the queue (pick-next): the Redis pick first (atomic, the race
 *     arbiter), then chat_assign() in PostgreSQL; when that refuses (the chat
 *     is no longer queued) the pick is released, when it fails the entry is
 *     restored where it was. */
#ifndef CHATD_QUEUE_INTERNAL_H
#define CHATD_QUEUE_INTERNAL_H
#include "common/buf.h"
#include "gateway/chat.h"

/* "{a,b}" (PostgreSQL text[] output) or "a,b" -> normalised "a,b" appended to out. */
void queue__skills_csv(buf_t *out, const char *pg_array_or_csv);
/* "a,b" -> JSON array ["a","b"] appended to out. */
void queue__skills_json(buf_t *out, const char *csv);
/* Wall clock in ms. */
long long queue__now_ms(void);
/* ISO-8601 "YYYY-MM-DDTHH:MM:SS.mmmZ" -> ms since the epoch (0 when malformed). */
long long queue__iso_ms(const char *iso);

/* queue-notification {type, chatId, skills, priority, waitingSeconds, queueLength} to agents:{org}.
 */
void queue__notify(chat_app *app, const char *org, const char *type, const char *chat_id,
                   const char *skills_csv, int priority, long long enqueued_ms,
                   long long queue_length);
/* The org's queue changed here: push queue-position to the waiting customers
 * connected to this node (debounced; other nodes catch up on their poll). */
void queue__changed(chat_app *app, const char *org);

/* {"position":N,"etaSeconds":N} */
void queue__eta_json(buf_t *out, long long position, long long eta_s);

/* After a chat entered the queue in PostgreSQL (open, request-agent, AI hand-off):
 * enqueue in Redis, then chat-state queued {queue}, queue-notification enqueued,
 * queue-position pushes. */
void queue__enqueue(chat_app *app, const char *org, const char *chat_id, int priority,
                    const char *skills_csv, long long enqueued_ms);

/* After chat_requeue() moved an assigned chat to the queue in PostgreSQL: the
 * Redis side (mode "skills": new required skills, priority = the raised one
 * given here; "front": no-reply, ahead of everything), then chat-state queued
 * {queue}, queue-notification enqueued, queue-position pushes. */
void queue__requeue_redis(chat_app *app, const char *org, const char *chat_id, const char *mode,
                          const char *skills_csv, int priority, long long enqueued_ms);

/* No-reply timer (CHATD_AGENT_REPLY_TIMEOUT_S): armed at assignment (reset),
 * armed if not armed by a customer message, stopped by an agent message,
 * a transfer to the queue, a close. */
void queue__reply_arm(chat_app *app, const char *org, const char *chat_id, bool only_if_unarmed);
void queue__reply_stop(chat_app *app, const char *org, const char *chat_id);

/* A chat left the queue side in PostgreSQL and may still have a Redis entry,
 * load or assignment: release it there (dequeue, agent load -1). */
void queue__release(chat_app *app, const char *org, const char *chat_id, bool close);

/* Emits the system message of a queue operation (row of a 020_queue_ops.sql
 * function with PG_MESSAGE_COLUMNS-named columns; nothing when id is NULL). */
void queue__emit_row_message(chat_app *app, const char *org, const PGresult *res);

/* Agent display JSON {"id":..,"name":..}. */
void queue__agent_json(buf_t *out, const char *id, const char *name);

/* The AI's hand-off (transfer_chat_to_agent tool, provider failure): ai -> queued
 * as the system, like request-agent; skills_csv "a,b" replaces the required
 * skills (NULL keeps them); text: a system message or NULL. Fire and forget:
 * chat-state queued, queue-notification and queue-position follow. */
void queue_handoff(chat_app *app, const char *org, const char *chat_id, const char *skills_csv,
                   const char *text);

#endif
