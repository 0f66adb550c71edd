/* queue/queue.h — skill-routed priority queue (SPEC §7), pure part.
 *
 * Builders fill an rk_argv (store/keys.h) for one lua/ script; the shell sends
 * it with redis_eval() (store/redis.h) and hands the reply to the matching
 * decoder. Decoders read a hiredis redisReply (borrowed, valid only during the
 * callback), copy what they keep, and return RK_OK or an rk_status error:
 * RK_ERR_UNAVAILABLE for a NULL reply (map to `unavailable`), RK_ERR_REDIS /
 * RK_ERR_SHAPE otherwise (map to `internal`). Output structs are written only
 * on RK_OK; free them with the matching *_free (NULL-safe).
 *
 * Skills are passed as a normalised "a,b" list (rk_skills_csv). Priorities are
 * 0..9, 9 served first; equal priorities are FIFO by enqueue time and order.
 * default_aht_s is CHATD_DEFAULT_HANDLE_TIME_S.
 *
 * Typical shell code (pick-next; ctx carries a socket id, not a pointer):
 *
 *   rk_argv a;  rk_argv_init(&a, RK_NO_SCRIPT);      // once, reusable
 *   buf_t sk;   buf_init(&sk);  rk_skills_csv(&sk, skills, nskills);
 *   if (q_build_pick(&a, org, agent_sub, max_chats, sk.data ? sk.data : "") != RK_OK)
 *       -> bad_request
 *   redis_eval(redis, &a, on_picked, op);              // a is copied
 *
 *   static void on_picked(void *ctx, redisReply *reply, const char *err) {
 *       q_pick_result p;
 *       switch (q_decode_pick(reply, &p)) {
 *       case RK_OK: break;
 *       case RK_ERR_UNAVAILABLE: -> `unavailable`; return;
 *       default: -> `internal`; return;
 *       }
 *       if (p.kind != Q_PICK_OK) -> {ok:true, chat:null}
 *       else assign p.chat_id in PostgreSQL, join rooms, arm timers ...
 *       q_pick_result_free(&p);
 *   }
 *
 * Lifecycle mapping: open without AI / request-agent / AI hand-off ->
 * q_build_enqueue; pick-next -> q_build_pick; transfer-chat -> *_transfer_*;
 * no-reply timeout -> q_build_requeue_front; close-chat / inactivity ->
 * q_build_release(close=true); resume-ai -> q_build_release(close=false);
 * takeover of a queued chat -> q_build_dequeue; queue-position pushes ->
 * q_build_snapshot (+ q_eta_seconds per position). Rebuild after a Redis
 * loss: q_build_enqueue with the chat's original enqueue time from PostgreSQL
 * for queued chats, q_build_restore for assigned ones.
 */
#ifndef CHATD_QUEUE_H
#define CHATD_QUEUE_H
#include <stdbool.h>

#include "store/keys.h"

struct redisReply;

/* Position and ETA of a queued chat: eta_s = ceil(position / max(available,
 * 1)) * avg_handle_s; position 0 = not queued. */
typedef struct q_eta {
    long long position;
    long long eta_s;
    long long available; /* agents online, not away, below capacity */
    long long avg_handle_s;
    long long queue_length;
} q_eta;

/* ---- builders: return RK_OK or RK_ERR_ARG. `a` must have been set up
 * with rk_argv_init once; each builder resets it (storage reused). ---- */

/* enqueued_at_ms 0 = now (Redis clock); pass the original time when
 * rebuilding the queue from PostgreSQL. Idempotent. */
enum rk_status q_build_enqueue(rk_argv *a, const char *org, const char *chat_id, int priority,
                               const char *skills_csv, long long enqueued_at_ms,
                               const char *preview, int default_aht_s);
/* Agent below max_chats takes the best chat whose skills ⊆ skills_csv. */
enum rk_status q_build_pick(rk_argv *a, const char *org, const char *agent_id, int max_chats,
                            const char *skills_csv);
enum rk_status q_build_dequeue(rk_argv *a, const char *org, const char *chat_id);
/* Back to the queue with new required skills, original enqueue time, priority
 * +1 (max 9). fallback_* are used when Redis holds no assignment (e.g. lost). */
enum rk_status q_build_transfer_skills(rk_argv *a, const char *org, const char *chat_id,
                                       const char *skills_csv, int fallback_priority,
                                       long long fallback_enqueued_at_ms, const char *preview,
                                       int default_aht_s);
/* To an agent that is online, not away and below capacity (else refused). */
enum rk_status q_build_transfer_agent(rk_argv *a, const char *org, const char *chat_id,
                                      const char *target_agent, int fallback_priority,
                                      long long fallback_enqueued_at_ms, int default_aht_s);
/* No-reply reassignment: back to the front of the queue (skills, priority kept). */
enum rk_status q_build_requeue_front(rk_argv *a, const char *org, const char *chat_id,
                                     int fallback_priority, long long fallback_enqueued_at_ms,
                                     const char *skills_csv, int default_aht_s);
