/* Queue script argv builders and reply decoders (pure; see queue.h).
 * The reply shapes decoded here are documented at the top of each lua/ file;
 * they are our own scripts' replies but are still checked element by element
 * (a wrong shape is RK_ERR_SHAPE, never a crash). */
#include "queue/queue.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"

static bool bad(const char *s)
{
    return !s || !*s;
}

/* KEYS of each script, in the order its Lua code reads them (see lua/). */
static const char *const ENQUEUE_KEYS[] = {"queue", "qentry:", "qsigs", "qseq", "status",
    "agentload", "agentmax", "aht", NULL};
static const char *const PICK_KEYS[] = {"queue", "qsigs", "agentload", "agentmax", NULL};
static const char *const DEQUEUE_KEYS[] = {"queue", "qentry:", "qsigs", NULL};
static const char *const TRANSFER_KEYS[] = {"queue", "qentry:", "qsigs", "qseq", "status",
    "agentload", "agentmax", "aht", "assign:", NULL};
static const char *const POSITION_KEYS[] = {"queue", "qentry:", "status", "agentload", "agentmax",
    "aht", NULL};
static const char *const SNAPSHOT_KEYS[] = {"queue", "status", "agentload", "agentmax", "aht",
    NULL};
static const char *const RELEASE_KEYS[] = {"queue", "qentry:", "qsigs", "agentload", "assign:",
    "aht", "ahtwin", "timers", NULL};
static const char *const RESTORE_KEYS[] = {"assign:", "agentload", "agentmax", NULL};
static const char *const UNTRANSFER_KEYS[] = {"assign:", "agentload", NULL};

enum rk_status q_build_enqueue(rk_argv *a, const char *org, const char *chat_id, int priority,
                               const char *skills_csv, long long enqueued_at_ms,
                               const char *preview, int default_aht_s)
{
    rk_argv_reset(a, RK_SCRIPT_QUEUE_ENQUEUE);
    if (bad(org) || bad(chat_id) || priority < 0 || priority > 9)
        return RK_ERR_ARG;
    rk_argv_keys(a, org, chat_id, ENQUEUE_KEYS);
    rk_argv_prefix(a, org);
    rk_argv_args(a, chat_id);
    rk_argv_argll(a, priority);
    rk_argv_args(a, skills_csv);
    rk_argv_argll(a, enqueued_at_ms > 0 ? enqueued_at_ms : 0);
    rk_argv_args(a, preview);
    rk_argv_argll(a, default_aht_s);
    return rk_argv_status(a);
}

enum rk_status q_build_pick(rk_argv *a, const char *org, const char *agent_id, int max_chats,
                            const char *skills_csv)
{
    rk_argv_reset(a, RK_SCRIPT_QUEUE_PICK);
    if (bad(org) || bad(agent_id) || max_chats < 0)
        return RK_ERR_ARG;
    rk_argv_keys(a, org, NULL, PICK_KEYS);
    rk_argv_prefix(a, org);
    rk_argv_args(a, agent_id);
    rk_argv_argll(a, max_chats);
    rk_argv_args(a, skills_csv);
    return rk_argv_status(a);
}

enum rk_status q_build_dequeue(rk_argv *a, const char *org, const char *chat_id)
{
    rk_argv_reset(a, RK_SCRIPT_QUEUE_DEQUEUE);
    if (bad(org) || bad(chat_id))
        return RK_ERR_ARG;
    rk_argv_keys(a, org, chat_id, DEQUEUE_KEYS);
    rk_argv_prefix(a, org);
    rk_argv_args(a, chat_id);
    return rk_argv_status(a);
}

