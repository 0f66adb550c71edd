/* Inactivity timers of assigned chats (SPEC §4 inactivity-warning /
 * chat-closed, §7, §12.14; key layout in store/keys.h).
 *
 * An assigned chat has two timers, chat:{org}:timer:warn:CHAT and
 * chat:{org}:timer:close:CHAT, keys with PX = CHATD_INACTIVITY_WARN_S /
 * CHATD_INACTIVITY_CLOSE_S plus a member in the org's timers zset scored by
 * the deadline (lua/timer_arm.lua). They are armed at assignment
 * (timers_arm, called by the routing code), re-armed by every message of an
 * assigned chat (timers_on_message: a message resets both, and a message in
 * an assigned chat without timers starts them), and stopped by a close
 * (timers_on_closed) or when the chat leaves `assigned` (timers_disarm).
 *
 * Firing: every node sees the keyspace `expired` event of a timer key and
 * runs timer_claim; removing the zset member is the claim, so exactly one node
 * acts. The reconciler (presence engine, every PRESENCE_RECONCILE_MS and right
 * after start) claims timers overdue by more than PRESENCE_RECONCILE_GRACE_MS
 * whose notification was missed, e.g. while every node was down: the first
 * node to start acts on them.
 *
 *   warn   the chat is still assigned: a system message (persisted, then
 *          broadcast) and `inactivity-warning` {chatId, closesAt} to the room.
 *          Skipped when the close is due already (both overdue after an
 *          outage: a warning right before the close says nothing).
 *   close  chat_close(..., reason 'inactivity') for a chat still assigned,
 *          announced like close-chat (chat_announce_closed). When PostgreSQL
 *          fails the close timer is armed again CLOSE_RETRY_MS later, so a
 *          claimed close is never lost.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "gateway/chat_hooks.h"
#include "gateway/presence_internal.h"
#include "presence/presence.h"
#include "store/messages.h"

#define CLOSE_RETRY_MS 5000
#define REBUILD_RETRY_MS 2000

/* Module state, one per process (app->timers); freed when closing and no call
 * is in flight. */
typedef struct timers {
    chat_app *app;
    int pending; /* Redis and PostgreSQL calls in flight */
    bool closing;
    bool rebuild_wanted, rebuild_running; /* timers__tick */
    uint64_t rebuild_next;                /* uv_now of the next attempt */
    rk_argv argv;                         /* scratch; redis_eval copies it */
} timers;

/* One call in flight (copies only). */
typedef struct tcall {
    timers *ts;
    char *org, *chat_id;
    long long closes_at_ms; /* warn: the close deadline (Redis clock) */
} tcall;

static void maybe_free(timers *ts)
{
    if (ts->closing && ts->pending == 0) {
        rk_argv_free(&ts->argv);
        free(ts);
    }
}

static tcall *tcall_new(timers *ts, const char *org, const char *chat_id)
{
    tcall *c = xcalloc(1, sizeof *c);
    c->ts = ts;
    c->org = xstrdup(org);
    c->chat_id = xstrdup(chat_id);
    ts->pending++;
    return c;
}

/* Frees c, drops its pending count; returns true when the module is still live. */
static bool tcall_done(tcall *c)
{
    timers *ts = c->ts;
    free(c->org);
    free(c->chat_id);
    free(c);
    ts->pending--;
    bool live = !ts->closing;
    maybe_free(ts);
    return live;
}

static timers *live(chat_app *app)
{
    timers *ts = app->timers;
    return ts && !ts->closing ? ts : NULL;
}

