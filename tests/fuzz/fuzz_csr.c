/* libFuzzer target for connection state recovery (gateway/csr.c).
 *
 * Even first byte: the rest is "<offset>\n<record>" as a client and Redis
 * would hand them to csr_recover (empty offset = none); it must never crash,
 * leak or accept without a `have` object.
 * Odd first byte: the rest drives a log (byte pairs: chat 0-3, seq step;
 * step 0 seeds the chat instead), whose record is recovered with an offset
 * picked by the last byte. Then: an offset still in the ring, or any offset
 * when the ring never wrapped, must recover; each chat's `have` never exceeds
 * what was sent. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.c"
#include "common/xalloc.c"
#include "gateway/csr.c"

static const char *const chats[4] = {"a", "b", "c", "d"};

static void raw_mode(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t olen = nl ? (size_t)(nl - data) : 0;
    char *offset = olen ? xmalloc(olen + 1) : NULL;
    if (offset) {
        memcpy(offset, data, olen);
        offset[olen] = '\0';
        if (strlen(offset) != olen) { /* a NUL inside: not a C string a client could send */
            free(offset);
            return;
        }
    }
    const uint8_t *rec = nl ? nl + 1 : data;
    size_t rlen = size - (size_t)(rec - data);
    char *copy = xmalloc(rlen ? rlen : 1); /* exact size: ASan sees reads past the end */
    memcpy(copy, rec, rlen);
    csr_recovery r;
    const char *why = NULL;
    int rc = csr_recover(copy, rlen, "me", offset, &r, &why);
    if (rc == 0 ? !cJSON_IsObject(r.have) : (r.have != NULL || !why))
        abort();
    cJSON_Delete(r.have);
    free(copy);
    free(offset);
}

static void log_mode(const uint8_t *data, size_t size)
{
    csr_log l = {0};
    int64_t seq[4] = {0, 0, 0, 0};
    for (size_t i = 0; i + 1 < size; i += 2) {
        int c = data[i] & 3;
        if (data[i + 1] == 0) {
            csr_log_seed(&l, chats[c], seq[c]);
        } else {
            seq[c] += data[i + 1] & 7; /* steps of 0 repeat a seq: tolerated */
            csr_log_note(&l, chats[c], seq[c]);
        }
    }
    cJSON *f = cJSON_CreateObject();
    for (size_t i = 0; i < l.nchats; i++)
        cJSON_AddNumberToObject(f, l.chats[i].id, (double)l.chats[i].last);
    char *rec = csr_record_json(&l, "sid", "me", f);
    /* offset: one of the ring's entries, or none */
    char offset[64];
    const char *off = NULL;
    bool in_ring = false;
    if (l.len && size && data[size - 1] % 5) {
        const struct csr_ent *e = &l.ring[(l.head + data[size - 1] % l.len) % l.cap];
        snprintf(offset, sizeof offset, "%s:%lld", l.chats[e->chat].id, (long long)e->seq);
        off = offset;
        in_ring = true;
    }
    csr_recovery r;
    const char *why = NULL;
    int rc = csr_recover(rec, strlen(rec), "me", off, &r, &why);
    if (rc != 0 && (in_ring || !l.wrapped))
        abort();
    if (rc == 0) {
        for (size_t i = 0; i < l.nchats; i++) {
            const cJSON *h = cJSON_GetObjectItemCaseSensitive(r.have, l.chats[i].id);
            if (!cJSON_IsNumber(h) || h->valuedouble > (double)l.chats[i].last)
                abort();
        }
        cJSON_Delete(r.have);
    }
    free(rec);
    cJSON_Delete(f);
    csr_log_free(&l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 1)
        log_mode(data + 1, size - 1);
    else
        raw_mode(data + 1, size - 1);
    return 0;
}