static enum rk_status build_transfer(rk_argv *a, const char *org, const char *chat_id,
                                     const char *mode, const char *x, int fallback_priority,
                                     long long fallback_enq, const char *preview,
                                     int default_aht_s)
{
    rk_argv_reset(a, RK_SCRIPT_QUEUE_TRANSFER);
    if (bad(org) || bad(chat_id) || fallback_priority < 0 || fallback_priority > 9)
        return RK_ERR_ARG;
    rk_argv_keys(a, org, chat_id, TRANSFER_KEYS);
    rk_argv_prefix(a, org);
    rk_argv_args(a, chat_id);
    rk_argv_args(a, mode);
    rk_argv_args(a, x);
    rk_argv_argll(a, fallback_priority);
    rk_argv_argll(a, fallback_enq > 0 ? fallback_enq : 0);
    rk_argv_args(a, preview);
    rk_argv_argll(a, default_aht_s);
    return rk_argv_status(a);
}

enum rk_status q_build_transfer_skills(rk_argv *a, const char *org, const char *chat_id,
                                       const char *skills_csv, int fallback_priority,
                                       long long fallback_enqueued_at_ms, const char *preview,
                                       int default_aht_s)
{
    return build_transfer(a, org, chat_id, "skills", skills_csv, fallback_priority,
                          fallback_enqueued_at_ms, preview, default_aht_s);
}

enum rk_status q_build_transfer_agent(rk_argv *a, const char *org, const char *chat_id,
                                      const char *target_agent, int fallback_priority,
                                      long long fallback_enqueued_at_ms, int default_aht_s)
{
    if (bad(target_agent)) {
        rk_argv_reset(a, RK_SCRIPT_QUEUE_TRANSFER);
        return RK_ERR_ARG;
    }
    return build_transfer(a, org, chat_id, "agent", target_agent, fallback_priority,
                          fallback_enqueued_at_ms, "", default_aht_s);
}

enum rk_status q_build_requeue_front(rk_argv *a, const char *org, const char *chat_id,
                                     int fallback_priority, long long fallback_enqueued_at_ms,
                                     const char *skills_csv, int default_aht_s)
{
    return build_transfer(a, org, chat_id, "front", skills_csv, fallback_priority,
                          fallback_enqueued_at_ms, "", default_aht_s);
}

enum rk_status q_build_requeue_restore(rk_argv *a, const char *org, const char *chat_id,
                                       int fallback_priority, long long fallback_enqueued_at_ms,
                                       const char *skills_csv, int default_aht_s)
{
    /* any mode other than skills/front/agent takes the generic path of queue_transfer.lua:
     * skills, priority, enqueue time and member kept, the agent's load -1 */
    return build_transfer(a, org, chat_id, "restore", skills_csv, fallback_priority,
                          fallback_enqueued_at_ms, "", default_aht_s);
}

enum rk_status q_build_position(rk_argv *a, const char *org, const char *chat_id,
                                int default_aht_s)
{
    rk_argv_reset(a, RK_SCRIPT_QUEUE_POSITION);
    if (bad(org) || bad(chat_id))
        return RK_ERR_ARG;
    rk_argv_keys(a, org, chat_id, POSITION_KEYS);
    rk_argv_prefix(a, org);
    rk_argv_args(a, chat_id);
    rk_argv_argll(a, default_aht_s);
    return rk_argv_status(a);
}

enum rk_status q_build_snapshot(rk_argv *a, const char *org, int default_aht_s, long long offset,
                                long long limit)
{
    rk_argv_reset(a, RK_SCRIPT_QUEUE_SNAPSHOT);
    if (bad(org) || offset < 0 || limit < 0)
        return RK_ERR_ARG;
    rk_argv_keys(a, org, NULL, SNAPSHOT_KEYS);
    rk_argv_argll(a, default_aht_s);
    rk_argv_argll(a, offset);
    rk_argv_argll(a, limit);
    return rk_argv_status(a);
}

