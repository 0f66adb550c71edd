/* Presence and timer script argv builders and reply decoders (pure; see
 * presence.h and the reply shapes at the top of each lua/ file). */
#include "presence/presence.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"

static void add_ident_key(rk_argv *a, const char *org, const char *type, const char *id)
{
    buf_t k;
    buf_init(&k);
    rk_key(&k, org, "ident:");
    rk_identity(&k, type, id);
    rk_argv_key(a, k.data, k.len);
    buf_free(&k);
}

static void add_timer_key(rk_argv *a, const char *org, const char *kind, const char *chat)
{
    buf_t k;
    buf_init(&k);
    rk_timer(&k, org, kind, chat);
    rk_argv_key(a, k.data, k.len);
    buf_free(&k);
}

static void add_identity(rk_argv *a, const char *type, const char *id)
{
    buf_t k;
    buf_init(&k);
    rk_identity(&k, type, id);
    rk_argv_arg(a, k.data, k.len);
    buf_free(&k);
}

static bool bad(const char *s)
{
    return !s || !*s;
}

static bool bad_type(const char *t)
{
    return !t || (strcmp(t, "agent") != 0 && strcmp(t, "customer") != 0);
}

const char *pres_status_str(enum pres_status s)
{
    switch (s) {
    case PRES_ONLINE:
        return "online";
    case PRES_AWAY:
        return "away";
    case PRES_OFFLINE:
        break;
    }
    return "offline";
}

static bool parse_status(const redisReply *r, enum pres_status *out)
{
    if (rk_reply_is(r, "online"))
        *out = PRES_ONLINE;
    else if (rk_reply_is(r, "away"))
        *out = PRES_AWAY;
    else if (rk_reply_is(r, "offline"))
        *out = PRES_OFFLINE;
    else
        return false;
    return true;
}

enum rk_status pres_build_add(rk_argv *a, const char *org, const char *sid, const char *type,
                              const char *id, long long ttl_ms, const char *node, int max_chats)
{
    rk_argv_reset(a, RK_SCRIPT_PRESENCE_ADD);
    if (bad(org) || bad(sid) || bad_type(type) || bad(id) || ttl_ms <= 0)
        return RK_ERR_ARG;
    rk_argv_key2(a, org, "sock:", sid);
    add_ident_key(a, org, type, id);
    rk_argv_key2(a, org, "status", NULL);
    rk_argv_key2(a, org, "sockident", NULL);
    rk_argv_key2(a, org, "agentmax", NULL);
    rk_argv_args(a, sid);
    add_identity(a, type, id);
    rk_argv_argll(a, ttl_ms);
    rk_argv_args(a, node ? node : "");
    if (max_chats >= 0 && strcmp(type, "agent") == 0)
        rk_argv_argll(a, max_chats);
    else
        rk_argv_args(a, "");
    return rk_argv_status(a);
}

enum rk_status pres_build_heartbeat(rk_argv *a, const char *org, const char *sid, long long ttl_ms)
{
    rk_argv_reset(a, RK_SCRIPT_PRESENCE_HEARTBEAT);
    if (bad(org) || bad(sid) || ttl_ms <= 0)
        return RK_ERR_ARG;
    rk_argv_key2(a, org, "sock:", sid);
    rk_argv_key2(a, org, "sockident", NULL);
    rk_argv_args(a, sid);
    rk_argv_argll(a, ttl_ms);
    return rk_argv_status(a);
}

enum rk_status pres_build_remove(rk_argv *a, const char *org, const char *sid, const char *type,
                                 const char *id)
{
    rk_argv_reset(a, RK_SCRIPT_PRESENCE_REMOVE);
    if (bad(org) || bad(sid) || bad_type(type) || bad(id))
        return RK_ERR_ARG;
    rk_argv_key2(a, org, "sock:", sid);
    add_ident_key(a, org, type, id);
    rk_argv_key2(a, org, "status", NULL);
    rk_argv_key2(a, org, "sockident", NULL);
    rk_argv_args(a, sid);
    add_identity(a, type, id);
    return rk_argv_status(a);
}

