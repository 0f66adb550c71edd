/* Agent console operations and the customer's request-agent (issue 5, SPEC
 * §4, §5, §12.9, §12.11): pick-next, transfer-chat, request-agent, and the
 * AI's hand-off entry point queue_handoff(). The order of the writes in
 * Redis and PostgreSQL is explained in gateway/queue_internal.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "gateway/chat_hooks.h"
#include "gateway/queue_internal.h"
#include "queue/queue.h"
#include "store/messages.h"

#define PICK_TRIES 5
#define MAX_SKILLS 32

/* One agent operation in flight. The socket may leave meanwhile: what was
 * decided is still carried out (and announced), only the ack is lost. */
typedef struct agent_op {
    chat_op *op;
    chat_app *app;
    char *org, *agent, *name; /* the caller */
    char *skills;             /* pick: effective skills; transfer: toSkills csv */
    char *target;             /* transfer: toAgentId */
    char *note;
    int max_chats;
    int tries;
    q_pick_result pick;
    bool have_pick;
} agent_op;

static agent_op *agent_op_new(chat_sock *cs, const sio_event *ev, const char *chat_id)
{
    agent_op *a = xcalloc(1, sizeof *a);
    a->op = chat_op_new(cs->s, ev->ack_id, chat_id);
    a->app = cs->app;
    a->org = xstrdup(cs->p.org);
    a->agent = xstrdup(cs->p.role == AUTH_ROLE_AGENT ? cs->p.sub : cs->p.key);
    a->name = cs->p.name ? xstrdup(cs->p.name) : NULL;
    a->max_chats = cs->p.max_chats; /* auth: the claim (0 = takes no chats), else 3 */
    return a;
}

static void agent_op_free(agent_op *a)
{
    if (!a)
        return;
    chat_op_free(a->op);
    free(a->org);
    free(a->agent);
    free(a->name);
    free(a->skills);
    free(a->target);
    free(a->note);
    if (a->have_pick)
        q_pick_result_free(&a->pick);
    free(a);
}

static bool redis_up(chat_app *app)
{
    return app->redis && redis_is_ready(app->redis);
}

static void ack_redis_error(agent_op *a, enum rk_status st, const redisReply *reply)
{
    if (st == RK_ERR_UNAVAILABLE) {
        chat_ack_err(a->op->s, a->op->ack_id, "unavailable", "queue unavailable, try again");
    } else {
        log_warn("queue: script failed: %s %s", rk_strerror(st),
                 reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        chat_ack_err(a->op->s, a->op->ack_id, "internal", "internal error");
    }
}

/* A JSON array of strings into a normalised csv (appended to out). Returns
 * false when v is not an array of strings without ','. */
static bool skills_from_json(const cJSON *v, buf_t *out)
{
    const char *items[MAX_SKILLS];
    size_t n = 0;
    if (!cJSON_IsArray(v))
        return false;
    for (const cJSON *e = v->child; e; e = e->next) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, ',') || n == MAX_SKILLS)
            return false;
        items[n++] = e->valuestring;
    }
    return rk_skills_csv(out, items, n) == RK_OK;
}

/* "a,b" -> PostgreSQL text[] literal {"a","b"} (appended to out). */
static void pg_array(buf_t *out, const char *csv)
{
    buf_putc(out, '{');
    const char *p = csv;
    bool first = true;
    while (p && *p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n) {
            if (!first)
                buf_putc(out, ',');
            buf_putc(out, '"');
            for (size_t i = 0; i < n; i++) {
                if (p[i] == '"' || p[i] == '\\')
                    buf_putc(out, '\\');
                buf_putc(out, p[i]);
            }
            buf_putc(out, '"');
            first = false;
        }
        p += n + (e ? 1 : 0);
    }
    buf_putc(out, '}');
}

static void leave_room(chat_app *app, const char *org, const char *agent, const char *chat_id)
{
    buf_t ident, room;
    buf_init(&ident);
    buf_init(&room);
    buf_printf(&ident, "identity:%s:agent:%s", org, agent);
    buf_printf(&room, "chat:%s:%s", org, chat_id);
    chat_identity_leave(app, ident.data, room.data);
    buf_free(&ident);
    buf_free(&room);
}