enum rk_status q_build_release(rk_argv *a, const char *org, const char *chat_id, bool close,
                               int default_aht_s, const char *const *timer_kinds, int nkinds)
{
    rk_argv_reset(a, RK_SCRIPT_CHAT_RELEASE);
    if (bad(org) || bad(chat_id) || nkinds < 0 || nkinds > 8)
        return RK_ERR_ARG;
    rk_argv_keys(a, org, chat_id, RELEASE_KEYS);
    for (int i = 0; i < nkinds; i++) {
        if (bad(timer_kinds[i]))
            return RK_ERR_ARG;
        buf_t k;
        buf_init(&k);
        rk_timer(&k, org, timer_kinds[i], chat_id);
        rk_argv_key(a, k.data, k.len);
        buf_free(&k);
    }
    rk_argv_prefix(a, org);
    rk_argv_args(a, chat_id);
    rk_argv_args(a, close ? "close" : "release");
    rk_argv_argll(a, default_aht_s);
    for (int i = 0; i < nkinds; i++)
        rk_argv_args(a, timer_kinds[i]);
    return rk_argv_status(a);
}

enum rk_status q_build_restore(rk_argv *a, const char *org, const char *chat_id,
                               const char *agent_id, long long assigned_at_ms, int priority,
                               long long enqueued_at_ms, const char *skills_csv, int max_chats)
{
    rk_argv_reset(a, RK_SCRIPT_QUEUE_RESTORE);
    if (bad(org) || bad(chat_id) || bad(agent_id) || priority < 0 || priority > 9)
        return RK_ERR_ARG;
    rk_argv_keys(a, org, chat_id, RESTORE_KEYS);
    rk_argv_args(a, chat_id);
    rk_argv_args(a, agent_id);
    rk_argv_argll(a, assigned_at_ms > 0 ? assigned_at_ms : 0);
    rk_argv_argll(a, priority);
    rk_argv_argll(a, enqueued_at_ms > 0 ? enqueued_at_ms : 0);
    rk_argv_args(a, skills_csv);
    if (max_chats >= 0)
        rk_argv_argll(a, max_chats);
    else
        rk_argv_args(a, "");
    return rk_argv_status(a);
}

/* ---- decoders ---- */

/* Reads n integers from elements [from, from+n) into out[]. */
static bool read_lls(const redisReply *r, size_t from, size_t n, long long *out)
{
    for (size_t i = 0; i < n; i++)
        if (!rk_reply_ll(r->element[from + i], &out[i]))
            return false;
    return true;
}

static enum rk_status check(const redisReply *r, size_t min)
{
    return rk_reply_array(r, min);
}

enum rk_status q_decode_enqueue(const redisReply *r, q_enqueue_result *out)
{
    enum rk_status st = check(r, 8);
    if (st != RK_OK)
        return st;
    long long v[8];
    if (!read_lls(r, 0, 8, v))
        return RK_ERR_SHAPE;
    out->created = v[0] != 0;
    out->eta = (q_eta){.position = v[1], .eta_s = v[2], .available = v[3],
                       .avg_handle_s = v[4], .queue_length = v[5]};
    out->priority = (int)v[6];
    out->enqueued_at_ms = v[7];
    return RK_OK;
}

enum rk_status q_decode_pick(const redisReply *r, q_pick_result *out)
{
    enum rk_status st = check(r, 3);
    if (st != RK_OK)
        return st;
    q_pick_result p = {0};
    if (rk_reply_is(r->element[0], "full") || rk_reply_is(r->element[0], "empty")) {
        p.kind = rk_reply_is(r->element[0], "full") ? Q_PICK_FULL : Q_PICK_EMPTY;
        if (!rk_reply_ll(r->element[1], &p.load) || !rk_reply_ll(r->element[2], &p.max_chats))
            return RK_ERR_SHAPE;
        *out = p;
        return RK_OK;
    }
    if (!rk_reply_is(r->element[0], "ok") || r->elements < 10)
        return RK_ERR_SHAPE;
    long long prio;
    if (!rk_reply_ll(r->element[2], &prio) || !rk_reply_ll(r->element[3], &p.enqueued_at_ms) ||
        !rk_reply_ll(r->element[6], &p.load) || !rk_reply_ll(r->element[7], &p.max_chats) ||
        !rk_reply_ll(r->element[8], &p.queue_length) ||
        !rk_reply_ll(r->element[9], &p.assigned_at_ms))
        return RK_ERR_SHAPE;
    p.priority = (int)prio;
    p.chat_id = rk_reply_strdup(r->element[1]);
    p.skills = rk_reply_strdup(r->element[4]);
    p.preview = rk_reply_strdup(r->element[5]);
    if (!p.chat_id || !p.skills || !p.preview) {
        q_pick_result_free(&p);
        return RK_ERR_SHAPE;
    }
    p.kind = Q_PICK_OK;
    *out = p;
    return RK_OK;
}

