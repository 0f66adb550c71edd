/* Schema migrations: `chatd migrate` applies sql/NNN_name.sql in name order.
 * Blocking libpq: only for the migrate subcommand and tests, never on the event loop. */
#ifndef CHATD_STORE_MIGRATE_H
#define CHATD_STORE_MIGRATE_H
#include <stddef.h>

/* Applies every `*.sql` file of sql_dir (sorted by name) not yet recorded in
 * schema_migrations, each in its own transaction together with its schema_migrations row.
 * A session advisory lock serialises concurrent runs (two nodes starting at once), so the
 * function is idempotent and safe to race. Returns the number of files applied (>= 0), or -1
 * with a message in err (always NUL-terminated when errlen > 0). */
int store_migrate(const char *conninfo, const char *sql_dir, char *err, size_t errlen);

#endif