static void join_room(chat_app *app, const char *org, const char *agent, const char *chat_id)
{
    buf_t ident, room;
    buf_init(&ident);
    buf_init(&room);
    buf_printf(&ident, "identity:%s:agent:%s", org, agent);
    buf_printf(&room, "chat:%s:%s", org, chat_id);
    chat_identity_join(app, ident.data, room.data);
    buf_free(&ident);
    buf_free(&room);
}

/* ---- pick-next ------------------------------------------------------------------------- */

static void pick_once(agent_op *a);

static void on_last_messages(void *ctx, const PGresult *res, const char *err)
{
    agent_op *a = ctx;
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "\"chat\":");
    buf_puts(&b, a->op->str);
    buf_puts(&b, ",\"messages\":[");
    for (int r = 0; !err && r < PQntuples(res); r++) {
        pg_message m;
        if (pg_message_from_row(res, r, &m) != 0)
            continue;
        if (r)
            buf_putc(&b, ',');
        pg_message_to_json(&m, &b);
    }
    buf_putc(&b, ']');
    if (err)
        log_warn("pick-next: last messages of %s: %s", a->op->chat_id, err);
    chat_ack_ok(a->op->s, a->op->ack_id, b.data);
    buf_free(&b);
    agent_op_free(a);
}

static const char LAST50_SQL[] =
    "SELECT * FROM (SELECT " PG_MESSAGE_COLUMNS " FROM messages WHERE chat_id = $1"
    " ORDER BY seq DESC LIMIT 50) m ORDER BY seq";

static void on_release_logged(void *ctx, redisReply *reply, const char *err)
{
    (void)ctx;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        log_warn("pick-next: Redis undo failed: %s", err ? err : reply->str);
}

static void on_assigned(void *ctx, const PGresult *res, const char *err)
{
    agent_op *a = ctx;
    chat_app *app = a->app;
    q_pick_result *p = &a->pick;
    rk_argv argv;
    rk_argv_init(&argv, RK_NO_SCRIPT);
    if (err) {
        /* not assigned in PostgreSQL (as far as we know): back to its place in the queue */
        if (q_build_requeue_restore(&argv, a->org, p->chat_id, p->priority, p->enqueued_at_ms,
                                    p->skills, app->cfg->default_handle_time_s) == RK_OK)
            redis_eval(app->redis, &argv, on_release_logged, NULL);
        rk_argv_free(&argv);
        chat_op_fail(a->op, err, res);
        agent_op_free(a);
        return;
    }
    const char *result = PQntuples(res) ? PQgetvalue(res, 0, 0) : "not_found";
    if (strcmp(result, "ok") != 0) {
        /* the chat left the queue in PostgreSQL (closed, taken over): drop the Redis pick
         * (frees the capacity it took) and try the next one */
        log_info("pick-next: %s is %s in PostgreSQL, releasing the Redis pick", p->chat_id,
                 PQntuples(res) && !PQgetisnull(res, 0, 1) ? PQgetvalue(res, 0, 1) : "missing");
        if (q_build_release(&argv, a->org, p->chat_id, false, app->cfg->default_handle_time_s, NULL,
                            0) == RK_OK)
            redis_eval(app->redis, &argv, on_release_logged, NULL);
        rk_argv_free(&argv);
        q_pick_result_free(p);
        a->have_pick = false;
        if (++a->tries >= PICK_TRIES) {
            chat_ack_ok(a->op->s, a->op->ack_id, "\"chat\":null");
            agent_op_free(a);
            return;
        }
        pick_once(a);
        return;
    }
    rk_argv_free(&argv);
    const char *chat_id = p->chat_id;
    join_room(app, a->org, a->agent, chat_id);
    queue__emit_row_message(app, a->org, res);
    buf_t ag;
    buf_init(&ag);
    queue__agent_json(&ag, a->agent, a->name);
    chat_emit_state(app, a->org, chat_id, "assigned", ag.data, NULL);
    buf_free(&ag);
    queue__notify(app, a->org, "picked", chat_id, p->skills, p->priority, p->enqueued_at_ms,
                  p->queue_length);
    queue__changed(app, a->org);
    queue__reply_arm(app, a->org, chat_id, false);
    timers_arm(app, a->org, chat_id);
    a->op->str = xstrdup(PQgetvalue(res, 0, 3)); /* chat object */
    const char *params[1] = {chat_id};
    pg_query_opts q = {.sql = LAST50_SQL, .nparams = 1, .params = params, .route_key = chat_id};
    pg_query_ex(app->pg, &q, on_last_messages, a);
}

