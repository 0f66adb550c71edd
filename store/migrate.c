/* Schema migrations (see migrate.h). Blocking libpq by design: runs before the loop starts. */
#include "store/migrate.h"

#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/xalloc.h"

/* Arbitrary but fixed key for pg_advisory_lock: "chatdmig". */
#define MIGRATE_LOCK_KEY "7163640068759906151"

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    /* Drop the trailing newline libpq messages carry. */
    size_t n = strlen(err);
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
        err[--n] = '\0';
}

/* Runs one command; returns 0 or -1 with err filled. */
static int exec_ok(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        set_err(err, errlen, "%s", res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        rc = -1;
    }
    PQclear(res);
    return rc;
}

static int is_migration_name(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return d->d_name[0] != '.' && n > 4 && strcmp(d->d_name + n - 4, ".sql") == 0;
}

/* Reads a whole file; caller frees. NULL on error (errno set). */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 8192, len = 0;
    char *data = xmalloc(cap);
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap *= 2;
            data = xrealloc(data, cap);
        }
        size_t n = fread(data + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(data);
        errno = EIO;
        return NULL;
    }
    data[len] = '\0';
    return data;
}

/* 1 if version is recorded, 0 if not, -1 on error. */
static int is_applied(PGconn *conn, const char *version, char *err, size_t errlen)
{
    const char *params[1] = {version};
    PGresult *res = PQexecParams(conn, "SELECT 1 FROM schema_migrations WHERE version = $1", 1,
                                 NULL, params, NULL, NULL, 0);
    int rc;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        set_err(err, errlen, "%s", PQresultErrorMessage(res));
        rc = -1;
    } else {
        rc = PQntuples(res) > 0;
    }
    PQclear(res);
    return rc;
}

static int apply_one(PGconn *conn, const char *dir, const char *file, char *err, size_t errlen)
{
    char path[4096];
    char version[256];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    snprintf(version, sizeof version, "%.*s", (int)(strlen(file) - 4), file);

    int applied = is_applied(conn, version, err, errlen);
    if (applied != 0)
        return applied < 0 ? -1 : 0;

    char *sql = read_file(path);
    if (!sql) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = -1;
    char msg[1024];
    if (exec_ok(conn, "BEGIN", err, errlen) < 0)
        goto out;
    if (exec_ok(conn, sql, msg, sizeof msg) < 0) {
        set_err(err, errlen, "%s: %s", file, msg);
        goto rollback;
    }
    const char *params[1] = {version};
    PGresult *res = PQexecParams(conn, "INSERT INTO schema_migrations (version) VALUES ($1)", 1,
                                 NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        set_err(err, errlen, "%s: %s", file, PQresultErrorMessage(res));
        PQclear(res);
        goto rollback;
    }
    PQclear(res);
    if (exec_ok(conn, "COMMIT", err, errlen) < 0)
        goto out;
    log_info("migrate: applied %s", file);
    rc = 1;
    goto out;
rollback:
    PQclear(PQexec(conn, "ROLLBACK"));
out:
    free(sql);
    return rc;
}

int store_migrate(const char *conninfo, const char *sql_dir, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    struct dirent **names = NULL;
    int nnames = -1, applied = 0, rc = -1;
    PGconn *conn = PQconnectdb(conninfo ? conninfo : "");
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        set_err(err, errlen, "connect: %s", conn ? PQerrorMessage(conn) : "out of memory");
        goto out;
    }
    if (exec_ok(conn, "SET client_min_messages = warning", err, errlen) < 0 ||
        exec_ok(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", err, errlen) < 0)
        goto out;
    if (exec_ok(conn,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())",
                err, errlen) < 0)
        goto unlock;

    nnames = scandir(sql_dir, &names, is_migration_name, alphasort);
    if (nnames < 0) {
        set_err(err, errlen, "%s: %s", sql_dir, strerror(errno));
        goto unlock;
    }
    for (int i = 0; i < nnames; i++) {
        int r = apply_one(conn, sql_dir, names[i]->d_name, err, errlen);
        if (r < 0)
            goto unlock;
        applied += r;
    }
    rc = applied;
unlock:
    PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
out:
    if (names) {
        for (int i = 0; i < nnames; i++)
            free(names[i]);
        free(names);
    }
    PQfinish(conn);
    return rc;
}