void q_pick_result_free(q_pick_result *p)
{
    if (!p)
        return;
    free(p->chat_id);
    free(p->skills);
    free(p->preview);
    p->chat_id = p->skills = p->preview = NULL;
}

enum rk_status q_decode_dequeue(const redisReply *r, q_dequeue_result *out)
{
    enum rk_status st = check(r, 2);
    if (st != RK_OK)
        return st;
    long long v[2];
    if (!read_lls(r, 0, 2, v))
        return RK_ERR_SHAPE;
    out->removed = v[0] != 0;
    out->queue_length = v[1];
    return RK_OK;
}

const char *q_refusal_str(enum q_refusal r)
{
    switch (r) {
    case Q_REFUSED_NONE:
        return "none";
    case Q_REFUSED_OFFLINE:
        return "offline";
    case Q_REFUSED_AWAY:
        return "away";
    case Q_REFUSED_FULL:
        return "full";
    case Q_REFUSED_SAME:
        return "same";
    }
    return "unknown";
}

enum rk_status q_decode_transfer(const redisReply *r, q_transfer_result *out)
{
    enum rk_status st = check(r, 2);
    if (st != RK_OK)
        return st;
    q_transfer_result t = {0};
    const redisReply *tag = r->element[0];
    if (rk_reply_is(tag, "refused")) {
        static const struct {
            const char *s;
            enum q_refusal v;
        } map[] = {{"offline", Q_REFUSED_OFFLINE},
                   {"away", Q_REFUSED_AWAY},
                   {"full", Q_REFUSED_FULL},
                   {"same", Q_REFUSED_SAME}};
        t.kind = Q_TRANSFER_REFUSED;
        for (size_t i = 0; i < ARRAY_LEN(map); i++)
            if (rk_reply_is(r->element[1], map[i].s))
                t.refusal = map[i].v;
        if (t.refusal == Q_REFUSED_NONE)
            return RK_ERR_SHAPE;
        *out = t;
        return RK_OK;
    }
    if (rk_reply_is(tag, "assigned")) {
        if (r->elements < 3)
            return RK_ERR_SHAPE;
        t.kind = Q_TRANSFER_ASSIGNED;
        t.target = rk_reply_strdup(r->element[1]);
        t.old_agent = rk_reply_strdup(r->element[2]);
        if (!t.target || !t.old_agent) {
            q_transfer_result_free(&t);
            return RK_ERR_SHAPE;
        }
        *out = t;
        return RK_OK;
    }
    if (!rk_reply_is(tag, "queued") || r->elements < 9)
        return RK_ERR_SHAPE;
    long long v[7];
    if (!read_lls(r, 1, 7, v))
        return RK_ERR_SHAPE;
    t.kind = Q_TRANSFER_QUEUED;
    t.eta = (q_eta){.position = v[0], .eta_s = v[1], .available = v[2], .avg_handle_s = v[3],
                    .queue_length = v[4]};
    t.priority = (int)v[5];
    t.enqueued_at_ms = v[6];
    t.old_agent = rk_reply_strdup(r->element[8]);
    if (!t.old_agent)
        return RK_ERR_SHAPE;
    *out = t;
    return RK_OK;
}