static void on_picked(void *ctx, redisReply *reply, const char *err)
{
    agent_op *a = ctx;
    chat_app *app = a->app;
    q_pick_result p;
    enum rk_status st = q_decode_pick(reply, &p);
    if (st != RK_OK) {
        ack_redis_error(a, st, reply);
        agent_op_free(a);
        return;
    }
    if (p.kind != Q_PICK_OK) {
        q_pick_result_free(&p);
        chat_ack_ok(a->op->s, a->op->ack_id, "\"chat\":null");
        agent_op_free(a);
        return;
    }
    a->pick = p;
    a->have_pick = true;
    char at[32];
    snprintf(at, sizeof at, "%lld", p.assigned_at_ms);
    const char *params[5] = {p.chat_id, a->org, a->agent, a->name, at};
    pg_query_opts q = {.sql = "SELECT * FROM chat_assign($1, $2, $3, $4, $5::bigint)",
                       .nparams = 5,
                       .params = params,
                       .route_key = p.chat_id};
    pg_query_ex(app->pg, &q, on_assigned, a);
}

static void pick_once(agent_op *a)
{
    rk_argv argv;
    rk_argv_init(&argv, RK_SCRIPT_QUEUE_PICK);
    if (!redis_up(a->app) ||
        q_build_pick(&argv, a->org, a->agent, a->max_chats, a->skills) != RK_OK) {
        rk_argv_free(&argv);
        chat_ack_err(a->op->s, a->op->ack_id, "unavailable", "queue unavailable, try again");
        agent_op_free(a);
        return;
    }
    redis_eval(a->app->redis, &argv, on_picked, a);
    rk_argv_free(&argv);
}

void chat_on_pick_next(chat_sock *cs, const sio_event *ev)
{
    const cJSON *narrow = cJSON_GetObjectItemCaseSensitive(ev->args, "skills");
    buf_t want, mine;
    buf_init(&want);
    buf_init(&mine);
    const char *tok[MAX_SKILLS];
    size_t nt = 0;
    for (size_t i = 0; i < cs->p.nskills && nt < MAX_SKILLS; i++)
        if (cs->p.skills[i] && !strchr(cs->p.skills[i], ','))
            tok[nt++] = cs->p.skills[i];
    (void)rk_skills_csv(&mine, tok, nt);
    if (narrow && !cJSON_IsNull(narrow)) {
        if (!skills_from_json(narrow, &want)) {
            buf_free(&want);
            buf_free(&mine);
            chat_ack_err(cs->s, ev->ack_id, "bad_request", "skills must be an array of strings");
            return;
        }
        /* narrowing: only the token's skills that are also asked for */
        buf_t eff;
        buf_init(&eff);
        const char *mtok[MAX_SKILLS];
        size_t nm = 0;
        char *copy = xstrdup(mine.data ? mine.data : "");
        char *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            char *w = xstrdup(want.data ? want.data : "");
            char *save2 = NULL;
            for (char *u = strtok_r(w, ",", &save2); u; u = strtok_r(NULL, ",", &save2))
                if (!strcmp(t, u) && nm < MAX_SKILLS)
                    mtok[nm++] = t;
            free(w);
        }
        (void)rk_skills_csv(&eff, mtok, nm);
        buf_reset(&mine);
        buf_puts(&mine, eff.data ? eff.data : "");
        buf_free(&eff);
        free(copy);
    }
    agent_op *a = agent_op_new(cs, ev, NULL);
    a->skills = xstrdup(mine.data ? mine.data : "");
    buf_free(&want);
    buf_free(&mine);
    pick_once(a);
}

