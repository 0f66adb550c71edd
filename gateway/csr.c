/* Connection state recovery, the pure part (see csr.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"
#include "gateway/csr.h"

#define RING_FIRST 16

void csr_log_free(csr_log *l)
{
    for (size_t i = 0; i < l->nchats; i++)
        free(l->chats[i].id);
    free(l->chats);
    free(l->ring);
    memset(l, 0, sizeof *l);
}

static long find_chat(const csr_log *l, const char *chat_id)
{
    for (size_t i = 0; i < l->nchats; i++)
        if (!strcmp(l->chats[i].id, chat_id))
            return (long)i;
    return -1;
}

static size_t add_chat(csr_log *l, const char *chat_id, int64_t seq, enum csr_from from)
{
    if (l->nchats == l->capchats) {
        l->capchats = l->capchats ? l->capchats * 2 : 4;
        l->chats = xrealloc(l->chats, l->capchats * sizeof *l->chats);
    }
    l->chats[l->nchats] = (struct csr_chat){xstrdup(chat_id), seq, from};
    return l->nchats++;
}

void csr_log_seed(csr_log *l, const char *chat_id, int64_t seq)
{
    if (find_chat(l, chat_id) < 0)
        add_chat(l, chat_id, seq, CSR_HAVE);
}

void csr_log_join(csr_log *l, const char *chat_id, int64_t seq)
{
    long c = find_chat(l, chat_id);
    if (c < 0)
        add_chat(l, chat_id, seq, CSR_JOIN);
    else if (l->chats[c].from == CSR_JOIN && seq < l->chats[c].last)
        l->chats[c].last = seq;
}

int64_t csr_log_last(const csr_log *l, const char *chat_id)
{
    long i = find_chat(l, chat_id);
    return i < 0 ? -1 : l->chats[i].last;
}

/* Grows the ring (oldest entry moved to index 0) while below CSR_RING_MAX. */
static void ring_grow(csr_log *l)
{
    size_t cap = l->cap ? l->cap * 2 : RING_FIRST;
    if (cap > CSR_RING_MAX)
        cap = CSR_RING_MAX;
    struct csr_ent *r = xmalloc(cap * sizeof *r);
    for (size_t i = 0; i < l->len; i++)
        r[i] = l->ring[(l->head + i) % l->cap];
    free(l->ring);
    l->ring = r;
    l->cap = cap;
    l->head = 0;
}

void csr_log_note(csr_log *l, const char *chat_id, int64_t seq)
{
    long c = find_chat(l, chat_id);
    if (c < 0)
        c = (long)add_chat(l, chat_id, seq, CSR_SENT);
    else if (seq > l->chats[c].last)
        l->chats[c].last = seq;
    l->chats[c].from = CSR_SENT;
    if (l->len == l->cap && l->cap < CSR_RING_MAX)
        ring_grow(l);
    struct csr_ent e = {(uint32_t)c, seq};
    if (l->len < l->cap) {
        l->ring[(l->head + l->len) % l->cap] = e;
        l->len++;
    } else { /* full at CSR_RING_MAX: the oldest entry goes */
        l->ring[l->head] = e;
        l->head = (l->head + 1) % l->cap;
        l->wrapped = true;
    }
}

void csr_offset_json(buf_t *b, const char *chat_id, int64_t seq)
{
    /* the escaped chat id, then ":<seq>" inside the same string (digits need no escaping):
     * no temporary buffer for every message sent */
    buf_json_str(b, chat_id, strlen(chat_id));
    b->len--; /* reopen the string: drop its closing quote */
    buf_printf(b, ":%lld\"", (long long)seq);
}

char *csr_record_json(const csr_log *l, const char *sid, const char *identity,
                      const cJSON *follows)
{
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{\"sid\":");
    buf_json_str(&b, sid, strlen(sid));
    buf_puts(&b, ",\"id\":");
    buf_json_str(&b, identity, strlen(identity));
    buf_puts(&b, ",\"f\":{");
    int n = 0;
    for (const cJSON *e = follows ? follows->child : NULL; e; e = e->next) {
        if (!e->string || !cJSON_IsNumber(e))
            continue;
        if (n++)
            buf_putc(&b, ',');
        buf_json_str(&b, e->string, strlen(e->string));
        buf_printf(&b, ":%lld", (long long)e->valuedouble);
    }
    buf_puts(&b, "},\"t\":[");
    for (size_t i = 0; i < l->len; i++) {
        const struct csr_ent *e = &l->ring[(l->head + i) % l->cap];
        const char *id = l->chats[e->chat].id;
        if (i)
            buf_putc(&b, ',');
        buf_putc(&b, '[');
        buf_json_str(&b, id, strlen(id));
        buf_printf(&b, ",%lld]", (long long)e->seq);
    }
    buf_printf(&b, "],\"w\":%s}", l->wrapped ? "true" : "false");
    return buf_steal(&b, NULL);
}