/* Undo of a pick whose PostgreSQL write failed: back to the queue exactly where it was
 * (skills, priority, enqueue time and order kept), the agent's load -1. */
enum rk_status q_build_requeue_restore(rk_argv *a, const char *org, const char *chat_id,
                                       int fallback_priority, long long fallback_enqueued_at_ms,
                                       const char *skills_csv, int default_aht_s);
enum rk_status q_build_position(rk_argv *a, const char *org, const char *chat_id,
                                int default_aht_s);
/* Chat ids in queue order [offset, offset+limit) plus the ETA inputs. */
enum rk_status q_build_snapshot(rk_argv *a, const char *org, int default_aht_s, long long offset,
                                long long limit);
/* close = true (close-chat, inactivity: feeds the average handle time) or
 * false (resume-ai: only frees capacity). Also dequeues and stops the timers
 * of the given kinds (e.g. {"warn","close","reply"}). */
enum rk_status q_build_release(rk_argv *a, const char *org, const char *chat_id, bool close,
                               int default_aht_s, const char *const *timer_kinds, int nkinds);

/* Undo of a transfer to an agent that PostgreSQL did not take (queue_untransfer.lua): only
 * while chat_id is still assigned to target in Redis. Reply: integer 1 undone, 0 nothing to do. */
enum rk_status q_build_untransfer(rk_argv *a, const char *org, const char *chat_id,
                                 const char *from_agent, const char *target);
/* Rebuild after a Redis loss: records that chat_id is assigned to agent_id
 * (from PostgreSQL) and counts it in the agent's load, unless Redis already
 * knows the assignment. max_chats < 0 = unknown. */
enum rk_status q_build_restore(rk_argv *a, const char *org, const char *chat_id,
                               const char *agent_id, long long assigned_at_ms, int priority,
                               long long enqueued_at_ms, const char *skills_csv, int max_chats);

/* ---- decoders ---- */

typedef struct q_enqueue_result {
    bool created; /* false: was already queued (kept its place) */
    int priority;
    long long enqueued_at_ms;
    q_eta eta;
} q_enqueue_result;
enum rk_status q_decode_enqueue(const struct redisReply *r, q_enqueue_result *out);

enum q_pick_kind { Q_PICK_OK, Q_PICK_EMPTY, Q_PICK_FULL };
typedef struct q_pick_result {
    enum q_pick_kind kind;
    char *chat_id; /* heap, Q_PICK_OK only */
    char *skills;  /* heap "a,b" */
    char *preview; /* heap */
    int priority;
    long long enqueued_at_ms;
    long long assigned_at_ms;
    long long load; /* agent load after the pick */
    long long max_chats;
    long long queue_length;
} q_pick_result;
enum rk_status q_decode_pick(const struct redisReply *r, q_pick_result *out);
void q_pick_result_free(q_pick_result *p);

typedef struct q_dequeue_result {
    bool removed;
    long long queue_length;
} q_dequeue_result;
enum rk_status q_decode_dequeue(const struct redisReply *r, q_dequeue_result *out);

enum q_transfer_kind { Q_TRANSFER_QUEUED, Q_TRANSFER_ASSIGNED, Q_TRANSFER_REFUSED };
enum q_refusal { Q_REFUSED_NONE, Q_REFUSED_OFFLINE, Q_REFUSED_AWAY, Q_REFUSED_FULL, Q_REFUSED_SAME };
typedef struct q_transfer_result {
    enum q_transfer_kind kind;
    enum q_refusal refusal;  /* REFUSED: map to `conflict` */
    char *old_agent;         /* heap, "" when none */
    char *target;            /* heap, ASSIGNED only */
    int priority;            /* QUEUED */
    long long enqueued_at_ms;/* QUEUED */
    q_eta eta;               /* QUEUED */
} q_transfer_result;
enum rk_status q_decode_transfer(const struct redisReply *r, q_transfer_result *out);
void q_transfer_result_free(q_transfer_result *t);
const char *q_refusal_str(enum q_refusal r);

enum rk_status q_decode_position(const struct redisReply *r, q_eta *out);

typedef struct q_snapshot {
    long long available;
    long long avg_handle_s;
    long long queue_length;
    size_t n;
    char **chat_ids; /* heap array of heap strings */
} q_snapshot;
enum rk_status q_decode_snapshot(const struct redisReply *r, q_snapshot *out);
void q_snapshot_free(q_snapshot *s);
/* ETA for a 1-based position with the snapshot's inputs. */
long long q_eta_seconds(long long position, long long available, long long avg_handle_s);

typedef struct q_restore_result {
    bool restored;       /* false: Redis already had the assignment */
    long long agent_load;
} q_restore_result;
enum rk_status q_decode_restore(const struct redisReply *r, q_restore_result *out);

typedef struct q_release_result {
    bool was_queued;
    char *agent;        /* heap; "" when no agent was assigned */
    long long handled_ms;
    long long avg_handle_s;
} q_release_result;
enum rk_status q_decode_release(const struct redisReply *r, q_release_result *out);
void q_release_result_free(q_release_result *r);

#endif
