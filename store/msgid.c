/* UUID version 7 message ids (see msgid.h). */
#include "store/msgid.h"

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void msgid_init(msgid_gen *g, uint64_t seed)
{
    g->last_ms = 0;
    g->counter = 0;
    g->rng = seed;
}

static char *hex(char *p, uint64_t v, int digits)
{
    static const char h[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        p[i] = h[v & 15];
    return p + digits;
}

void msgid_next(msgid_gen *g, uint64_t now_ms, char out[MSGID_LEN + 1])
{
    /* A clock that steps back, or more than 4,096 ids in one millisecond, borrows from the
     * next millisecond: order within the process is kept either way. */
    if (now_ms > g->last_ms) {
        g->last_ms = now_ms;
        g->counter = 0;
    } else if (++g->counter > 0xfff) {
        g->last_ms++;
        g->counter = 0;
    }
    uint64_t ms = g->last_ms & 0xffffffffffffULL, r = splitmix64(&g->rng);
    char *p = out;
    p = hex(p, ms >> 16, 8);
    *p++ = '-';
    p = hex(p, ms & 0xffff, 4);
    *p++ = '-';
    p = hex(p, 0x7000u | g->counter, 4);
    *p++ = '-';
    p = hex(p, 0x8000u | ((r >> 48) & 0x3fff), 4); /* variant 10 */
    *p++ = '-';
    p = hex(p, r & 0xffffffffffffULL, 12);
    *p = '\0';
}