void q_transfer_result_free(q_transfer_result *t)
{
    if (!t)
        return;
    free(t->old_agent);
    free(t->target);
    t->old_agent = t->target = NULL;
}

enum rk_status q_decode_position(const redisReply *r, q_eta *out)
{
    enum rk_status st = check(r, 5);
    if (st != RK_OK)
        return st;
    long long v[5];
    if (!read_lls(r, 0, 5, v))
        return RK_ERR_SHAPE;
    *out = (q_eta){.position = v[0], .eta_s = v[1], .available = v[2], .avg_handle_s = v[3],
                   .queue_length = v[4]};
    return RK_OK;
}

enum rk_status q_decode_snapshot(const redisReply *r, q_snapshot *out)
{
    enum rk_status st = check(r, 3);
    if (st != RK_OK)
        return st;
    q_snapshot s = {0};
    long long v[3];
    if (!read_lls(r, 0, 3, v))
        return RK_ERR_SHAPE;
    s.available = v[0];
    s.avg_handle_s = v[1];
    s.queue_length = v[2];
    s.n = r->elements - 3;
    s.chat_ids = xcalloc(s.n ? s.n : 1, sizeof(char *));
    for (size_t i = 0; i < s.n; i++) {
        s.chat_ids[i] = rk_reply_strdup(r->element[3 + i]);
        if (!s.chat_ids[i]) {
            q_snapshot_free(&s);
            return RK_ERR_SHAPE;
        }
    }
    *out = s;
    return RK_OK;
}

void q_snapshot_free(q_snapshot *s)
{
    if (!s)
        return;
    if (s->chat_ids)
        for (size_t i = 0; i < s->n; i++)
            free(s->chat_ids[i]);
    free(s->chat_ids);
    s->chat_ids = NULL;
    s->n = 0;
}

long long q_eta_seconds(long long position, long long available, long long avg_handle_s)
{
    if (position <= 0)
        return 0;
    if (available < 1)
        available = 1;
    return ((position + available - 1) / available) * avg_handle_s;
}

enum rk_status q_decode_restore(const redisReply *r, q_restore_result *out)
{
    enum rk_status st = check(r, 2);
    if (st != RK_OK)
        return st;
    long long v[2];
    if (!read_lls(r, 0, 2, v))
        return RK_ERR_SHAPE;
    out->restored = v[0] != 0;
    out->agent_load = v[1];
    return RK_OK;
}

enum rk_status q_decode_release(const redisReply *r, q_release_result *out)
{
    enum rk_status st = check(r, 4);
    if (st != RK_OK)
        return st;
    q_release_result x = {0};
    long long was;
    if (!rk_reply_ll(r->element[0], &was) || !rk_reply_ll(r->element[2], &x.handled_ms) ||
        !rk_reply_ll(r->element[3], &x.avg_handle_s))
        return RK_ERR_SHAPE;
    x.agent = rk_reply_strdup(r->element[1]);
    if (!x.agent)
        return RK_ERR_SHAPE;
    x.was_queued = was != 0;
    *out = x;
    return RK_OK;
}

void q_release_result_free(q_release_result *r)
{
    if (!r)
        return;
    free(r->agent);
    r->agent = NULL;
}

enum rk_status q_build_untransfer(rk_argv *a, const char *org, const char *chat_id,
                                 const char *from_agent, const char *target)
{
    rk_argv_reset(a, RK_SCRIPT_QUEUE_UNTRANSFER);
    if (bad(org) || bad(chat_id) || bad(from_agent) || bad(target))
        return RK_ERR_ARG;
    rk_argv_keys(a, org, chat_id, UNTRANSFER_KEYS);
    rk_argv_args(a, from_agent);
    rk_argv_args(a, target);
    return rk_argv_status(a);
}