/* ---- transfer-chat ----------------------------------------------------------------------- */

static void on_transfer_to_queue(void *ctx, const PGresult *res, const char *err)
{
    agent_op *a = ctx;
    chat_app *app = a->app;
    if (err) {
        chat_op_fail(a->op, err, res);
        agent_op_free(a);
        return;
    }
    const char *result = PQntuples(res) ? PQgetvalue(res, 0, 0) : "not_found";
    if (!strcmp(result, "ok")) {
        const char *chat_id = a->op->chat_id;
        queue__emit_row_message(app, a->org, res);
        leave_room(app, a->org, a->agent, chat_id);
        queue__reply_stop(app, a->org, chat_id);
        timers_disarm(app, a->org, chat_id);
        queue__requeue_redis(app, a->org, chat_id, "skills", PQgetvalue(res, 0, 4),
                             atoi(PQgetvalue(res, 0, 5)), atoll(PQgetvalue(res, 0, 6)));
        chat_ack_ok(a->op->s, a->op->ack_id, NULL);
    } else if (!strcmp(result, "forbidden")) {
        chat_ack_err(a->op->s, a->op->ack_id, "forbidden", "only the assigned agent may transfer");
    } else if (!strcmp(result, "conflict")) {
        chat_ack_err(a->op->s, a->op->ack_id, "conflict", "the chat is closed");
    } else {
        chat_ack_err(a->op->s, a->op->ack_id, "not_found", "no such chat");
    }
    agent_op_free(a);
}

static void transfer_to_queue(agent_op *a)
{
    buf_t arr, text;
    buf_init(&arr);
    buf_init(&text);
    pg_array(&arr, a->skills);
    buf_printf(&text, "%s transferred the chat to the queue", a->name ? a->name : a->agent);
    if (*a->skills) {
        buf_puts(&text, " (skills: ");
        for (const char *p = a->skills; *p; p++)
            buf_puts(&text, *p == ',' ? ", " : (char[]){*p, 0});
        buf_putc(&text, ')');
    }
    if (a->note && *a->note)
        buf_printf(&text, ": %s", a->note);
    const char *params[8] = {a->op->chat_id, a->org,   "skills",  NULL,
                             a->agent,       arr.data, text.data, a->note};
    pg_query_opts q = {.sql = "SELECT * FROM chat_requeue($1, $2, $3, $4, $5, $6::text[], $7, $8)",
                       .nparams = 8,
                       .params = params,
                       .route_key = a->op->chat_id};
    pg_query_ex(a->app->pg, &q, on_transfer_to_queue, a);
    buf_free(&arr);
    buf_free(&text);
}

/* Undo of a Redis transfer to an agent that PostgreSQL did not take: one script, which undoes
 * only while the transfer's assignment stands (a close in between has released it already). */
static void undo_agent_transfer(agent_op *a)
{
    rk_argv argv;
    rk_argv_init(&argv, RK_NO_SCRIPT);
    if (q_build_untransfer(&argv, a->org, a->op->chat_id, a->agent, a->target) == RK_OK)
        redis_eval(a->app->redis, &argv, on_release_logged, NULL);
    else
        log_warn("queue: undo of the transfer of %s not built", a->op->chat_id);
    rk_argv_free(&argv);
}

