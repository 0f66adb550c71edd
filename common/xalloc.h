/* Allocation wrappers: chatd aborts on OOM in its own allocations (a server that
 * cannot allocate a few bytes cannot answer anyone sensibly). Third-party
 * constructors (cJSON, hiredis, libpq, curl, libjwt) are always checked. */
#ifndef CHATD_XALLOC_H
#define CHATD_XALLOC_H
#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t sz);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#define GW_NODISCARD __attribute__((warn_unused_result))
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
