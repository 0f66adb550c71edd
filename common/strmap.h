/* String-keyed hash map (chained, power-of-two buckets, grows at load 1).
 * The map copies keys; values are borrowed pointers the caller owns. */
#ifndef CHATD_STRMAP_H
#define CHATD_STRMAP_H
#include <stddef.h>

typedef struct strmap_entry {
    struct strmap_entry *next;
    void *value;
    size_t klen;
    unsigned hash;
    char key[];
} strmap_entry;

typedef struct strmap {
    strmap_entry **buckets;
    size_t nbuckets;
    size_t count;
} strmap;

void strmap_init(strmap *m);
void strmap_free(strmap *m); /* frees entries, not values */
void *strmap_get(const strmap *m, const char *key, size_t klen);
/* Inserts or replaces; returns the previous value or NULL. */
void *strmap_put(strmap *m, const char *key, size_t klen, void *value);
/* Removes; returns the removed value or NULL. */
void *strmap_del(strmap *m, const char *key, size_t klen);

/* Iteration: for (strmap_entry *e = strmap_first(m, &i); e; e = strmap_next(m, e, &i)).
 * Do not modify the map while iterating. */
strmap_entry *strmap_first(const strmap *m, size_t *i);
strmap_entry *strmap_next(const strmap *m, strmap_entry *e, size_t *i);

#endif