static void on_transfer_agent_pg(void *ctx, const PGresult *res, const char *err)
{
    agent_op *a = ctx;
    chat_app *app = a->app;
    const char *result = err ? "error" : PQntuples(res) ? PQgetvalue(res, 0, 0) : "not_found";
    if (strcmp(result, "ok") != 0) {
        undo_agent_transfer(a);
        if (err)
            chat_op_fail(a->op, err, res);
        else if (!strcmp(result, "conflict"))
            chat_ack_err(a->op->s, a->op->ack_id, "conflict", "the chat is closed");
        else if (!strcmp(result, "forbidden"))
            chat_ack_err(a->op->s, a->op->ack_id, "forbidden",
                         "only the assigned agent may transfer");
        else
            chat_ack_err(a->op->s, a->op->ack_id, "not_found", "no such chat");
        agent_op_free(a);
        return;
    }
    const char *chat_id = a->op->chat_id;
    /* the target joins first so it gets the message; the old agent leaves after it */
    join_room(app, a->org, a->target, chat_id);
    queue__emit_row_message(app, a->org, res);
    buf_t ag;
    buf_init(&ag);
    queue__agent_json(&ag, a->target, PQgetvalue(res, 0, 1));
    chat_emit_state(app, a->org, chat_id, "assigned", ag.data, NULL);
    buf_free(&ag);
    leave_room(app, a->org, a->agent, chat_id);
    queue__reply_arm(app, a->org, chat_id, false);
    timers_arm(app, a->org, chat_id);
    queue__changed(app, a->org); /* availability changed for the ETA */
    buf_t f;
    buf_init(&f);
    buf_puts(&f, "\"chat\":");
    buf_puts(&f, PQgetvalue(res, 0, 3));
    chat_ack_ok(a->op->s, a->op->ack_id, f.data);
    buf_free(&f);
    agent_op_free(a);
}

/* The target's display name, when one of its sockets is on this node. */
static void local_agent_name(void *ctx, sio_socket *s)
{
    char **name = ctx;
    chat_sock *cs = sio_get_user(s);
    if (!*name && cs && cs->p.name)
        *name = xstrdup(cs->p.name);
}

static void transfer_agent_pg(agent_op *a, const char *name)
{
    const char *params[6] = {a->op->chat_id, a->org, a->agent, a->target, name, a->note};
    pg_query_opts q = {.sql = "SELECT * FROM chat_transfer_agent($1, $2, $3, $4, $5, $6)",
                       .nparams = 6,
                       .params = params,
                       .route_key = a->op->chat_id};
    pg_query_ex(a->app->pg, &q, on_transfer_agent_pg, a);
}

static void on_target_name(void *ctx, redisReply *reply, const char *err)
{
    agent_op *a = ctx;
    if (!reply && !a->app->queue) { /* shutting down: PostgreSQL is gone already */
        agent_op_free(a);
        return;
    }
    transfer_agent_pg(a, reply && reply->type == REDIS_REPLY_STRING ? reply->str : NULL);
}

static void on_transfer_agent_redis(void *ctx, redisReply *reply, const char *err)
{
    agent_op *a = ctx;
    chat_app *app = a->app;
    q_transfer_result t;
    enum rk_status st = q_decode_transfer(reply, &t);
    if (st != RK_OK) {
        ack_redis_error(a, st, reply);
        agent_op_free(a);
        return;
    }
    if (t.kind != Q_TRANSFER_ASSIGNED) {
        char msg[128];
        snprintf(msg, sizeof msg, "the target agent cannot take it (%s)",
                 t.kind == Q_TRANSFER_REFUSED ? q_refusal_str(t.refusal) : "unexpected");
        q_transfer_result_free(&t);
        chat_ack_err(a->op->s, a->op->ack_id, "conflict", msg);
        agent_op_free(a);
        return;
    }
    q_transfer_result_free(&t);
    char *name = NULL;
    buf_t ident;
    buf_init(&ident);
    buf_printf(&ident, "identity:%s:agent:%s", a->org, a->target);
    sio_room_foreach(app->nsp, ident.data, local_agent_name, &name);
    buf_free(&ident);
    if (name) {
        transfer_agent_pg(a, name);
        free(name);
        return;
    }
    /* connected elsewhere: the name its sockets registered (queue_on_connect) */
    buf_t k;
    buf_init(&k);
    rk_key(&k, a->org, "agentname");
    redis_cmd(app->redis, on_target_name, a, "HGET", k.data, a->target, NULL);
    buf_free(&k);
}

