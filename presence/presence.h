/* presence/presence.h — presence and inactivity timers in Redis (SPEC §7,
 * issue 4), pure part: EVALSHA argv builders for the lua/ scripts and reply
 * decoders. Same conventions as queue/queue.h: `a` initialised once with
 * rk_argv_init, builders reset it; decoders write outputs only on RK_OK,
 * NULL reply -> RK_ERR_UNAVAILABLE; *_free functions accept NULL.
 *
 * Identities are "agent:SUB" / "customer:KEY" (rk_identity). A socket's key
 * lives ttl_ms (use pingInterval + pingTimeout + margin) and is refreshed by
 * each heartbeat. Keyspace "expired" events for sock:/timer: keys are parsed
 * with rk_parse_key and answered with pres_build_expired / pres_timer_build_claim;
 * both scripts act exactly once across nodes.
 */
#ifndef CHATD_PRESENCE_H
#define CHATD_PRESENCE_H
#include <stdbool.h>
#include <stddef.h>

#include "store/keys.h"

struct redisReply;

enum pres_status { PRES_OFFLINE = 0, PRES_ONLINE, PRES_AWAY };
const char *pres_status_str(enum pres_status s); /* "offline" | "online" | "away" */

/* ---- builders ---- */
/* type "agent" | "customer"; max_chats < 0 = not an agent / unknown. */
enum rk_status pres_build_add(rk_argv *a, const char *org, const char *sid, const char *type,
                              const char *id, long long ttl_ms, const char *node, int max_chats);
enum rk_status pres_build_heartbeat(rk_argv *a, const char *org, const char *sid, long long ttl_ms);
enum rk_status pres_build_remove(rk_argv *a, const char *org, const char *sid, const char *type,
                                 const char *id);
enum rk_status pres_build_expired(rk_argv *a, const char *org, const char *sid);
/* cursor "0" to start; repeat with the returned cursor until it is "0". */
enum rk_status pres_build_sweep(rk_argv *a, const char *org, const char *cursor, int count);
/* status "online" | "away" */
enum rk_status pres_build_status(rk_argv *a, const char *org, const char *type, const char *id,
                                 const char *status);

/* ---- decoders ---- */
typedef struct pres_add_result {
    bool became_online; /* first socket of the identity: announce `presence` */
    enum pres_status status;
    long long sockets;
} pres_add_result;
enum rk_status pres_decode_add(const struct redisReply *r, pres_add_result *out);

/* alive = false: the socket was cleaned up already; call presence add again. */
enum rk_status pres_decode_heartbeat(const struct redisReply *r, bool *alive);

typedef struct pres_remove_result {
    bool went_offline; /* last socket: announce `presence` offline */
    long long remaining;
} pres_remove_result;
enum rk_status pres_decode_remove(const struct redisReply *r, pres_remove_result *out);

typedef struct pres_expired_result {
    bool acted;        /* this node claimed the cleanup */
    char *identity;    /* heap, "" when !acted */
    bool went_offline;
    long long remaining;
} pres_expired_result;
enum rk_status pres_decode_expired(const struct redisReply *r, pres_expired_result *out);
void pres_expired_result_free(pres_expired_result *e);

typedef struct pres_sweep_result {
    char *cursor;        /* heap; "0" = done */
    size_t n;
    char **identities;   /* heap array of heap strings: removed sockets' identities */
    bool *went_offline;
} pres_sweep_result;
enum rk_status pres_decode_sweep(const struct redisReply *r, pres_sweep_result *out);
void pres_sweep_result_free(pres_sweep_result *s);

typedef struct pres_status_result {
    bool changed;
    enum pres_status status; /* OFFLINE when the identity has no socket */
} pres_status_result;
enum rk_status pres_decode_status(const struct redisReply *r, pres_status_result *out);

/* Splits "agent:SUB" into its type and id (heap copies). Returns false on a
 * malformed identity. */
bool pres_identity_split(const char *identity, char **type, char **id);

/* ---- inactivity / reply timers (kinds: "warn", "close", "reply") ---- */
typedef struct pres_timer_spec {
    const char *kind;
    long long delay_ms;
} pres_timer_spec;

/* Arms (or re-arms: resets) the given timers of a chat. */
enum rk_status pres_timer_build_arm(rk_argv *a, const char *org, const char *chat_id,
                                    const pres_timer_spec *t, size_t n);
enum rk_status pres_timer_build_stop(rk_argv *a, const char *org, const char *chat_id,
                                     const char *const *kinds, size_t n);
enum rk_status pres_timer_build_claim(rk_argv *a, const char *org, const char *kind,
                                      const char *chat_id);
/* Reconciler: claims up to limit timers of the org overdue by more than grace_ms. */
enum rk_status pres_timer_build_due(rk_argv *a, const char *org, int limit, long long grace_ms);

/* deadlines[i] (ms, Redis clock) for the n timers armed, in order. */
enum rk_status pres_timer_decode_arm(const struct redisReply *r, long long *deadlines, size_t n);
enum rk_status pres_timer_decode_stop(const struct redisReply *r, long long *stopped);

typedef struct pres_timer_claim {
    bool claimed; /* this node fires the timer */
    long long deadline_ms;
} pres_timer_claim;
enum rk_status pres_timer_decode_claim(const struct redisReply *r, pres_timer_claim *out);

typedef struct pres_timer_due_item {
    char *kind;    /* heap */
    char *chat_id; /* heap */
    long long deadline_ms;
} pres_timer_due_item;
typedef struct pres_timer_due {
    size_t n;
    pres_timer_due_item *items;
} pres_timer_due;
enum rk_status pres_timer_decode_due(const struct redisReply *r, pres_timer_due *out);
void pres_timer_due_free(pres_timer_due *d);

#endif