/* "<chatId>:<seq>" -> chat id (in out, NUL-terminated) and seq. */
static int parse_offset(const char *offset, char *chat, size_t chatlen, int64_t *seq)
{
    const char *colon = strrchr(offset, ':');
    if (!colon || colon == offset || (size_t)(colon - offset) >= chatlen || !colon[1] ||
        strlen(colon + 1) > 15)
        return -1;
    int64_t v = 0;
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    memcpy(chat, offset, (size_t)(colon - offset));
    chat[colon - offset] = '\0';
    *seq = v;
    return 0;
}

static bool is_seq(const cJSON *v)
{
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= 9007199254740991.0 &&
           floor(v->valuedouble) == v->valuedouble;
}

static int fail(cJSON *root, cJSON *have, const char **why, const char *msg)
{
    cJSON_Delete(root);
    cJSON_Delete(have);
    *why = msg;
    return -1;
}

int csr_recover(const char *record, size_t len, const char *identity, const char *offset,
                csr_recovery *out, const char **why)
{
    memset(out, 0, sizeof *out);
    cJSON *root = cJSON_ParseWithLength(record, len);
    const cJSON *sid = cJSON_GetObjectItemCaseSensitive(root, "sid");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "f");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "t");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(root, "w");
    if (!cJSON_IsString(sid) || strlen(sid->valuestring) >= sizeof out->sid ||
        !cJSON_IsString(id) || !cJSON_IsObject(f) || !cJSON_IsArray(t) || !cJSON_IsBool(w))
        return fail(root, NULL, why, "malformed record");
    if (strcmp(id->valuestring, identity) != 0)
        return fail(root, NULL, why, "another identity");

    cJSON *have = cJSON_CreateObject();
    for (const cJSON *e = f->child; e; e = e->next)
        if (e->string && is_seq(e))
            cJSON_AddNumberToObject(have, e->string, e->valuedouble);

    /* where the offset sits in the ring; -1: before all of it */
    int n = cJSON_GetArraySize(t), at = -1;
    if (offset) {
        char chat[256];
        int64_t seq;
        if (parse_offset(offset, chat, sizeof chat, &seq) != 0)
            return fail(root, have, why, "malformed offset");
        for (int i = n - 1; i >= 0 && at < 0; i--) {
            const cJSON *e = cJSON_GetArrayItem(t, i);
            const cJSON *c = cJSON_GetArrayItem(e, 0), *s = cJSON_GetArrayItem(e, 1);
            if (cJSON_IsString(c) && is_seq(s) && (int64_t)s->valuedouble == seq &&
                !strcmp(c->valuestring, chat))
                at = i;
        }
        /* not in a complete ring: it came from an earlier session of this
         * pid, so nothing of this one arrived */
        if (at < 0 && cJSON_IsTrue(w))
            return fail(root, have, why, "offset older than the log");
    } else if (cJSON_IsTrue(w)) {
        return fail(root, have, why, "no offset and the log wrapped");
    }
    /* everything sent after the offset is missing */
    for (int i = at + 1; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(t, i);
        const cJSON *c = cJSON_GetArrayItem(e, 0), *s = cJSON_GetArrayItem(e, 1);
        if (!cJSON_IsString(c) || !is_seq(s))
            return fail(root, have, why, "malformed record");
        cJSON *h = cJSON_GetObjectItemCaseSensitive(have, c->valuestring);
        if (h && s->valuedouble - 1 < h->valuedouble)
            cJSON_SetNumberValue(h, s->valuedouble - 1);
    }
    snprintf(out->sid, sizeof out->sid, "%s", sid->valuestring);
    out->have = have;
    cJSON_Delete(root);
    return 0;
}

bool csr_reason_recoverable(const char *reason)
{
    static const char *const ok[] = {"transport close", "transport error", "ping timeout",
                                     "server shutting down", "forced close", "forced server close",
                                     "slow consumer"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (reason && !strcmp(reason, ok[i]))
            return true;
    return false;
}