enum rk_status pres_build_expired(rk_argv *a, const char *org, const char *sid)
{
    rk_argv_reset(a, RK_SCRIPT_PRESENCE_EXPIRED);
    if (bad(org) || bad(sid))
        return RK_ERR_ARG;
    rk_argv_key2(a, org, "sockident", NULL);
    rk_argv_key2(a, org, "status", NULL);
    rk_argv_key2(a, org, "sock:", sid);
    rk_argv_prefix(a, org);
    rk_argv_args(a, sid);
    return rk_argv_status(a);
}

enum rk_status pres_build_sweep(rk_argv *a, const char *org, const char *cursor, int count)
{
    rk_argv_reset(a, RK_SCRIPT_PRESENCE_SWEEP);
    if (bad(org) || count <= 0)
        return RK_ERR_ARG;
    rk_argv_key2(a, org, "sockident", NULL);
    rk_argv_key2(a, org, "status", NULL);
    rk_argv_prefix(a, org);
    rk_argv_args(a, bad(cursor) ? "0" : cursor);
    rk_argv_argll(a, count);
    return rk_argv_status(a);
}

enum rk_status pres_build_status(rk_argv *a, const char *org, const char *type, const char *id,
                                 const char *status)
{
    rk_argv_reset(a, RK_SCRIPT_PRESENCE_STATUS);
    if (bad(org) || bad_type(type) || bad(id) || !status ||
        (strcmp(status, "online") != 0 && strcmp(status, "away") != 0))
        return RK_ERR_ARG;
    rk_argv_key2(a, org, "status", NULL);
    add_ident_key(a, org, type, id);
    add_identity(a, type, id);
    rk_argv_args(a, status);
    return rk_argv_status(a);
}

enum rk_status pres_decode_add(const redisReply *r, pres_add_result *out)
{
    enum rk_status st = rk_reply_array(r, 3);
    if (st != RK_OK)
        return st;
    long long became, n;
    enum pres_status s;
    if (!rk_reply_ll(r->element[0], &became) || !parse_status(r->element[1], &s) ||
        !rk_reply_ll(r->element[2], &n))
        return RK_ERR_SHAPE;
    out->became_online = became != 0;
    out->status = s;
    out->sockets = n;
    return RK_OK;
}

enum rk_status pres_decode_heartbeat(const redisReply *r, bool *alive)
{
    if (!r)
        return RK_ERR_UNAVAILABLE;
    if (r->type == REDIS_REPLY_ERROR)
        return RK_ERR_REDIS;
    long long v;
    if (!rk_reply_ll(r, &v))
        return RK_ERR_SHAPE;
    *alive = v != 0;
    return RK_OK;
}

enum rk_status pres_decode_remove(const redisReply *r, pres_remove_result *out)
{
    enum rk_status st = rk_reply_array(r, 2);
    if (st != RK_OK)
        return st;
    long long off, n;
    if (!rk_reply_ll(r->element[0], &off) || !rk_reply_ll(r->element[1], &n))
        return RK_ERR_SHAPE;
    out->went_offline = off != 0;
    out->remaining = n;
    return RK_OK;
}

enum rk_status pres_decode_expired(const redisReply *r, pres_expired_result *out)
{
    enum rk_status st = rk_reply_array(r, 4);
    if (st != RK_OK)
        return st;
    long long acted, off, n;
    if (!rk_reply_ll(r->element[0], &acted) || !rk_reply_ll(r->element[2], &off) ||
        !rk_reply_ll(r->element[3], &n))
        return RK_ERR_SHAPE;
    char *ident = rk_reply_strdup(r->element[1]);
    if (!ident)
        return RK_ERR_SHAPE;
    out->acted = acted != 0;
    out->identity = ident;
    out->went_offline = off != 0;
    out->remaining = n;
    return RK_OK;
}

void pres_expired_result_free(pres_expired_result *e)
{
    if (!e)
        return;
    free(e->identity);
    e->identity = NULL;
}

