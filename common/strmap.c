#include "common/strmap.h"

#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"

static unsigned hash_key(const char *k, size_t n)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 16777619u;
    return h;
}

void strmap_init(strmap *m)
{
    m->nbuckets = 16;
    m->buckets = xcalloc(m->nbuckets, sizeof *m->buckets);
    m->count = 0;
}

void strmap_free(strmap *m)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        strmap_entry *e = m->buckets[i];
        while (e) {
            strmap_entry *n = e->next;
            free(e);
            e = n;
        }
    }
    free(m->buckets);
    m->buckets = NULL;
    m->nbuckets = m->count = 0;
}

static strmap_entry **find(const strmap *m, const char *key, size_t klen, unsigned h)
{
    strmap_entry **pp = &m->buckets[h & (m->nbuckets - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->klen == klen && !memcmp((*pp)->key, key, klen)))
        pp = &(*pp)->next;
    return pp;
}

void *strmap_get(const strmap *m, const char *key, size_t klen)
{
    strmap_entry *e = *find(m, key, klen, hash_key(key, klen));
    return e ? e->value : NULL;
}

static void grow(strmap *m)
{
    size_t nb = m->nbuckets * 2;
    strmap_entry **b = xcalloc(nb, sizeof *b);
    for (size_t i = 0; i < m->nbuckets; i++) {
        strmap_entry *e = m->buckets[i];
        while (e) {
            strmap_entry *n = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
            e = n;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = nb;
}

void *strmap_put(strmap *m, const char *key, size_t klen, void *value)
{
    unsigned h = hash_key(key, klen);
    strmap_entry **pp = find(m, key, klen, h);
    if (*pp) {
        void *old = (*pp)->value;
        (*pp)->value = value;
        return old;
    }
    strmap_entry *e = xmalloc(sizeof *e + klen + 1);
    e->next = NULL;
    e->value = value;
    e->klen = klen;
    e->hash = h;
    memcpy(e->key, key, klen);
    e->key[klen] = '\0';
    *pp = e;
    if (++m->count > m->nbuckets)
        grow(m);
    return NULL;
}

void *strmap_del(strmap *m, const char *key, size_t klen)
{
    strmap_entry **pp = find(m, key, klen, hash_key(key, klen));
    strmap_entry *e = *pp;
    if (!e)
        return NULL;
    void *v = e->value;
    *pp = e->next;
    free(e);
    m->count--;
    return v;
}

strmap_entry *strmap_first(const strmap *m, size_t *i)
{
    for (*i = 0; *i < m->nbuckets; (*i)++)
        if (m->buckets[*i])
            return m->buckets[*i];
    return NULL;
}

strmap_entry *strmap_next(const strmap *m, strmap_entry *e, size_t *i)
{
    if (e->next)
        return e->next;
    for ((*i)++; *i < m->nbuckets; (*i)++)
        if (m->buckets[*i])
            return m->buckets[*i];
    return NULL;
}