/* Caller checked (assigned agent) before anything moves in Redis. */
static void on_transfer_owner(void *ctx, const PGresult *res, const char *err)
{
    agent_op *a = ctx;
    if (err) {
        chat_op_fail(a->op, err, res);
        agent_op_free(a);
        return;
    }
    if (PQntuples(res) == 0) {
        chat_ack_err(a->op->s, a->op->ack_id, "not_found", "no such chat");
    } else if (!strcmp(PQgetvalue(res, 0, 0), "closed")) {
        chat_ack_err(a->op->s, a->op->ack_id, "conflict", "the chat is closed");
    } else if (strcmp(PQgetvalue(res, 0, 0), "assigned") != 0 || PQgetisnull(res, 0, 1) ||
               strcmp(PQgetvalue(res, 0, 1), a->agent) != 0) {
        chat_ack_err(a->op->s, a->op->ack_id, "forbidden", "only the assigned agent may transfer");
    } else if (!redis_up(a->app)) {
        chat_ack_err(a->op->s, a->op->ack_id, "unavailable", "queue unavailable, try again");
    } else {
        rk_argv argv;
        rk_argv_init(&argv, RK_SCRIPT_QUEUE_TRANSFER);
        if (q_build_transfer_agent(&argv, a->org, a->op->chat_id, a->target,
                                   atoi(PQgetvalue(res, 0, 2)), atoll(PQgetvalue(res, 0, 3)),
                                   a->app->cfg->default_handle_time_s) == RK_OK) {
            redis_eval(a->app->redis, &argv, on_transfer_agent_redis, a);
            rk_argv_free(&argv);
            return;
        }
        rk_argv_free(&argv);
        chat_ack_err(a->op->s, a->op->ack_id, "bad_request", "bad toAgentId");
    }
    agent_op_free(a);
}

void chat_on_transfer(chat_sock *cs, const sio_event *ev)
{
    const cJSON *pl = ev->args;
    const char *chat_id = chat_json_str(pl, "chatId");
    const cJSON *to_agent = cJSON_GetObjectItemCaseSensitive(pl, "toAgentId");
    const cJSON *to_skills = cJSON_GetObjectItemCaseSensitive(pl, "toSkills");
    const cJSON *note = cJSON_GetObjectItemCaseSensitive(pl, "note");
    bool has_agent = to_agent && !cJSON_IsNull(to_agent);
    bool has_skills = to_skills && !cJSON_IsNull(to_skills);
    buf_t sk;
    buf_init(&sk);
    if (!chat_id || has_agent == has_skills ||
        (has_agent && (!cJSON_IsString(to_agent) || !*to_agent->valuestring)) ||
        (has_skills && !skills_from_json(to_skills, &sk)) ||
        (note && !cJSON_IsNull(note) && !cJSON_IsString(note))) {
        buf_free(&sk);
        chat_ack_err(cs->s, ev->ack_id, "bad_request",
                     "need {chatId, toAgentId | toSkills:[...], note?}");
        return;
    }
    agent_op *a = agent_op_new(cs, ev, chat_id);
    if (cJSON_IsString(note)) {
        /* at most 1,000 bytes, cut between characters: half a character is not text to
         * PostgreSQL (the transfer answered `internal`) */
        const char *v = note->valuestring;
        size_t n = strnlen(v, 1000);
        while (n > 0 && ((unsigned char)v[n] & 0xC0) == 0x80)
            n--;
        a->note = xstrndup(v, n);
    }
    if (has_skills) {
        a->skills = xstrdup(sk.data ? sk.data : "");
        buf_free(&sk);
        transfer_to_queue(a);
        return;
    }
    buf_free(&sk);
    a->target = xstrdup(to_agent->valuestring);
    if (!strcmp(a->target, a->agent)) {
        chat_ack_err(cs->s, ev->ack_id, "conflict", "the chat is yours already");
        agent_op_free(a);
        return;
    }
    const char *params[2] = {chat_id, cs->p.org};
    pg_query_opts q = {.sql =
                           "SELECT status, agent_id, priority,"
                           " (extract(epoch FROM coalesce(enqueued_at, created_at)) * 1000)::bigint"
                           " FROM chats WHERE id = $1 AND org_id = $2",
                       .nparams = 2,
                       .params = params,
                       .route_key = chat_id};
    pg_query_ex(cs->app->pg, &q, on_transfer_owner, a);
}