enum rk_status pres_decode_sweep(const redisReply *r, pres_sweep_result *out)
{
    enum rk_status st = rk_reply_array(r, 1);
    if (st != RK_OK)
        return st;
    if ((r->elements - 1) % 2 != 0)
        return RK_ERR_SHAPE;
    pres_sweep_result s = {0};
    s.cursor = rk_reply_strdup(r->element[0]);
    if (!s.cursor)
        return RK_ERR_SHAPE;
    s.n = (r->elements - 1) / 2;
    s.identities = xcalloc(s.n ? s.n : 1, sizeof(char *));
    s.went_offline = xcalloc(s.n ? s.n : 1, sizeof(bool));
    for (size_t i = 0; i < s.n; i++) {
        long long off;
        s.identities[i] = rk_reply_strdup(r->element[1 + 2 * i]);
        if (!s.identities[i] || !rk_reply_ll(r->element[2 + 2 * i], &off)) {
            pres_sweep_result_free(&s);
            return RK_ERR_SHAPE;
        }
        s.went_offline[i] = off != 0;
    }
    *out = s;
    return RK_OK;
}

void pres_sweep_result_free(pres_sweep_result *s)
{
    if (!s)
        return;
    if (s->identities)
        for (size_t i = 0; i < s->n; i++)
            free(s->identities[i]);
    free(s->identities);
    free(s->went_offline);
    free(s->cursor);
    memset(s, 0, sizeof(*s));
}

enum rk_status pres_decode_status(const redisReply *r, pres_status_result *out)
{
    enum rk_status st = rk_reply_array(r, 2);
    if (st != RK_OK)
        return st;
    long long changed;
    enum pres_status s;
    if (!rk_reply_ll(r->element[0], &changed) || !parse_status(r->element[1], &s))
        return RK_ERR_SHAPE;
    out->changed = changed != 0;
    out->status = s;
    return RK_OK;
}

bool pres_identity_split(const char *identity, char **type, char **id)
{
    if (!identity)
        return false;
    const char *c = strchr(identity, ':');
    if (!c || c == identity || !c[1])
        return false;
    size_t tl = (size_t)(c - identity);
    if (!((tl == 5 && memcmp(identity, "agent", 5) == 0) ||
          (tl == 8 && memcmp(identity, "customer", 8) == 0)))
        return false;
    *type = xstrndup(identity, tl);
    *id = xstrdup(c + 1);
    return true;
}

/* ---- timers ---- */

enum rk_status pres_timer_build_arm(rk_argv *a, const char *org, const char *chat_id,
                                    const pres_timer_spec *t, size_t n)
{
    rk_argv_reset(a, RK_SCRIPT_TIMER_ARM);
    if (bad(org) || bad(chat_id) || n == 0 || n > 8)
        return RK_ERR_ARG;
    rk_argv_key2(a, org, "timers", NULL);
    for (size_t i = 0; i < n; i++) {
        if (bad(t[i].kind) || strchr(t[i].kind, ':') || t[i].delay_ms <= 0)
            return RK_ERR_ARG;
        add_timer_key(a, org, t[i].kind, chat_id);
    }
    rk_argv_args(a, chat_id);
    for (size_t i = 0; i < n; i++) {
        rk_argv_args(a, t[i].kind);
        rk_argv_argll(a, t[i].delay_ms);
    }
    return rk_argv_status(a);
}

enum rk_status pres_timer_build_stop(rk_argv *a, const char *org, const char *chat_id,
                                     const char *const *kinds, size_t n)
{
    rk_argv_reset(a, RK_SCRIPT_TIMER_STOP);
    if (bad(org) || bad(chat_id) || n == 0 || n > 8)
        return RK_ERR_ARG;
    rk_argv_key2(a, org, "timers", NULL);
    for (size_t i = 0; i < n; i++) {
        if (bad(kinds[i]) || strchr(kinds[i], ':'))
            return RK_ERR_ARG;
        add_timer_key(a, org, kinds[i], chat_id);
    }
    rk_argv_args(a, chat_id);
    for (size_t i = 0; i < n; i++)
        rk_argv_args(a, kinds[i]);
    return rk_argv_status(a);
}