static long long wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ISO-8601 UTC with milliseconds. */
static void iso_ms(long long ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

/* ---- Redis: arm / stop --------------------------------------------------------------- */

static void on_redis(void *ctx, redisReply *reply, const char *err)
{
    tcall *c = ctx;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        log_warn("timers: arm/stop of chat %s failed: %s", c->chat_id, err ? err : reply->str);
    tcall_done(c);
}

static void arm(timers *ts, const char *org, const char *chat_id, const pres_timer_spec *t,
                size_t n)
{
    if (n == 0 || pres_timer_build_arm(&ts->argv, org, chat_id, t, n) != RK_OK)
        return;
    pres_engine *e = presence__engine(ts->app);
    if (e)
        pres_engine_track_org(e, org); /* the reconciler looks at this org */
    redis_eval(ts->app->redis, &ts->argv, on_redis, tcall_new(ts, org, chat_id));
}

void timers_arm(chat_app *app, const char *org, const char *chat_id)
{
    timers *ts = live(app);
    if (!ts)
        return;
    long long warn = (long long)app->cfg->inactivity_warn_s * 1000;
    long long close = (long long)app->cfg->inactivity_close_s * 1000;
    pres_timer_spec t[2];
    size_t n = 0;
    if (warn > 0 && (close <= 0 || warn < close))
        t[n++] = (pres_timer_spec){"warn", warn};
    if (close > 0)
        t[n++] = (pres_timer_spec){"close", close};
    arm(ts, org, chat_id, t, n);
}

void timers_disarm(chat_app *app, const char *org, const char *chat_id)
{
    timers *ts = live(app);
    static const char *const kinds[] = {"warn", "close"};
    if (!ts || pres_timer_build_stop(&ts->argv, org, chat_id, kinds, 2) != RK_OK)
        return;
    redis_eval(app->redis, &ts->argv, on_redis, tcall_new(ts, org, chat_id));
}

/* ---- firing -------------------------------------------------------------------------- */

static void on_warn_appended(void *ctx, pg_append_status st, const pg_message *msg,
                             const pg_chat_state *chat, const char *err)
{
    tcall *c = ctx;
    chat_app *app = c->ts->app;
    if (c->ts->closing) {
        tcall_done(c);
        return;
    }
    if (st == PG_APPEND_OK) {
        buf_t b;
        buf_init(&b);
        pg_message_to_json(msg, &b);
        chat_emit_message(app, c->org, c->chat_id, msg->seq, b.data);
        char at[32];
        iso_ms(c->closes_at_ms, at);
        buf_reset(&b);
        buf_puts(&b, "{\"chatId\":");
        buf_json_str(&b, c->chat_id, strlen(c->chat_id));
        buf_printf(&b, ",\"closesAt\":\"%s\"}", at);
        char *room = chat_room(c->org, c->chat_id);
        chat_emit_room(app, room, "inactivity-warning", b.data, NULL, false);
        free(room);
        buf_free(&b);
    } else if (st != PG_APPEND_CLOSED) {
        log_warn("timers: inactivity warning of chat %s not stored: %s", c->chat_id,
                 err ? err : pg_append_status_str(st));
    }
    tcall_done(c);
}

static void on_warn_check(void *ctx, const PGresult *res, const char *err)
{
    tcall *c = ctx;
    timers *ts = c->ts;
    if (ts->closing || err || PQntuples(res) == 0 || strcmp(PQgetvalue(res, 0, 0), "assigned")) {
        if (err && !ts->closing)
            log_warn("timers: inactivity warning of chat %s skipped: %s", c->chat_id, err);
        tcall_done(c);
        return;
    }
    long long left_s = (c->closes_at_ms - wall_ms() + 999) / 1000;
    if (left_s < 1)
        left_s = 1;
    char text[160];
    if (left_s >= 120)
        snprintf(text, sizeof text,
                 "This chat will be closed for inactivity in %lld minutes unless someone writes.",
                 (left_s + 30) / 60);
    else
        snprintf(text, sizeof text,
                 "This chat will be closed for inactivity in %lld seconds unless someone writes.",
                 left_s);
    pg_append_req req = {
        .chat_id = c->chat_id,
        .org_id = c->org,
        .sender_type = "system",
        .text = text,
        .owner_version = -1,
    };
    pg_append_message(ts->app->pg, &req, on_warn_appended, c); /* c moves on */
}

static void on_close(void *ctx, const PGresult *res, const char *err)
{
    tcall *c = ctx;
    timers *ts = c->ts;
    if (ts->closing) {
        tcall_done(c);
        return;
    }
    if (err) {
        log_warn("timers: inactivity close of chat %s failed (retry in %d ms): %s", c->chat_id,
                 CLOSE_RETRY_MS, err);
        pres_timer_spec t = {"close", CLOSE_RETRY_MS};
        arm(ts, c->org, c->chat_id, &t, 1);
    } else if (PQntuples(res) > 0 && !strcmp(PQgetvalue(res, 0, 0), "ok")) {
        chat_announce_closed(ts->app, c->org, c->chat_id, res, "inactivity");
    }
    tcall_done(c);
}

/* Closes only a chat that is still assigned (a chat handed back to the queue
 * or the AI keeps going even if its timers were not stopped). */
static const char CLOSE_SQL[] = "SELECT r.* FROM chats c CROSS JOIN LATERAL"
                                " chat_close(c.id, c.org_id, NULL, NULL, 'inactivity', $3) r"
                                " WHERE c.id = $1 AND c.org_id = $2 AND c.status = 'assigned'";

void timers__fire(chat_app *app, const char *org, const char *kind, const char *chat_id,
                  long long deadline_ms)
{
    timers *ts = live(app);
    if (!ts)
        return;
    if (!strcmp(kind, "warn")) {
        long long gap =
            ((long long)app->cfg->inactivity_close_s - (long long)app->cfg->inactivity_warn_s) *
            1000;
        long long closes_at = deadline_ms + gap;
        if (gap <= 0 || closes_at <= wall_ms() + 100)
            return; /* the close is due: no warning right before it */
        tcall *c = tcall_new(ts, org, chat_id);
        c->closes_at_ms = closes_at;
        const char *params[2] = {chat_id, org};
        pg_query(app->pg, "SELECT status FROM chats WHERE id = $1 AND org_id = $2", 2, params,
                 on_warn_check, c);
    } else if (!strcmp(kind, "close")) {
        const char *params[3] = {chat_id, org, "The chat was closed for inactivity"};
        pg_query_opts q = {.sql = CLOSE_SQL, .nparams = 3, .params = params, .route_key = chat_id};
        pg_query_ex(app->pg, &q, on_close, tcall_new(ts, org, chat_id));
    } else {
        log_warn("timers: no handler for timer kind %s (chat %s)", kind, chat_id);
    }
}

/* ---- rebuild from PostgreSQL ---------------------------------------------------------- */

/* Every assigned chat with the deadlines its timers should have: from the
 * later of its assignment and its last customer/agent message (system
 * messages such as the warning itself are no activity). The newest non-system
 * message is found by a backward scan of the (chat_id, seq) index. */
static const char REBUILD_SQL[] =
    "SELECT c.org_id, c.id,"
    " (extract(epoch FROM greatest(c.assigned_at, (SELECT m.created_at FROM messages m"
    "   WHERE m.chat_id = c.id AND m.sender_type <> 'system' ORDER BY m.seq DESC LIMIT 1)))"
    "   * 1000)::bigint,"
    " (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    " FROM chats c WHERE c.status = 'assigned'";

static void on_rebuild(void *ctx, const PGresult *res, const char *err)
{
    timers *ts = ctx;
    ts->pending--;
    ts->rebuild_running = false;
    if (ts->closing || err) {
        if (err && !ts->closing) {
            log_warn("timers: rebuild from PostgreSQL failed (retry in %d ms): %s",
                     REBUILD_RETRY_MS, err);
            ts->rebuild_next = uv_now(ts->app->loop) + REBUILD_RETRY_MS;
        }
        maybe_free(ts);
        return;
    }
    ts->rebuild_wanted = false;
    chat_app *app = ts->app;
    long long warn = (long long)app->cfg->inactivity_warn_s * 1000;
    long long close = (long long)app->cfg->inactivity_close_s * 1000;
    int n = PQntuples(res);
    for (int r = 0; r < n; r++) {
        if (PQgetisnull(res, r, 2))
            continue;
        const char *org = PQgetvalue(res, r, 0), *chat_id = PQgetvalue(res, r, 1);
        long long base = atoll(PQgetvalue(res, r, 2)), now = atoll(PQgetvalue(res, r, 3));
        pres_timer_spec t[2];
        size_t k = 0;
        /* a warning whose time has passed is not repeated (it may have been sent) */
        if (warn > 0 && (close <= 0 || warn < close) && base + warn > now)
            t[k++] = (pres_timer_spec){"warn", base + warn - now};
        if (close > 0)
            t[k++] = (pres_timer_spec){"close", base + close > now ? base + close - now : 1};
        arm(ts, org, chat_id, t, k);
    }
    if (n)
        log_info("timers: %d assigned chat(s) re-armed from PostgreSQL", n);
}

/* Every 100 ms from the presence module (redis_ready: the command connection
 * is up; became_ready: it just came up, at start or after an outage). Redis
 * may have lost the timers (a restart without persistence), so after each
 * (re)connect every assigned chat's timers are armed again from PostgreSQL
 * with the deadlines they should have; overdue closes fire at once (exactly
 * once: claims). Re-arming timers that Redis kept sets the same deadlines.
 * A failed query is retried every REBUILD_RETRY_MS. */
void timers__tick(chat_app *app, bool redis_ready, bool became_ready)
{
    timers *ts = live(app);
    if (!ts || (app->cfg->inactivity_close_s <= 0 && app->cfg->inactivity_warn_s <= 0))
        return;
    if (became_ready)
        ts->rebuild_wanted = true;
    if (!ts->rebuild_wanted || !redis_ready || ts->rebuild_running ||
        uv_now(app->loop) < ts->rebuild_next)
        return;
    ts->rebuild_running = true;
    ts->pending++;
    pg_query(app->pg, REBUILD_SQL, 0, NULL, on_rebuild, ts);
}

/* ---- hooks --------------------------------------------------------------------------- */

void timers_start(chat_app *app)
{
    if (app->timers || !app->redis)
        return;
    timers *ts = xcalloc(1, sizeof *ts);
    ts->app = app;
    rk_argv_init(&ts->argv, RK_NO_SCRIPT);
    app->timers = ts;
}

void timers_stop(chat_app *app)
{
    timers *ts = app->timers;
    if (!ts)
        return;
    app->timers = NULL;
    ts->closing = true;
    maybe_free(ts);
}

void timers_on_message(chat_app *app, const char *org, const char *chat_id, const char *status,
                       const char *sender_type)
{
    (void)sender_type;
    if (status && !strcmp(status, "assigned"))
        timers_arm(app, org, chat_id); /* resets both, or starts them */
}

void timers_on_closed(chat_app *app, const char *org, const char *chat_id)
{
    timers_disarm(app, org, chat_id);
}

bool timers_on_expired(chat_app *app, const char *key, size_t len)
{
    /* chat:{ORG}:timer:warn:CHAT | chat:{ORG}:timer:close:CHAT; other kinds
     * (the routing module's "reply") are left to the next handler */
    if (len < 8 || memcmp(key, "chat:{", 6) != 0 ||
        (!memmem(key, len, "}:timer:warn:", 13) && !memmem(key, len, "}:timer:close:", 14)))
        return false;
    pres_engine *e = presence__engine(app);
    if (e)
        pres_engine_on_expired(e, key, len);
    return true;
}