/* ---- request-agent / AI hand-off ------------------------------------------------------------ */

static void on_requeue_request(void *ctx, const PGresult *res, const char *err)
{
    agent_op *a = ctx;
    if (err) {
        chat_op_fail(a->op, err, res);
        agent_op_free(a);
        return;
    }
    const char *result = PQntuples(res) ? PQgetvalue(res, 0, 0) : "not_found";
    if (!strcmp(result, "ok")) {
        queue__emit_row_message(a->app, a->org, res);
        queue__enqueue(a->app, a->org, a->op->chat_id, atoi(PQgetvalue(res, 0, 5)),
                       PQgetvalue(res, 0, 4), atoll(PQgetvalue(res, 0, 6)));
        chat_ack_ok(a->op->s, a->op->ack_id, NULL);
    } else if (!strcmp(result, "conflict")) {
        const char *prev = PQgetisnull(res, 0, 1) ? "" : PQgetvalue(res, 0, 1);
        char msg[96];
        snprintf(msg, sizeof msg, "the chat is %s, not with the assistant", prev);
        chat_ack_err(a->op->s, a->op->ack_id, "conflict", msg);
    } else {
        chat_ack_err(a->op->s, a->op->ack_id, "not_found", "no such chat");
    }
    agent_op_free(a);
}

static const char REQUEST_SQL[] =
    "SELECT * FROM chat_requeue($1, $2, 'request', $3, NULL, $4::text[], $5, NULL)";

void chat_on_request_agent(chat_sock *cs, const sio_event *ev)
{
    const char *chat_id = chat_json_str(ev->args, "chatId");
    if (!chat_id) {
        chat_ack_err(cs->s, ev->ack_id, "bad_request", "need {chatId}");
        return;
    }
    agent_op *a = agent_op_new(cs, ev, chat_id);
    const char *params[5] = {chat_id, cs->p.org, cs->p.key, NULL,
                             "The customer asked for an agent"};
    pg_query_opts q = {.sql = REQUEST_SQL, .nparams = 5, .params = params, .route_key = chat_id};
    pg_query_ex(cs->app->pg, &q, on_requeue_request, a);
}

/* The AI's transfer_chat_to_agent tool (and provider failures): same as
 * request-agent, as the system. skills_csv NULL keeps the chat's skills. */
struct handoff_ctx {
    chat_app *app;
    char *org, *chat_id;
};

static void on_handoff(void *ctx, const PGresult *res, const char *err)
{
    struct handoff_ctx *h = ctx;
    if (err)
        log_warn("queue: hand-off of %s failed: %s", h->chat_id, err);
    else if (PQntuples(res) && !strcmp(PQgetvalue(res, 0, 0), "ok")) {
        queue__emit_row_message(h->app, h->org, res);
        queue__enqueue(h->app, h->org, h->chat_id, atoi(PQgetvalue(res, 0, 5)),
                       PQgetvalue(res, 0, 4), atoll(PQgetvalue(res, 0, 6)));
    }
    free(h->org);
    free(h->chat_id);
    free(h);
}

void queue_handoff(chat_app *app, const char *org, const char *chat_id, const char *skills_csv,
                   const char *text)
{
    struct handoff_ctx *h = xcalloc(1, sizeof *h);
    h->app = app;
    h->org = xstrdup(org);
    h->chat_id = xstrdup(chat_id);
    buf_t arr;
    buf_init(&arr);
    if (skills_csv)
        pg_array(&arr, skills_csv);
    const char *params[5] = {chat_id, org, NULL, skills_csv ? arr.data : NULL, text};
    pg_query_opts q = {.sql = REQUEST_SQL, .nparams = 5, .params = params, .route_key = chat_id};
    pg_query_ex(app->pg, &q, on_handoff, h);
    buf_free(&arr);
}