enum rk_status pres_timer_build_claim(rk_argv *a, const char *org, const char *kind,
                                      const char *chat_id)
{
    rk_argv_reset(a, RK_SCRIPT_TIMER_CLAIM);
    if (bad(org) || bad(kind) || bad(chat_id) || strchr(kind, ':'))
        return RK_ERR_ARG;
    rk_argv_key2(a, org, "timers", NULL);
    add_timer_key(a, org, kind, chat_id);
    rk_argv_args(a, kind);
    rk_argv_args(a, chat_id);
    return rk_argv_status(a);
}

enum rk_status pres_timer_build_due(rk_argv *a, const char *org, int limit, long long grace_ms)
{
    rk_argv_reset(a, RK_SCRIPT_TIMER_DUE);
    if (bad(org) || limit <= 0 || grace_ms < 0)
        return RK_ERR_ARG;
    rk_argv_key2(a, org, "timers", NULL);
    rk_argv_prefix(a, org);
    rk_argv_argll(a, limit);
    rk_argv_argll(a, grace_ms);
    return rk_argv_status(a);
}

enum rk_status pres_timer_decode_arm(const redisReply *r, long long *deadlines, size_t n)
{
    enum rk_status st = rk_reply_array(r, n);
    if (st != RK_OK)
        return st;
    if (r->elements != n)
        return RK_ERR_SHAPE;
    long long tmp[8];
    if (n > ARRAY_LEN(tmp))
        return RK_ERR_SHAPE;
    for (size_t i = 0; i < n; i++)
        if (!rk_reply_ll(r->element[i], &tmp[i]))
            return RK_ERR_SHAPE;
    memcpy(deadlines, tmp, n * sizeof(*tmp));
    return RK_OK;
}

enum rk_status pres_timer_decode_stop(const redisReply *r, long long *stopped)
{
    if (!r)
        return RK_ERR_UNAVAILABLE;
    if (r->type == REDIS_REPLY_ERROR)
        return RK_ERR_REDIS;
    if (!rk_reply_ll(r, stopped))
        return RK_ERR_SHAPE;
    return RK_OK;
}

enum rk_status pres_timer_decode_claim(const redisReply *r, pres_timer_claim *out)
{
    enum rk_status st = rk_reply_array(r, 2);
    if (st != RK_OK)
        return st;
    long long c, d;
    if (!rk_reply_ll(r->element[0], &c) || !rk_reply_ll(r->element[1], &d))
        return RK_ERR_SHAPE;
    out->claimed = c != 0;
    out->deadline_ms = d;
    return RK_OK;
}

enum rk_status pres_timer_decode_due(const redisReply *r, pres_timer_due *out)
{
    enum rk_status st = rk_reply_array(r, 0);
    if (st != RK_OK)
        return st;
    if (r->elements % 3 != 0)
        return RK_ERR_SHAPE;
    pres_timer_due d = {0};
    d.n = r->elements / 3;
    d.items = xcalloc(d.n ? d.n : 1, sizeof(*d.items));
    for (size_t i = 0; i < d.n; i++) {
        pres_timer_due_item *it = &d.items[i];
        it->kind = rk_reply_strdup(r->element[3 * i]);
        it->chat_id = rk_reply_strdup(r->element[3 * i + 1]);
        if (!it->kind || !it->chat_id || !rk_reply_ll(r->element[3 * i + 2], &it->deadline_ms)) {
            pres_timer_due_free(&d);
            return RK_ERR_SHAPE;
        }
    }
    *out = d;
    return RK_OK;
}

void pres_timer_due_free(pres_timer_due *d)
{
    if (!d)
        return;
    if (d->items)
        for (size_t i = 0; i < d->n; i++) {
            free(d->items[i].kind);
            free(d->items[i].chat_id);
        }
    free(d->items);
    d->items = NULL;
    d->n = 0;
}
