/* Message pages of a chat (history over the socket and over REST share them). */
#ifndef CHATD_STORE_HISTORY_H
#define CHATD_STORE_HISTORY_H
#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "common/buf.h"

/* SQL of one page: $1 chat, $2 org, $3 customer key (or NULL for agents), $4 the
 * cursor seq, $5 limit + 1. Rows: the chat row joined with up to limit + 1
 * messages, so an empty page of an existing chat still has one row (message
 * columns NULL) and a chat the caller may not see has none. */
const char *history_sql(bool after);

/* Renders `"messages":[...],"hasMore":bool` (SPEC 12.5: ascending seq; after:
 * the first `limit` after the cursor; before: the `limit` right before it).
 * Returns false when the result has no row (not found). */
bool history_render(const PGresult *res, int64_t limit, bool after, buf_t *out);

#endif
