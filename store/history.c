#include "store/history.h"

#include "store/messages.h"

#define HISTORY_SQL(cmp, dir)                                                                 \
    "SELECT c.id AS chat_ok, m.* FROM chats c LEFT JOIN LATERAL ("                            \
    " SELECT " PG_MESSAGE_COLUMNS " FROM messages WHERE chat_id = c.id AND seq " cmp           \
    " $4::bigint ORDER BY seq " dir " LIMIT $5::int) m ON true"                                \
    " WHERE c.id = $1 AND c.org_id = $2 AND ($3::text IS NULL OR c.customer_key = $3)"        \
    " ORDER BY m.seq"

const char *history_sql(bool after)
{
    return after ? HISTORY_SQL(">", "ASC") : HISTORY_SQL("<", "DESC");
}

bool history_render(const PGresult *res, int64_t limit, bool after, buf_t *out)
{
    int n = PQntuples(res);
    if (n == 0)
        return false;
    if (n == 1 && PQgetisnull(res, 0, PQfnumber(res, "id")))
        n = 0; /* the chat exists, no message in range */
    bool more = n > limit;
    /* one extra row was asked for: after drops the newest, before the oldest */
    int first = (!after && more) ? 1 : 0, last = (after && more) ? n - 1 : n;
    buf_puts(out, "\"messages\":[");
    for (int r = first; r < last; r++) {
        pg_message m;
        if (pg_message_from_row(res, r, &m) != 0)
            continue;
        if (r > first)
            buf_putc(out, ',');
        pg_message_to_json(&m, out);
    }
    buf_printf(out, "],\"hasMore\":%s", more ? "true" : "false");
    return true;
}
