/* Growable byte buffer. `data` always has `len` valid bytes and is kept
 * NUL-terminated (one spare byte) so text protocols can use string functions.
 * Owned by whoever embeds it; buf_free releases the storage. */
#ifndef CHATD_BUF_H
#define CHATD_BUF_H
#include <stdarg.h>
#include <stddef.h>

typedef struct buf {
    char *data;
    size_t len;
    size_t cap;
} buf_t;

void buf_init(buf_t *b);
void buf_free(buf_t *b);
void buf_reset(buf_t *b);             /* len = 0, keeps storage */
void buf_reserve(buf_t *b, size_t extra);
void buf_append(buf_t *b, const void *p, size_t n);
void buf_putc(buf_t *b, char c);
void buf_puts(buf_t *b, const char *s);
void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal (quotes and escapes included). */
void buf_json_str(buf_t *b, const char *s, size_t n);
/* Takes the storage out of the buffer (caller frees); the buffer is emptied. */
char *buf_steal(buf_t *b, size_t *len);

#endif
