/* Integration tests for store/migrate.c, sql/ and store/pg.c + store/messages.c against a real
 * PostgreSQL (URL in CHATD_TEST_DATABASE_URL; the whole file is skipped when it is unset).
 *
 *   tests/services.sh start /tmp/svc && . /tmp/svc/env && make build/tests/integration/test_pg \
 *     && build/tests/integration/test_pg
 *
 * The restart test stops and starts that PostgreSQL with tests/services.sh; it needs the
 * services dir (CHATD_TEST_SERVICES_DIR, or derived from PG_DATA=DIR/pg/data as written in
 * DIR/env) and is skipped without it. Set CHATD_TEST_NO_PG_RESTART=1 to skip it when the
 * database is shared with tests running in parallel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <dlfcn.h>
#include <netdb.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "store/messages.h"
#include "store/migrate.h"
#include "store/pg.h"

static const char *db_url;
static PGconn *admin; /* blocking connection for setup and checks */
static uv_loop_t loop;
static uv_timer_t wake;
static bool loop_ready;

static void on_wake(uv_timer_t *t)
{
    (void)t;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Runs the loop until *cond becomes true (checked after each iteration) or timeout. */
static bool run_until(bool (*cond)(void *), void *arg, double timeout_s)
{
    double end = now_s() + timeout_s;
    uv_timer_start(&wake, on_wake, 5, 5);
    bool ok;
    while (!(ok = cond(arg)) && now_s() < end)
        uv_run(&loop, UV_RUN_ONCE);
    uv_timer_stop(&wake);
    return ok;
}

static bool int_reaches(void *p)
{
    int *v = p;
    return v[0] >= v[1];
}

static bool is_ready(void *p)
{
    return pg_is_ready(p);
}

static void exec_ok(const char *sql)
{
    PGresult *r = PQexec(admin, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
}

static long long scalar(const char *sql)
{
    PGresult *r = PQexec(admin, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    long long v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

/* A fresh chat row; id written to out. */
static void new_chat(char *out, size_t n, const char *status)
{
    static int counter;
    snprintf(out, n, "test-%ld-%d-%d", (long)time(NULL), (int)getpid(), ++counter);
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO chats (id, org_id, status, customer_key, customer_id) "
             "VALUES ('%s', 'org-test', '%s', 'cust-%s', 'cust-%s')",
             out, status, out, out);
    exec_ok(sql);
}

static pg_client *new_client(int pool)
{
    pg_options o;
    pg_options_default(&o);
    o.pool_size = pool;
    pg_client *pg = pg_new(&loop, db_url, &o);
    assert_true(run_until(is_ready, pg, 10));
    return pg;
}

static void free_client(pg_client *pg)
{
    pg_free(pg);
    for (int i = 0; i < 10; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static int group_setup(void **state)
{
    (void)state;
    log_init_from_env();
    db_url = getenv("CHATD_TEST_DATABASE_URL");
    if (!db_url || !*db_url) {
        fprintf(stderr, "test_pg: CHATD_TEST_DATABASE_URL unset, skipping "
                        "(tests/services.sh start DIR && . DIR/env)\n");
        return 0;
    }
    admin = PQconnectdb(db_url);
    if (PQstatus(admin) != CONNECTION_OK) {
        fprintf(stderr, "test_pg: cannot connect: %s", PQerrorMessage(admin));
        PQfinish(admin);
        admin = NULL;
        return -1;
    }
    uv_loop_init(&loop);
    uv_timer_init(&loop, &wake);
    loop_ready = true;
    char err[512];
    const char *dir = getenv("CHATD_SQL_DIR") ? getenv("CHATD_SQL_DIR") : "sql";
    if (store_migrate(db_url, dir, err, sizeof err) < 0) {
        fprintf(stderr, "test_pg: migrate: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (!db_url || !*db_url || !loop_ready)
        return 0;
    uv_close((uv_handle_t *)&wake, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    int rc = uv_loop_close(&loop); /* UV_EBUSY would mean a leaked handle */
    PQfinish(admin);
    return rc == 0 ? 0 : -1;
}

#define NEED_DB()                                                                          \
    do {                                                                                   \
        if (!db_url || !*db_url)                                                           \
            skip();                                                                        \
    } while (0)

/* ------------------------------------------------------------------ migrate */

static void test_migrate_idempotent(void **state)
{
    (void)state;
    NEED_DB();
    char err[512];
    const char *dir = getenv("CHATD_SQL_DIR") ? getenv("CHATD_SQL_DIR") : "sql";
    /* group setup already migrated: nothing left to apply, twice */
    assert_int_equal(store_migrate(db_url, dir, err, sizeof err), 0);
    assert_int_equal(store_migrate(db_url, dir, err, sizeof err), 0);
    assert_true(scalar("SELECT count(*) FROM schema_migrations") >= 2);
    assert_int_equal(store_migrate("postgresql://nobody@127.0.0.1:1/x", dir, err, sizeof err), -1);
    assert_true(strlen(err) > 0);
    assert_int_equal(store_migrate(db_url, "/nonexistent-dir", err, sizeof err), -1);
}

/* ------------------------------------------------------------------ appends */

typedef struct append_result {
    pg_append_status st;
    int64_t seq;
    char id[64];
    char created_at[40];
    int order; /* completion order */
    bool done;
} append_result;

typedef struct append_batch {
    append_result *r;
    int done;
    int want;
} append_batch;

typedef struct append_slot {
    append_batch *b;
    int i;
} append_slot;

static void on_append(void *ctx, pg_append_status st, const pg_message *m,
                      const pg_chat_state *chat, const char *err)
{
    append_slot *s = ctx;
    append_result *r = &s->b->r[s->i];
    assert_false(r->done);
    r->done = true;
    r->st = st;
    r->order = s->b->done++;
    if (m) {
        r->seq = m->seq;
        snprintf(r->id, sizeof r->id, "%s", m->id);
        snprintf(r->created_at, sizeof r->created_at, "%s", m->created_at);
        assert_non_null(chat);
    }
    (void)err;
}

static void send_append(pg_client *pg, append_batch *b, append_slot *slots, int i,
                        const char *chat, const char *client_id, const char *text)
{
    slots[i].b = b;
    slots[i].i = i;
    pg_append_req req = {.chat_id = chat, .org_id = "org-test", .client_id = client_id,
                         .sender_type = "customer", .sender_id = "cust", .sender_name = "Cust",
                         .text = text, .owner_version = -1};
    assert_true(pg_append_message(pg, &req, on_append, &slots[i]) != 0);
}

static void test_append_500_gap_free(void **state)
{
    (void)state;
    NEED_DB();
    pg_client *pg = new_client(4);
    char chat[64];
    new_chat(chat, sizeof chat, "assigned");
    enum { N = 500 };
    append_batch b = {.r = calloc(N, sizeof(append_result)), .want = N};
    append_slot *slots = calloc(N, sizeof *slots);
    /* Five "senders" interleaved, all submitted before the loop runs: they go out pipelined. */
    for (int i = 0; i < N; i++) {
        char cid[32], text[32];
        snprintf(cid, sizeof cid, "s%d-%d", i % 5, i / 5);
        snprintf(text, sizeof text, "message %d", i);
        send_append(pg, &b, slots, i, chat, cid, text);
    }
    double t0 = now_s();
    assert_true(run_until(int_reaches, &b.done, 20));
    double dt = now_s() - t0;
    char *seen = calloc(N + 1, 1);
    for (int i = 0; i < N; i++) {
        assert_int_equal(b.r[i].st, PG_APPEND_OK);
        assert_true(b.r[i].seq >= 1 && b.r[i].seq <= N);
        assert_false(seen[b.r[i].seq]);
        seen[b.r[i].seq] = 1;
        /* one chat = one connection: completions come back in seq order */
        assert_int_equal(b.r[i].order + 1, b.r[i].seq);
        assert_int_equal(strlen(b.r[i].created_at), 24); /* 2026-01-02T03:04:05.678Z */
        assert_int_equal(b.r[i].created_at[23], 'Z');
    }
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM messages WHERE chat_id = '%s'", chat);
    assert_int_equal(scalar(sql), N);
    snprintf(sql, sizeof sql, "SELECT max(seq) FROM messages WHERE chat_id = '%s'", chat);
    assert_int_equal(scalar(sql), N);
    snprintf(sql, sizeof sql, "SELECT last_seq FROM chats WHERE id = '%s'", chat);
    assert_int_equal(scalar(sql), N);
    fprintf(stderr, "test_pg: 500 appends into one chat: %.1f ms (%.0f appends/s)\n", dt * 1e3,
            N / dt);
    free(seen);
    free(slots);
    free(b.r);
    free_client(pg);
}

/* Throughput: many chats, many appends, all in flight at once. */
static void test_append_throughput(void **state)
{
    (void)state;
    NEED_DB();
    pg_client *pg = new_client(4);
    enum { CHATS = 100, PER = 50, N = CHATS * PER };
    char (*chats)[64] = calloc(CHATS, 64);
    for (int c = 0; c < CHATS; c++)
        new_chat(chats[c], 64, "assigned");
    append_batch b = {.r = calloc(N, sizeof(append_result)), .want = N};
    append_slot *slots = calloc(N, sizeof *slots);
    double t0 = now_s();
    for (int i = 0; i < N; i++) {
        char cid[32];
        snprintf(cid, sizeof cid, "c%d", i / CHATS);
        send_append(pg, &b, slots, i, chats[i % CHATS], cid, "hello there");
    }
    assert_true(run_until(int_reaches, &b.done, 60));
    double dt = now_s() - t0;
    for (int i = 0; i < N; i++)
        assert_int_equal(b.r[i].st, PG_APPEND_OK);
    /* per chat, the i-th submitted append got seq i (order preserved per chat) */
    for (int i = 0; i < N; i++)
        assert_int_equal(b.r[i].seq, i / CHATS + 1);
    fprintf(stderr, "test_pg: %d appends over %d chats: %.1f ms (%.0f appends/s)\n", N, CHATS,
            dt * 1e3, N / dt);
    free(slots);
    free(b.r);
    free(chats);
    free_client(pg);
}

/* Closed loop like the gateway benchmark: 100 chats x 2 senders, each sender sends its next
 * message when the previous one is acknowledged. Prints appends/s and p50/p99 latency. */
typedef struct loop_sender {
    struct loop_bench *b;
    int chat;
    int who;
    int sent;
    double t0;
} loop_sender;

typedef struct loop_bench {
    pg_client *pg;
    char (*chats)[64];
    loop_sender *senders;
    double *lat;
    int nlat;
    int per_sender;
    int done;
    int want;
    int errors;
} loop_bench;

static void loop_send(loop_sender *s);

static void on_loop_append(void *ctx, pg_append_status st, const pg_message *m,
                           const pg_chat_state *chat, const char *err)
{
    loop_sender *s = ctx;
    loop_bench *b = s->b;
    b->lat[b->nlat++] = now_s() - s->t0;
    if (st != PG_APPEND_OK)
        b->errors++;
    b->done++;
    if (s->sent < b->per_sender)
        loop_send(s);
}

static void loop_send(loop_sender *s)
{
    char cid[48];
    snprintf(cid, sizeof cid, "w%d-%d", s->who, s->sent++);
    pg_append_req req = {.chat_id = s->b->chats[s->chat], .org_id = "org-test", .client_id = cid,
                         .sender_type = s->who ? "agent" : "customer", .sender_id = "x",
                         .text = "a typical short chat message", .owner_version = -1};
    s->t0 = now_s();
    pg_append_message(s->b->pg, &req, on_loop_append, s);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void test_append_closed_loop(void **state)
{
    (void)state;
    NEED_DB();
    enum { CHATS = 100, SENDERS = 2 * CHATS, PER = 25 };
    loop_bench b = {.pg = new_client(4), .per_sender = PER, .want = SENDERS * PER};
    b.chats = calloc(CHATS, 64);
    b.senders = calloc(SENDERS, sizeof *b.senders);
    b.lat = calloc(SENDERS * PER, sizeof(double));
    for (int c = 0; c < CHATS; c++)
        new_chat(b.chats[c], 64, "assigned");
    double t0 = now_s();
    for (int i = 0; i < SENDERS; i++) {
        b.senders[i] = (loop_sender){.b = &b, .chat = i / 2, .who = i % 2};
        loop_send(&b.senders[i]);
    }
    assert_true(run_until(int_reaches, &b.done, 60));
    double dt = now_s() - t0;
    assert_int_equal(b.errors, 0);
    qsort(b.lat, (size_t)b.nlat, sizeof(double), cmp_double);
    fprintf(stderr,
            "test_pg: closed loop %d chats x 2 senders, %d appends: %.0f appends/s, "
            "p50 %.1f ms, p99 %.1f ms\n",
            CHATS, b.nlat, b.nlat / dt, b.lat[b.nlat / 2] * 1e3, b.lat[b.nlat * 99 / 100] * 1e3);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT last_seq FROM chats WHERE id = '%s'", b.chats[0]);
    assert_int_equal(scalar(sql), 2 * PER);
    free(b.lat);
    free(b.senders);
    free(b.chats);
    free_client(b.pg);
}

static void test_append_idempotent(void **state)
{
    (void)state;
    NEED_DB();
    pg_client *pg = new_client(2);
    char chat[64];
    new_chat(chat, sizeof chat, "ai");
    append_batch b = {.r = calloc(4, sizeof(append_result)), .want = 3};
    append_slot slots[4];
    /* same clientId twice in the same pipeline, plus another message in between */
    send_append(pg, &b, slots, 0, chat, "dup", "first");
    send_append(pg, &b, slots, 1, chat, "other", "x");
    send_append(pg, &b, slots, 2, chat, "dup", "first (retry)");
    assert_true(run_until(int_reaches, &b.done, 10));
    assert_int_equal(b.r[0].st, PG_APPEND_OK);
    assert_int_equal(b.r[1].st, PG_APPEND_OK);
    assert_int_equal(b.r[2].st, PG_APPEND_REPLAY);
    assert_string_equal(b.r[0].id, b.r[2].id);
    assert_int_equal(b.r[0].seq, 1);
    assert_int_equal(b.r[2].seq, 1);
    assert_int_equal(b.r[1].seq, 2);
    /* later retry, too */
    b.want = 4;
    send_append(pg, &b, slots, 3, chat, "dup", "again");
    assert_true(run_until(int_reaches, &b.done, 10));
    assert_int_equal(b.r[3].st, PG_APPEND_REPLAY);
    assert_string_equal(b.r[3].id, b.r[0].id);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM messages WHERE chat_id = '%s'", chat);
    assert_int_equal(scalar(sql), 2);
    snprintf(sql, sizeof sql, "SELECT last_seq FROM chats WHERE id = '%s'", chat);
    assert_int_equal(scalar(sql), 2); /* no seq consumed by the replays */
    free(b.r);
    free_client(pg);
}

static void test_append_closed_and_not_found(void **state)
{
    (void)state;
    NEED_DB();
    pg_client *pg = new_client(2);
    char chat[64], sql[256];
    new_chat(chat, sizeof chat, "assigned");
    append_batch b = {.r = calloc(8, sizeof(append_result)), .want = 1};
    append_slot slots[8];
    send_append(pg, &b, slots, 0, chat, "before-close", "hi");
    assert_true(run_until(int_reaches, &b.done, 10));
    snprintf(sql, sizeof sql, "UPDATE chats SET status = 'closed' WHERE id = '%s'", chat);
    exec_ok(sql);
    b.want = 6;
    send_append(pg, &b, slots, 1, chat, "after-close", "late");       /* conflict */
    send_append(pg, &b, slots, 2, chat, "before-close", "retry");     /* still a replay */
    send_append(pg, &b, slots, 3, "no-such-chat", "x", "x");          /* not found */
    send_append(pg, &b, slots, 4, "'; DROP TABLE chats; --", "x", "x"); /* malformed id */
    /* another org's chat is not_found too */
    slots[5].b = &b;
    slots[5].i = 5;
    pg_append_req req = {.chat_id = chat, .org_id = "org-other", .client_id = "y",
                         .sender_type = "agent", .sender_id = "a", .text = "x",
                         .owner_version = -1};
    pg_append_message(pg, &req, on_append, &slots[5]);
    assert_true(run_until(int_reaches, &b.done, 10));
    assert_int_equal(b.r[1].st, PG_APPEND_CLOSED);
    assert_int_equal(b.r[2].st, PG_APPEND_REPLAY);
    assert_string_equal(b.r[2].id, b.r[0].id);
    assert_int_equal(b.r[3].st, PG_APPEND_NOT_FOUND);
    assert_int_equal(b.r[4].st, PG_APPEND_NOT_FOUND);
    assert_int_equal(b.r[5].st, PG_APPEND_NOT_FOUND);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM messages WHERE chat_id = '%s'", chat);
    assert_int_equal(scalar(sql), 1);
    free(b.r);
    free_client(pg);
}

static void test_append_owner_version(void **state)
{
    (void)state;
    NEED_DB();
    pg_client *pg = new_client(1);
    char chat[64], sql[256];
    new_chat(chat, sizeof chat, "ai");
    snprintf(sql, sizeof sql, "UPDATE chats SET owner_version = 7 WHERE id = '%s'", chat);
    exec_ok(sql);
    append_batch b = {.r = calloc(2, sizeof(append_result)), .want = 2};
    append_slot slots[2];
    for (int i = 0; i < 2; i++) {
        slots[i].b = &b;
        slots[i].i = i;
        pg_append_req req = {.chat_id = chat, .sender_type = "ai", .sender_name = "Bot",
                             .text = "tokens", .owner_version = i == 0 ? 6 : 7};
        pg_append_message(pg, &req, on_append, &slots[i]);
    }
    assert_true(run_until(int_reaches, &b.done, 10));
    assert_int_equal(b.r[0].st, PG_APPEND_STALE);
    assert_int_equal(b.r[1].st, PG_APPEND_OK);
    assert_int_equal(b.r[1].seq, 1);
    free(b.r);
    free_client(pg);
}

/* chat_append_items (sql/024) called directly: the short path for a plain batch, and the
 * item-by-item classification for a batch with anything unusual. The short path is the only
 * one that keeps the ids chatd sends, which tells the two apart. */
static PGresult *append_items(const char *json)
{
    const char *params[1] = {json};
    PGresult *r = PQexecParams(admin,
                               "SELECT idx, status, id, seq, last_seq FROM chat_append_items($1::jsonb)",
                               1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("chat_append_items: %s", PQresultErrorMessage(r));
    return r;
}

static void assert_row(PGresult *r, int row, const char *status, const char *id, long long seq,
                       long long last_seq)
{
    assert_int_equal(atoi(PQgetvalue(r, row, 0)), row);
    assert_string_equal(PQgetvalue(r, row, 1), status);
    if (id)
        assert_string_equal(PQgetvalue(r, row, 2), id);
    if (seq >= 0)
        assert_int_equal(strtoll(PQgetvalue(r, row, 3), NULL, 10), seq);
    if (last_seq >= 0)
        assert_int_equal(strtoll(PQgetvalue(r, row, 4), NULL, 10), last_seq);
}

static void test_append_items_paths(void **state)
{
    (void)state;
    NEED_DB();
    char a[64], b[64], closed[64], json[2048], sql[256];
    new_chat(a, sizeof a, "assigned");
    new_chat(b, sizeof b, "assigned");
    new_chat(closed, sizeof closed, "closed");

    /* plain batch over two chats, two system messages without clientId in one chat */
    snprintf(json, sizeof json,
             "[{\"id\":\"%s-1\",\"chat\":\"%s\",\"cid\":\"a1\",\"st\":\"customer\",\"text\":\"one\",\"org\":\"org-test\"},"
             "{\"id\":\"%s-1\",\"chat\":\"%s\",\"cid\":\"b1\",\"st\":\"agent\",\"text\":\"two\",\"org\":\"org-test\"},"
             "{\"id\":\"%s-2\",\"chat\":\"%s\",\"st\":\"system\",\"text\":\"three\"},"
             "{\"id\":\"%s-3\",\"chat\":\"%s\",\"st\":\"system\",\"text\":\"four\"}]",
             a, a, b, b, a, a, a, a);
    char a1[80], b1[80], a2[80], a3[80];
    snprintf(a1, sizeof a1, "%s-1", a);
    snprintf(b1, sizeof b1, "%s-1", b);
    snprintf(a2, sizeof a2, "%s-2", a);
    snprintf(a3, sizeof a3, "%s-3", a);
    PGresult *r = append_items(json);
    assert_int_equal(PQntuples(r), 4);
    assert_row(r, 0, "ok", a1, 1, 3);
    assert_row(r, 1, "ok", b1, 1, 1);
    assert_row(r, 2, "ok", a2, 2, 3);
    assert_row(r, 3, "ok", a3, 3, 3);
    PQclear(r);
    snprintf(sql, sizeof sql, "SELECT last_seq * 10 + (SELECT count(*) FROM messages WHERE chat_id = '%s') "
                              "FROM chats WHERE id = '%s'", a, a);
    assert_int_equal(scalar(sql), 33);

    /* a retried clientId, a new one and a closed chat: classified item by item */
    snprintf(json, sizeof json,
             "[{\"id\":\"x1\",\"chat\":\"%s\",\"cid\":\"a1\",\"st\":\"customer\",\"text\":\"one again\"},"
             "{\"id\":\"x2\",\"chat\":\"%s\",\"cid\":\"a4\",\"st\":\"customer\",\"text\":\"five\"},"
             "{\"id\":\"x3\",\"chat\":\"%s\",\"cid\":\"c1\",\"st\":\"customer\",\"text\":\"late\"}]",
             a, a, closed);
    r = append_items(json);
    assert_int_equal(PQntuples(r), 3);
    assert_row(r, 0, "replay", a1, 1, -1);
    assert_row(r, 1, "ok", NULL, 4, 4);
    assert_true(strcmp(PQgetvalue(r, 1, 2), "x2") != 0); /* the classifying path's own id */
    assert_row(r, 2, "closed", NULL, -1, -1);
    PQclear(r);

    /* a clientId twice in one batch: stored once, the second answers replay with the same row */
    snprintf(json, sizeof json,
             "[{\"id\":\"y1\",\"chat\":\"%s\",\"cid\":\"b2\",\"st\":\"agent\",\"text\":\"x\"},"
             "{\"id\":\"y2\",\"chat\":\"%s\",\"cid\":\"b2\",\"st\":\"agent\",\"text\":\"x\"}]",
             b, b);
    r = append_items(json);
    assert_int_equal(PQntuples(r), 2);
    assert_row(r, 0, "ok", NULL, 2, 2);
    assert_row(r, 1, "replay", PQgetvalue(r, 0, 2), 2, -1);
    PQclear(r);

    /* another org, an unknown chat, a stale owner version: nothing stored, seq untouched */
    snprintf(sql, sizeof sql, "UPDATE chats SET owner_version = 3 WHERE id = '%s'", b);
    exec_ok(sql);
    snprintf(json, sizeof json,
             "[{\"chat\":\"%s\",\"cid\":\"z1\",\"st\":\"agent\",\"org\":\"org-other\"},"
             "{\"chat\":\"no-such-chat\",\"cid\":\"z2\",\"st\":\"agent\"},"
             "{\"chat\":\"%s\",\"st\":\"ai\",\"ov\":2}]",
             a, b);
    r = append_items(json);
    assert_int_equal(PQntuples(r), 3);
    assert_row(r, 0, "not_found", NULL, -1, -1);
    assert_row(r, 1, "not_found", NULL, -1, -1);
    assert_row(r, 2, "stale", NULL, -1, 2);
    PQclear(r);
    snprintf(sql, sizeof sql, "SELECT sum(last_seq) FROM chats WHERE id IN ('%s', '%s')", a, b);
    assert_int_equal(scalar(sql), 6);
}

/* ------------------------------------------------------------------ raw queries */

typedef struct q_result {
    int done;
    int want;
    int ok;
    int failed;
    int calls[16];
    char val[16][64];
    pg_outcome outcome[16];
} q_result;

typedef struct q_slot {
    q_result *q;
    int i;
} q_slot;

static void on_query(void *ctx, const PGresult *res, const char *err)
{
    q_slot *s = ctx;
    s->q->calls[s->i]++;
    s->q->done++;
    s->q->outcome[s->i] = pg_classify(res, err);
    if (err) {
        s->q->failed++;
        snprintf(s->q->val[s->i], 64, "ERR");
    } else {
        s->q->ok++;
        if (PQntuples(res) > 0)
            snprintf(s->q->val[s->i], 64, "%s", PQgetvalue(res, 0, 0));
    }
}

/* Index tuples read so far from the (chat_id, client_id) index of probe_test.messages. */
static long long client_index_reads(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT pg_stat_clear_snapshot(), coalesce(sum(idx_tup_read), 0) "
                            "FROM pg_stat_user_indexes WHERE schemaname = 'probe_test' "
                            "AND indexrelname LIKE '%client%'");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("index stats: %s", PQresultErrorMessage(r));
    long long v = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    return v;
}

static void items_call(PGconn *c, const char *chat, const char *cid1, const char *cid2)
{
    char json[512];
    snprintf(json, sizeof json,
             "[{\"chat\":\"%s\",\"cid\":\"%s\",\"st\":\"customer\",\"text\":\"a\"},"
             "{\"chat\":\"%s\",\"cid\":\"%s\",\"st\":\"customer\",\"text\":\"b\"}]",
             chat, cid1, chat, cid2);
    const char *params[1] = {json};
    PGresult *r = PQexecParams(c, "SELECT status FROM chat_append_items($1::jsonb)", 1, NULL,
                               params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("chat_append_items: %s", PQresultErrorMessage(r));
    assert_int_equal(PQntuples(r), 2);
    assert_string_equal(PQgetvalue(r, 0, 0), "ok");
    assert_string_equal(PQgetvalue(r, 1, 0), "ok");
    PQclear(r);
}

/* The clientId check of a combined append probes the index once per item. Planned while the
 * table was nearly empty, it used to become a hashed subplan, kept in the session's plan
 * cache, that read every (chat, clientId) of the table on every call however big the table
 * grew (sql/027). The session sees a scratch copy of `messages` through its search_path: empty
 * when the session plans, 3,000 rows (not analyzed) when the cached plan runs again. */
static void test_append_items_probe_per_item(void **state)
{
    (void)state;
    NEED_DB();
    char chat[64], sql[512];
    new_chat(chat, sizeof chat, "assigned");
    exec_ok("DROP SCHEMA IF EXISTS probe_test CASCADE");
    exec_ok("CREATE SCHEMA probe_test");
    exec_ok("CREATE TABLE probe_test.messages (LIKE public.messages INCLUDING ALL) "
            "WITH (autovacuum_enabled = off)");
    exec_ok("ANALYZE probe_test.messages");
    PGconn *c = PQconnectdb(db_url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "SET search_path = probe_test, public"));
    items_call(c, chat, "p1", "p2"); /* plans the function's statements */
    snprintf(sql, sizeof sql,
             "INSERT INTO probe_test.messages (chat_id, org_id, seq, client_id, sender_type) "
             "SELECT '%s', 'org-test', 1000 + g, 'fill-' || g, 'customer' "
             "FROM generate_series(1, 3000) g", chat);
    exec_ok(sql);
    long long before = client_index_reads(c);
    items_call(c, chat, "p3", "p4"); /* the cached plan */
    PQclear(PQexec(c, "SELECT pg_stat_force_next_flush()"));
    PQclear(PQexec(c, "SELECT 1")); /* statistics are flushed when the session goes idle */
    long long reads = client_index_reads(c) - before;
    PQfinish(c);
    exec_ok("DROP SCHEMA probe_test CASCADE");
    if (reads >= 100)
        fail_msg("2 appended items read %lld index entries for their clientId check", reads);
}

/* chat_append_one (sql/026) called directly: the one-statement path keeps the id chatd sends;
 * everything else is classified by chat_append_batch under the same lock. */
static PGresult *append_one(const char *id, const char *chat, const char *cid, const char *st,
                            const char *att, const char *org, const char *ov)
{
    const char *params[10] = {id, chat, cid, st, "sender-1", "Sender", "hello", att, org, ov};
    PGresult *r = PQexecParams(admin,
                               "SELECT idx, status, id, seq, last_seq, attachments, client_id "
                               "FROM chat_append_one($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, "
                               "$10::int)",
                               10, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("chat_append_one: %s", PQresultErrorMessage(r));
    assert_int_equal(PQntuples(r), 1);
    return r;
}

static void test_append_one_paths(void **state)
{
    (void)state;
    NEED_DB();
    char a[64], closed[64], sql[1024], id[8][96];
    new_chat(a, sizeof a, "assigned");
    new_chat(closed, sizeof closed, "closed");
    for (int i = 1; i < 8; i++)
        snprintf(id[i], sizeof id[i], "%s-m%d", a, i); /* message ids are unique across runs */

    PGresult *r = append_one(id[1], a, "c1", "customer", "[{\"id\":\"u1\"}]", "org-test", NULL);
    assert_row(r, 0, "ok", id[1], 1, 1);
    assert_string_equal(PQgetvalue(r, 0, 5), "[{\"id\": \"u1\"}]");
    assert_string_equal(PQgetvalue(r, 0, 6), "c1");
    PQclear(r);
    /* no id, no clientId, no attachments: a generated id, '[]', NULL clientId, twice */
    for (int i = 0; i < 2; i++) {
        r = append_one(NULL, a, NULL, "system", NULL, NULL, NULL);
        assert_row(r, 0, "ok", NULL, 2 + i, 2 + i);
        assert_int_equal(strlen(PQgetvalue(r, 0, 2)), 36);
        assert_string_equal(PQgetvalue(r, 0, 5), "[]");
        assert_true(PQgetisnull(r, 0, 6));
        PQclear(r);
    }
    /* a retried clientId: the stored row, nothing consumed */
    r = append_one(id[2], a, "c1", "customer", NULL, "org-test", NULL);
    assert_row(r, 0, "replay", id[1], 1, 3);
    PQclear(r);
    /* a closed chat, another org, an unknown chat, a stale owner version */
    r = append_one(id[3], closed, "c2", "customer", NULL, "org-test", NULL);
    assert_row(r, 0, "closed", NULL, -1, -1);
    PQclear(r);
    r = append_one(id[4], a, "c3", "customer", NULL, "org-other", NULL);
    assert_row(r, 0, "not_found", NULL, -1, -1);
    PQclear(r);
    r = append_one(id[5], "no-such-chat", "c4", "customer", NULL, NULL, NULL);
    assert_row(r, 0, "not_found", NULL, -1, -1);
    PQclear(r);
    snprintf(sql, sizeof sql, "UPDATE chats SET owner_version = 2 WHERE id = '%s'", a);
    exec_ok(sql);
    r = append_one(id[6], a, "c5", "agent", NULL, "org-test", "1");
    assert_row(r, 0, "stale", NULL, -1, 3);
    PQclear(r);
    r = append_one(id[7], a, "c5", "agent", NULL, "org-test", "2");
    assert_row(r, 0, "ok", id[7], 4, 4);
    PQclear(r);
    snprintf(sql, sizeof sql, "SELECT last_seq * 10 + (SELECT count(*) FROM messages WHERE chat_id = '%s') "
                              "FROM chats WHERE id = '%s'", a, a);
    assert_int_equal(scalar(sql), 44);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM messages WHERE id IN ('%s', '%s', '%s', '%s', '%s')",
             id[2], id[3], id[4], id[5], id[6]);
    assert_int_equal(scalar(sql), 0);
}

static void test_query_errors_and_batch_retry(void **state)
{
    (void)state;
    NEED_DB();
    pg_client *pg = new_client(1);
    q_result q = {.want = 6};
    q_slot s[6];
    for (int i = 0; i < 6; i++) {
        s[i].q = &q;
        s[i].i = i;
    }
    const char *p[1] = {"41"};
    pg_query_opts batch = {.sql = "SELECT $1::int + 1", .nparams = 1, .params = p,
                           .flags = PG_Q_BATCH};
    pg_query_opts bad = {.sql = "SELECT 1/0", .flags = PG_Q_BATCH};
    /* one shared transaction: ok, ok, error, ok -> error must not take the others down */
    pg_query_ex(pg, &batch, on_query, &s[0]);
    pg_query_ex(pg, &batch, on_query, &s[1]);
    pg_query_ex(pg, &bad, on_query, &s[2]);
    pg_query_ex(pg, &batch, on_query, &s[3]);
    pg_query(pg, "SELEC syntax error", 0, NULL, on_query, &s[4]); /* alone */
    pg_query(pg, "SELECT 'after'", 0, NULL, on_query, &s[5]);
    assert_true(run_until(int_reaches, &q.done, 10));
    for (int i = 0; i < 6; i++)
        assert_int_equal(q.calls[i], 1);
    assert_string_equal(q.val[0], "42");
    assert_string_equal(q.val[1], "42");
    assert_string_equal(q.val[2], "ERR");
    assert_int_equal(q.outcome[2], PG_OUTCOME_ERROR);
    assert_string_equal(q.val[3], "42");
    assert_string_equal(q.val[4], "ERR");
    assert_string_equal(q.val[5], "after");
    pg_stats st;
    pg_get_stats(pg, &st);
    assert_true(st.batches_retried >= 1);
    free_client(pg);

    /* A shared transaction that ran out of time is not re-run member by member (each would
     * wait again): every member fails, including the one whose result came before. */
    pg_options o;
    pg_options_default(&o);
    o.pool_size = 1;
    o.statement_timeout_ms = 200;
    pg = pg_new(&loop, db_url, &o);
    assert_true(run_until(is_ready, pg, 10));
    q_result q2 = {.want = 3};
    q_slot s2[3] = {{&q2, 0}, {&q2, 1}, {&q2, 2}};
    pg_query_opts slow = {.sql = "SELECT pg_sleep(2)", .flags = PG_Q_BATCH};
    pg_query_ex(pg, &batch, on_query, &s2[0]);
    pg_query_ex(pg, &slow, on_query, &s2[1]);
    pg_query_ex(pg, &batch, on_query, &s2[2]);
    assert_true(run_until(int_reaches, &q2.done, 10));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(q2.calls[i], 1);
        assert_string_equal(q2.val[i], "ERR");
        assert_int_equal(q2.outcome[i], PG_OUTCOME_UNAVAILABLE);
    }
    pg_stats st2;
    pg_get_stats(pg, &st2);
    assert_int_equal(st2.batches_retried, 0);
    free_client(pg);
}

/* Combined (multi-row) queries: one bad item fails the combined query; every item is then
 * re-sent alone and only the bad one reports an error. */
typedef struct row_result {
    int done;
    int want;
    int row[16];
    char val[16][32];
    int calls[16];
    int order[16]; /* completion order */
} row_result;

typedef struct row_slot {
    row_result *r;
    int i;
} row_slot;

static void on_row(void *ctx, const PGresult *res, int row, const char *err)
{
    row_slot *s = ctx;
    s->r->calls[s->i]++;
    s->r->order[s->i] = s->r->done++;
    s->r->row[s->i] = row;
    snprintf(s->r->val[s->i], 32, "%s", err ? "ERR" : PQgetvalue(res, row, 0));
}

/* Routing of combinable queries by route key (row_result: each answer is "value:backend pid"). */
static const char *pid_of(const char *val)
{
    const char *p = strchr(val, ':');
    return p ? p + 1 : "?";
}

static bool three_ready(void *p)
{
    pg_stats st;
    pg_get_stats(p, &st);
    return st.connections_ready == 3;
}

static bool two_ready(void *p)
{
    pg_stats st;
    pg_get_stats(p, &st);
    return st.connections_ready == 2;
}

#define ROUTE_SQL "SELECT (x->>'v') || ':' || pg_backend_pid() FROM jsonb_array_elements($1::jsonb) " \
                  "WITH ORDINALITY t(x, o) ORDER BY o"

/* A combinable query of key `key`; sleep_s > 0 makes it a lone slow statement that holds its
 * connection's group commit that long. */
static void route_q(pg_client *pg, const char *key, const char *v, double sleep_s, row_slot *s)
{
    char item[32], own[160];
    snprintf(item, sizeof item, "{\"v\":\"%s\"}", v);
    snprintf(own, sizeof own, "SELECT '%s:' || pg_backend_pid() FROM pg_sleep(%.2f)", v, sleep_s);
    pg_query_opts q = {.combine_sql = ROUTE_SQL, .combine_item = item, .row_cb = on_row,
                       .route_key = key, .sql = sleep_s > 0 ? own : NULL};
    pg_query_ex(pg, &q, NULL, s);
}

/* The pool's key hash (FNV-1a, store/pg.c): a key whose home is `conn` of `spread`. */
static void key_for(char *out, size_t n, const char *prefix, int conn, int spread)
{
    for (int i = 0;; i++) {
        snprintf(out, n, "%s%d", prefix, i);
        uint32_t h = 2166136261u;
        for (const char *c = out; *c; c++)
            h = (h ^ (unsigned char)*c) * 16777619u;
        if (h % (uint32_t)spread == (uint32_t)conn)
            return;
    }
}

/* A request cancelled while its combined call is in flight gets on_cancel once, however often it
 * is cancelled: the call fails on a bad item, its members are queued again one by one, and a
 * second pg_cancel finds the cancelled one waiting (it ran on_cancel again: a double free in
 * messages.c). The second cancel says false: nothing was left to detach. */
static int cancels_seen;
static void count_cancel(void *ctx)
{
    (void)ctx;
    cancels_seen++;
}

static void test_cancel_twice_during_retry(void **state)
{
    (void)state;
    NEED_DB();
    pg_client *pg = new_client(1);
    const char *sql = "SELECT ((x->>'v')::int * 2)::text FROM jsonb_array_elements($1::jsonb) "
                      "WITH ORDINALITY t(x, o) ORDER BY o";
    const char *items[3] = {"{\"v\":1}", "{\"v\":\"bad\"}", "{\"v\":3}"};
    row_result r = {0};
    row_slot s[3];
    pg_req_id ids[3];
    cancels_seen = 0;
    for (int i = 0; i < 3; i++) {
        s[i] = (row_slot){&r, i};
        pg_query_opts q = {.combine_sql = sql, .combine_item = items[i], .row_cb = on_row,
                           .on_cancel = count_cancel};
        ids[i] = pg_query_ex(pg, &q, NULL, &s[i]);
    }
    uv_run(&loop, UV_RUN_NOWAIT); /* the combined call is in flight */
    assert_true(pg_cancel(pg, ids[2]));
    r.want = 1;
    assert_true(run_until(int_reaches, &r.done, 10)); /* item 0 re-sent alone and answered */
    assert_false(pg_cancel(pg, ids[2]));
    assert_int_equal(cancels_seen, 1);
    r.want = 2;
    assert_true(run_until(int_reaches, &r.done, 10)); /* the bad item fails alone */
    assert_string_equal(r.val[0], "2");
    assert_string_equal(r.val[1], "ERR");
    assert_int_equal(r.calls[2], 0);
    free_client(pg);
    assert_int_equal(cancels_seen, 1);
}

/* The resolver, slowed down on demand: libpq and uv_getaddrinfo's worker threads both come here
 * (this definition interposes on libc's for the whole process). */
static int slow_dns_ms;
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    static int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
    if (!real)
        real = (int (*)(const char *, const char *, const struct addrinfo *,
                        struct addrinfo **))dlsym(RTLD_NEXT, "getaddrinfo");
    if (slow_dns_ms && node && strcmp(node, "localhost") == 0)
        usleep((useconds_t)slow_dns_ms * 1000);
    return real(node, service, hints, res);
}

typedef struct stall_meter {
    uv_timer_t t;
    uint64_t last, max_gap;
} stall_meter;

static void on_stall_tick(uv_timer_t *t)
{
    stall_meter *m = t->data;
    uint64_t now = uv_now(t->loop);
    if (m->last && now - m->last > m->max_gap)
        m->max_gap = now - m->last;
    m->last = now;
}

/* A host name in the URL is resolved off the loop (uv_getaddrinfo), and every address it has is
 * tried ("localhost" may give ::1 first while the server listens on 127.0.0.1 only). With a
 * resolver that takes 1 s, libpq's own lookup stalled the loop 1 s per connection; now a 5 ms
 * timer keeps ticking. A name that does not resolve fails queries as unavailable. */
static void test_host_names(void **state)
{
    (void)state;
    NEED_DB();
    const char *at = strstr(db_url, "127.0.0.1");
    if (!at)
        skip();
    char url[512];
    snprintf(url, sizeof url, "%.*slocalhost%s", (int)(at - db_url), db_url, at + strlen("127.0.0.1"));
    pg_options o;
    pg_options_default(&o);
    o.pool_size = 2;
    stall_meter m = {0};
    uv_timer_init(&loop, &m.t);
    m.t.data = &m;
    uv_update_time(&loop);
    uv_timer_start(&m.t, on_stall_tick, 5, 5);
    slow_dns_ms = 1000;
    pg_client *pg = pg_new(&loop, url, &o);
    on_stall_tick(&m.t); /* pg_new itself counts */
    assert_true(run_until(is_ready, pg, 10));
    slow_dns_ms = 0;
    uv_timer_stop(&m.t);
    uv_close((uv_handle_t *)&m.t, NULL);
    assert_true(m.max_gap < 500);
    q_result q = {.want = 1};
    q_slot s0 = {&q, 0};
    pg_query(pg, "SELECT 'by name'", 0, NULL, on_query, &s0);
    assert_true(run_until(int_reaches, &q.done, 10));
    assert_string_equal(q.val[0], "by name");
    free_client(pg);

    snprintf(url, sizeof url, "%.*sno-such-host.invalid%s", (int)(at - db_url), db_url,
             at + strlen("127.0.0.1"));
    o.pool_size = 1;
    o.queue_timeout_ms = 300;
    pg = pg_new(&loop, url, &o);
    q_result q2 = {.want = 1};
    q_slot s1 = {&q2, 0};
    pg_query(pg, "SELECT 1", 0, NULL, on_query, &s1);
    assert_true(run_until(int_reaches, &q2.done, 10));
    assert_int_equal(q2.failed, 1);
    assert_false(pg_is_ready(pg));
    free_client(pg);
}

/* A chat's later query never overtakes an earlier one that is re-run: [a1, bad] share a
 * transaction, which fails and is re-run member by member; a2 (same chat, submitted while that
 * transaction was in flight) must wait for a1's re-run. It used to be sent behind the failing
 * group and answered first. */
static void test_retry_keeps_chat_order(void **state)
{
    (void)state;
    NEED_DB();
    pg_client *pg = new_client(1);
    row_result r = {.want = 3};
    row_slot s[3] = {{&r, 0}, {&r, 1}, {&r, 2}};
    pg_query_opts a1 = {.sql = "SELECT 'a1'", .flags = PG_Q_BATCH, .route_key = "chatA", .row_cb = on_row};
    pg_query_opts bad = {.sql = "SELECT (1/0)::text", .flags = PG_Q_BATCH, .route_key = "chatB",
                         .row_cb = on_row};
    pg_query_opts a2 = {.sql = "SELECT 'a2'", .flags = PG_Q_BATCH, .route_key = "chatA", .row_cb = on_row};
    pg_query_ex(pg, &a1, NULL, &s[0]);
    pg_query_ex(pg, &bad, NULL, &s[1]);
    uv_run(&loop, UV_RUN_NOWAIT);      /* the group [a1, bad] is sent */
    pg_query_ex(pg, &a2, NULL, &s[2]); /* chat A again, while a1 is in flight */
    assert_true(run_until(int_reaches, &r.done, 10));
    assert_string_equal(r.val[0], "a1");
    assert_string_equal(r.val[1], "ERR");
    assert_string_equal(r.val[2], "a2");
    assert_true(r.order[0] < r.order[2]);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r.calls[i], 1);
    free_client(pg);
}

/* A connection whose pipeline keeps answering is not stuck, however long the pipeline takes:
 * 45 statements of 120 ms each (under the 200 ms statement timeout), sent at once, take 5.4 s,
 * past the 5.2 s stuck limit counted from the first one's send. Every one must succeed, on the
 * same connection. */
static void test_long_pipeline_not_stuck(void **state)
{
    (void)state;
    NEED_DB();
    pg_options o;
    pg_options_default(&o);
    o.pool_size = 1;
    o.statement_timeout_ms = 200; /* stuck after 200 ms + 5 s without an answer */
    pg_client *pg = pg_new(&loop, db_url, &o);
    assert_true(run_until(is_ready, pg, 10));
    enum { N = 45 };
    q_result q = {.want = N};
    q_slot s[N];
    for (int i = 0; i < N; i++)
        s[i] = (q_slot){&q, i < 16 ? i : 15};
    for (int i = 0; i < N; i++)
        pg_query(pg, "SELECT pg_sleep(0.12)", 0, NULL, on_query, &s[i]);
    assert_true(run_until(int_reaches, &q.done, 20));
    assert_int_equal(q.ok, N);
    assert_int_equal(q.failed, 0);
    pg_stats st;
    pg_get_stats(pg, &st);
    assert_int_equal(st.reconnects, 0);
    free_client(pg);
}

/* A request moved to a connection that the dispatch pass had already visited (its chat's home
 * changed while it waited) leaves in the same loop iteration, not after the loop has blocked
 * (up to the 100 ms tick). One non-blocking iteration must send it. */
static void test_rehome_sends_at_once(void **state)
{
    (void)state;
    NEED_DB();
    pg_client *pg = new_client(2);
    assert_true(run_until(two_ready, pg, 10));
    char k[16];
    key_for(k, sizeof k, "h", 1, 2);
    row_result r = {.want = 1};
    row_slot s = {&r, 0};
    pg_set_spread(pg, 2);
    route_q(pg, k, "moved", 0, &s); /* waits on its home, the second connection */
    pg_set_spread(pg, 1);             /* its home is the first now: moved when dispatched */
    uv_run(&loop, UV_RUN_NOWAIT);
    pg_stats st;
    pg_get_stats(pg, &st);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.inflight, 1);
    assert_true(run_until(int_reaches, &r.done, 10));
    assert_int_equal(r.calls[0], 1);
    assert_int_equal(strncmp(r.val[0], "moved:", 6), 0);
    pg_set_spread(pg, 0);
    free_client(pg);
}

static void test_routing_spread(void **state)
{
    (void)state;
    NEED_DB();
    pg_options o;
    pg_options_default(&o);
    o.pool_size = 3;
    o.backoff_min_ms = o.backoff_max_ms = 5000; /* a killed connection stays down */
    pg_client *pg = pg_new(&loop, db_url, &o);
    assert_true(run_until(three_ready, pg, 10));
    row_result r = {0};
    row_slot s[16];
    for (int i = 0; i < 16; i++)
        s[i] = (row_slot){&r, i};
    /* Unloaded, the spread is one connection: every key's queries go to the same backend. */
    pg_stats st;
    pg_get_stats(pg, &st);
    assert_int_equal(st.spread, 1);
    const char *keys[4] = {"k1", "k2", "k3", "k4"};
    for (int i = 0; i < 4; i++)
        route_q(pg, keys[i], keys[i], 0, &s[i]);
    r.want = 4;
    assert_true(run_until(int_reaches, &r.done, 10));
    for (int i = 1; i < 4; i++)
        assert_string_equal(pid_of(r.val[i]), pid_of(r.val[0]));

    /* A key with a query in flight stays behind it; a key whose queries all wait moves, with
     * them, to its new home when the spread grows. A and B both have homes other than the
     * first connection once the spread is 3. */
    char ka[16], kb[16];
    key_for(ka, sizeof ka, "a", 1, 3);
    key_for(kb, sizeof kb, "b", 2, 3);
    memset(&r, 0, sizeof r);
    pg_set_spread(pg, 1);
    route_q(pg, ka, "a1", 0.4, &s[0]);
    uv_run(&loop, UV_RUN_NOWAIT); /* a1 runs on the first connection */
    route_q(pg, kb, "b1", 0, &s[1]); /* waits behind a1 */
    route_q(pg, ka, "a2", 0, &s[2]);
    pg_set_spread(pg, 3);
    pg_get_stats(pg, &st);
    assert_int_equal(st.spread, 3);
    route_q(pg, kb, "b2", 0, &s[3]); /* takes b1 along to B's home */
    route_q(pg, ka, "a3", 0, &s[4]); /* A still has a1 in flight: queued behind it */
    r.want = 2;
    assert_true(run_until(int_reaches, &r.done, 10));
    assert_string_equal(r.val[0], ""); /* b1 and b2 are done while a1 still runs */
    assert_string_not_equal(pid_of(r.val[1]), "?");
    assert_string_equal(pid_of(r.val[3]), pid_of(r.val[1]));
    assert_true(r.order[1] < r.order[3]);
    r.want = 5;
    assert_true(run_until(int_reaches, &r.done, 10));
    assert_string_not_equal(pid_of(r.val[1]), pid_of(r.val[0]));
    /* a2 and a3 waited for a1 and then went to A's home together, in order */
    assert_true(r.order[0] < r.order[2] && r.order[2] < r.order[4]);
    assert_string_not_equal(pid_of(r.val[2]), pid_of(r.val[0]));
    assert_string_equal(pid_of(r.val[4]), pid_of(r.val[2]));
    /* Nothing outstanding any more: A goes to its home. */
    route_q(pg, ka, "a4", 0, &s[5]);
    r.want = 6;
    assert_true(run_until(int_reaches, &r.done, 10));
    assert_string_equal(pid_of(r.val[5]), pid_of(r.val[2]));
    assert_string_not_equal(pid_of(r.val[5]), pid_of(r.val[1]));

    /* A key that is never free (its next append always queued while the previous one runs)
     * still moves: when its connection starts the next combined query, what the key has
     * queued there goes to the key's home instead. */
    pg_set_spread(pg, 1);
    route_q(pg, kb, "b3", 0.3, &s[6]);
    uv_run(&loop, UV_RUN_NOWAIT);                 /* b3 runs on the first connection */
    route_q(pg, kb, "b4", 0, &s[7]);              /* queued behind it, same connection */
    pg_set_spread(pg, 3);
    r.want = 8;
    assert_true(run_until(int_reaches, &r.done, 10));
    assert_string_equal(pid_of(r.val[6]), pid_of(r.val[0]));
    assert_string_equal(pid_of(r.val[7]), pid_of(r.val[1])); /* B's home, the third */
    assert_true(r.order[6] < r.order[7]);

    /* The first connection goes down: keys whose home it is go to the next one that is up at
     * once, instead of waiting for a reconnect. */
    char sql[96], pid0[16], pid1[16];
    snprintf(pid0, sizeof pid0, "%s", pid_of(r.val[0]));
    snprintf(pid1, sizeof pid1, "%s", pid_of(r.val[5])); /* A's home, the second */
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%s)", pid0);
    scalar(sql);
    assert_true(run_until(two_ready, pg, 10));
    pg_set_spread(pg, 1);
    route_q(pg, "k1", "k1", 0, &s[8]);
    r.want = 9;
    assert_true(run_until(int_reaches, &r.done, 1)); /* long before the 5 s reconnect */
    assert_string_equal(pid_of(r.val[8]), pid1);
    pg_set_spread(pg, 0);
    free_client(pg);
}

/* Load whose appends wait: round after round, a slow lone append of one key and, queued behind
 * it on the same connection, an append of another key that waits ~50 ms to be sent. */
typedef struct wait_load {
    pg_client *pg;
    int rounds; /* left to start */
    int outstanding, errors;
} wait_load;

static void wait_round(wait_load *w);

static void on_wait_row(void *ctx, const PGresult *res, int row, const char *err)
{
    (void)res;
    (void)row;
    wait_load *w = ctx;
    w->errors += err != NULL;
    if (--w->outstanding == 0 && w->rounds > 0)
        wait_round(w);
}

static void wait_round(wait_load *w)
{
    w->rounds--;
    w->outstanding += 2;
    /* a combine_sql of its own: never combined with the queued one, so always sent alone */
    pg_query_opts slow = {.combine_sql = ROUTE_SQL " -- slow", .combine_item = "{\"v\":\"s\"}",
                          .sql = "SELECT 's:' || pg_backend_pid() FROM pg_sleep(0.05)",
                          .row_cb = on_wait_row, .route_key = "wait-slow"};
    pg_query_opts queued = {.combine_sql = ROUTE_SQL, .combine_item = "{\"v\":\"q\"}",
                            .row_cb = on_wait_row, .route_key = "wait-queued"};
    pg_query_ex(w->pg, &slow, NULL, w);
    pg_query_ex(w->pg, &queued, NULL, w);
}

static bool spread_is_two(void *p)
{
    pg_stats st;
    pg_get_stats(p, &st);
    return st.spread == 2;
}

static bool load_over(void *p)
{
    wait_load *w = p;
    return w->rounds == 0 && w->outstanding == 0;
}

/* The spread grows from waits measured on real queries; pinned, it does not. */
static void test_spread_grows_with_waits(void **state)
{
    (void)state;
    NEED_DB();
    pg_client *pg = new_client(2);
    pg_set_spread(pg, 1);
    wait_load w = {.pg = pg, .rounds = 20}; /* ~1 s of waits of ~25 ms on average */
    wait_round(&w);
    assert_true(run_until(load_over, &w, 10));
    pg_stats st;
    pg_get_stats(pg, &st);
    assert_int_equal(st.spread, 1);
    pg_set_spread(pg, 0); /* adapt again */
    w.rounds = 100;
    wait_round(&w);
    assert_true(run_until(spread_is_two, pg, 10));
    w.rounds = 0;
    assert_true(run_until(load_over, &w, 10));
    assert_int_equal(w.errors, 0);
    free_client(pg);
}

static void test_combined_queries(void **state)
{
    (void)state;
    NEED_DB();
    pg_client *pg = new_client(1);
    const char *sql = "SELECT ((x->>'v')::int * 2)::text FROM jsonb_array_elements($1::jsonb) "
                      "WITH ORDINALITY t(x, o) ORDER BY o";
    const char *items[5] = {"{\"v\":1}", "{\"v\":2}", "{\"v\":3}", "{\"v\":4}", "{\"v\":5}"};
    row_result r = {.want = 5};
    row_slot s[8];
    for (int i = 0; i < 5; i++) {
        s[i] = (row_slot){&r, i};
        pg_query_opts q = {.combine_sql = sql, .combine_item = items[i], .row_cb = on_row};
        pg_query_ex(pg, &q, NULL, &s[i]);
    }
    assert_true(run_until(int_reaches, &r.done, 10));
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r.calls[i], 1);
        assert_int_equal(r.row[i], i); /* one combined query: rows 0..4 */
        char want[8];
        snprintf(want, sizeof want, "%d", 2 * (i + 1));
        assert_string_equal(r.val[i], want);
    }
    pg_stats st0;
    pg_get_stats(pg, &st0);

    row_result r2 = {.want = 3};
    const char *items2[3] = {"{\"v\":10}", "{\"v\":\"bad\"}", "{\"v\":30}"};
    for (int i = 0; i < 3; i++) {
        s[i] = (row_slot){&r2, i};
        pg_query_opts q = {.combine_sql = sql, .combine_item = items2[i], .row_cb = on_row};
        pg_query_ex(pg, &q, NULL, &s[i]);
    }
    assert_true(run_until(int_reaches, &r2.done, 10));
    assert_string_equal(r2.val[0], "20");
    assert_string_equal(r2.val[1], "ERR");
    assert_int_equal(r2.row[1], -1);
    assert_string_equal(r2.val[2], "60");
    assert_int_equal(r2.row[2], 0); /* re-sent alone */
    pg_stats st1;
    pg_get_stats(pg, &st1);
    assert_int_equal(st1.batches_retried, st0.batches_retried + 1);

    /* A lone request with a statement of its own is sent as that statement (row 0); requests
     * queued while it runs wait for it and then go together as one combined query. */
    const char *own_sql = "SELECT 'own' || $1";
    row_result r4 = {.want = 1};
    const char *own_param[1] = {"7"};
    s[0] = (row_slot){&r4, 0};
    pg_query_opts lone = {.sql = own_sql, .nparams = 1, .params = own_param,
                          .combine_sql = sql, .combine_item = items[0], .row_cb = on_row};
    pg_query_ex(pg, &lone, NULL, &s[0]);
    uv_run(&loop, UV_RUN_NOWAIT); /* sent, not yet answered */
    r4.want = 4;
    for (int i = 1; i < 4; i++) {
        s[i] = (row_slot){&r4, i};
        pg_query_opts q = lone;
        q.combine_item = items[i];
        pg_query_ex(pg, &q, NULL, &s[i]);
    }
    assert_true(run_until(int_reaches, &r4.done, 10));
    assert_string_equal(r4.val[0], "own7");
    assert_int_equal(r4.row[0], 0);
    for (int i = 1; i < 4; i++) {
        char want[8];
        snprintf(want, sizeof want, "%d", 2 * (i + 1));
        assert_string_equal(r4.val[i], want);
        assert_int_equal(r4.row[i], i - 1); /* one combined query: rows 0..2 */
        assert_int_equal(r4.calls[i], 1);
    }

    /* cancel a member of a combined query in flight */
    row_result r3 = {.want = 2};
    pg_req_id ids[3];
    for (int i = 0; i < 3; i++) {
        s[i] = (row_slot){&r3, i};
        pg_query_opts q = {.combine_sql = sql, .combine_item = items[i], .row_cb = on_row};
        ids[i] = pg_query_ex(pg, &q, NULL, &s[i]);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_true(pg_cancel(pg, ids[1]));
    assert_true(run_until(int_reaches, &r3.done, 10));
    assert_int_equal(r3.calls[1], 0);
    assert_string_equal(r3.val[2], "6");
    free_client(pg);
}

static int cancelled_ctx_freed;
static void on_cancel_hook(void *ctx)
{
    (void)ctx;
    cancelled_ctx_freed++;
}

static void test_cancel(void **state)
{
    (void)state;
    NEED_DB();
    pg_client *pg = new_client(1);
    q_result q = {.want = 2};
    q_slot s[3] = {{&q, 0}, {&q, 1}, {&q, 2}};
    pg_query_opts o = {.sql = "SELECT pg_sleep(0.05)", .on_cancel = on_cancel_hook};
    pg_query(pg, "SELECT 1", 0, NULL, on_query, &s[0]);
    pg_req_id id = pg_query_ex(pg, &o, on_query, &s[1]);
    pg_query(pg, "SELECT 3", 0, NULL, on_query, &s[2]);
    assert_true(pg_cancel(pg, id));      /* still pending: removed */
    assert_false(pg_cancel(pg, id));     /* unknown now */
    assert_int_equal(cancelled_ctx_freed, 1);
    assert_true(run_until(int_reaches, &q.done, 10));
    assert_int_equal(q.calls[1], 0);
    /* cancel while in flight: the query runs, the callback does not */
    q.want = 3;
    id = pg_query_ex(pg, &o, on_query, &s[1]);
    pg_query(pg, "SELECT 4", 0, NULL, on_query, &s[2]);
    uv_run(&loop, UV_RUN_NOWAIT); /* sends both */
    assert_true(pg_cancel(pg, id));
    assert_int_equal(cancelled_ctx_freed, 2);
    assert_true(run_until(int_reaches, &q.done, 10));
    assert_int_equal(q.calls[1], 0);
    assert_int_equal(q.calls[2], 2);
    free_client(pg);
}

/* pg_free with queries pending: every callback runs once with an error. */
static void test_free_fails_pending(void **state)
{
    (void)state;
    NEED_DB();
    pg_client *pg = new_client(2);
    q_result q = {.want = 3};
    q_slot s[3] = {{&q, 0}, {&q, 1}, {&q, 2}};
    for (int i = 0; i < 3; i++)
        pg_query(pg, "SELECT 1", 0, NULL, on_query, &s[i]);
    free_client(pg);
    assert_int_equal(q.done, 3);
    assert_int_equal(q.failed, 3);
}

static void test_message_json(void **state)
{
    (void)state;
    pg_message m = {.id = "m1", .chat_id = "c1", .seq = 3, .client_id = "k\"1",
                    .sender_type = "customer", .sender_id = "u", .sender_name = NULL,
                    .text = "hi\n", .attachments_json = "[]",
                    .created_at = "2026-01-02T03:04:05.678Z"};
    buf_t b;
    buf_init(&b);
    pg_message_to_json(&m, &b);
    assert_string_equal(b.data,
                        "{\"id\":\"m1\",\"chatId\":\"c1\",\"seq\":3,\"clientId\":\"k\\\"1\","
                        "\"sender\":{\"type\":\"customer\",\"id\":\"u\"},\"text\":\"hi\\n\","
                        "\"attachments\":[],\"createdAt\":\"2026-01-02T03:04:05.678Z\"}");
    buf_free(&b);
}

/* ------------------------------------------------------------------ outage */

static const char *services_dir(char *buf, size_t n)
{
    const char *d = getenv("CHATD_TEST_SERVICES_DIR");
    if (!d || !*d)
        d = getenv("TEST_SERVICES_DIR"); /* tests/run.sh */
    if (d && *d)
        return d;
    const char *data = getenv("PG_DATA"); /* DIR/pg/data */
    if (!data || !*data)
        return NULL;
    snprintf(buf, n, "%s", data);
    for (int k = 0; k < 2; k++) {
        char *slash = strrchr(buf, '/');
        if (!slash)
            return NULL;
        *slash = '\0';
    }
    return buf;
}

static int services(const char *cmd, const char *dir)
{
    char line[1024];
    const char *script = getenv("CHATD_SERVICES_SH") ? getenv("CHATD_SERVICES_SH")
                                                     : "tests/services.sh";
    snprintf(line, sizeof line, "bash %s %s '%s' >&2", script, cmd, dir);
    return system(line);
}

static bool all_ready(void *p)
{
    pg_stats st;
    pg_get_stats(p, &st);
    return st.connections_ready == 3;
}

static bool not_ready(void *p)
{
    return !pg_is_ready(p);
}

static void test_restart_recovers(void **state)
{
    (void)state;
    NEED_DB();
    char buf[512];
    const char *dir = services_dir(buf, sizeof buf);
    if (!dir || getenv("CHATD_TEST_NO_PG_RESTART")) {
        fprintf(stderr, "test_pg: no services dir (CHATD_TEST_SERVICES_DIR/PG_DATA), "
                        "skipping the restart test\n");
        skip();
    }
    pg_options o;
    pg_options_default(&o);
    o.pool_size = 3;
    o.backoff_max_ms = 500;
    pg_client *pg = pg_new(&loop, db_url, &o);
    assert_true(run_until(all_ready, pg, 10));
    char chat[64];
    new_chat(chat, sizeof chat, "assigned");
    PQfinish(admin);
    admin = NULL;

    /* Queries in flight when PostgreSQL goes away. */
    q_result q = {.want = 4};
    q_slot s[4] = {{&q, 0}, {&q, 1}, {&q, 2}, {&q, 3}};
    for (int i = 0; i < 4; i++) {
        /* all on one connection (same route key), one running, three queued behind it */
        pg_query_opts qo = {.sql = "SELECT pg_sleep(3)", .route_key = "same"};
        pg_query_ex(pg, &qo, on_query, &s[i]);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(services("stop-pg", dir), 0);
    double t_stop = now_s();
    assert_true(run_until(int_reaches, &q.done, 10));
    assert_true(now_s() - t_stop < 2.0); /* noticed at once, not by a timeout */
    assert_int_equal(q.failed, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(q.outcome[i], PG_OUTCOME_UNAVAILABLE);
    assert_true(run_until(not_ready, pg, 5));
    assert_false(pg_is_ready(pg));

    /* While it is down, appends answer unavailable quickly. */
    append_batch b = {.r = calloc(10, sizeof(append_result)), .want = 5};
    append_slot slots[10];
    double t0 = now_s();
    for (int i = 0; i < 5; i++) {
        char cid[16];
        snprintf(cid, sizeof cid, "down%d", i);
        send_append(pg, &b, slots, i, chat, cid, "lost");
    }
    assert_true(run_until(int_reaches, &b.done, 10));
    for (int i = 0; i < 5; i++)
        assert_int_equal(b.r[i].st, PG_APPEND_UNAVAILABLE);
    assert_true(now_s() - t0 < 5.0);

    /* Back up: the client reconnects by itself. */
    assert_int_equal(services("start-pg", dir), 0);
    assert_true(run_until(is_ready, pg, 15));
    b.want = 10;
    for (int i = 5; i < 10; i++) {
        char cid[16];
        snprintf(cid, sizeof cid, "up%d", i);
        send_append(pg, &b, slots, i, chat, cid, "back");
    }
    assert_true(run_until(int_reaches, &b.done, 10));
    for (int i = 5; i < 10; i++) {
        /* a connection may still be reconnecting: retry once if so */
        assert_int_equal(b.r[i].st, PG_APPEND_OK);
        assert_int_equal(b.r[i].seq, i - 4);
    }
    pg_stats st;
    pg_get_stats(pg, &st);
    assert_true(st.reconnects >= 1);
    free(b.r);
    free_client(pg);
    admin = PQconnectdb(db_url);
    assert_int_equal(PQstatus(admin), CONNECTION_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_json),
        cmocka_unit_test(test_migrate_idempotent),
        cmocka_unit_test(test_append_500_gap_free),
        cmocka_unit_test(test_append_throughput),
        cmocka_unit_test(test_append_closed_loop),
        cmocka_unit_test(test_append_idempotent),
        cmocka_unit_test(test_append_closed_and_not_found),
        cmocka_unit_test(test_append_owner_version),
        cmocka_unit_test(test_append_items_paths),
        cmocka_unit_test(test_append_one_paths),
        cmocka_unit_test(test_append_items_probe_per_item),
        cmocka_unit_test(test_query_errors_and_batch_retry),
        cmocka_unit_test(test_combined_queries),
        cmocka_unit_test(test_routing_spread),
        cmocka_unit_test(test_rehome_sends_at_once),
        cmocka_unit_test(test_long_pipeline_not_stuck),
        cmocka_unit_test(test_retry_keeps_chat_order),
        cmocka_unit_test(test_host_names),
        cmocka_unit_test(test_cancel_twice_during_retry),
        cmocka_unit_test(test_spread_grows_with_waits),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_free_fails_pending),
        cmocka_unit_test(test_restart_recovers),
    };
    if (getenv("CHATD_TEST_FILTER")) /* e.g. CHATD_TEST_FILTER='*restart*' */
        cmocka_set_test_filter(getenv("CHATD_TEST_FILTER"));
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
