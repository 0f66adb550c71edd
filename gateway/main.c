/* chatd: entry point. Parses the subcommand and configuration, then runs one
 * libuv loop that owns everything; libwebsockets joins it as a guest
 * (foreign loop), and so do hiredis, libpq and libcurl. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libwebsockets.h>
#include <uv.h>

#include "common/config.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "gateway/auth.h"
#include "gateway/eio.h"
#include "gateway/http.h"
#include "gateway/modes.h"
#include "gateway/sio.h"
#include "gateway/chat.h"
#include "rest/rest.h"
#include "store/migrate.h"
#include "store/pg.h"
#include "store/redis.h"

enum mode { MODE_SERVE, MODE_CONFORMANCE, MODE_BENCH };

static void usage(void)
{
    printf("usage: chatd [serve|conformance|bench-server|migrate|token|--help] [--flag value ...]\n\n"
           "  serve          the live-chat gateway (default)\n"
           "  conformance    the endpoints the official Engine.IO/Socket.IO test suites expect\n"
           "  bench-server   /chat join + broadcast only, no Redis/PostgreSQL (benchmarks)\n"
           "  migrate        apply sql/NNN_*.sql in order (idempotent); --sql-dir DIR (./sql)\n"
           "  token          mint a JWT: --org O --typ customer|agent --sub ID [--name N]\n"
           "                 [--email E] [--skills a,b] [--max-chats N] [--admin] [--ttl S]\n\n");
    config_usage();
}

/* ---- server --------------------------------------------------------------- */

struct server {
    uv_loop_t *loop;
    struct lws_context *lws;
    eio_server *eio;
    sio_server *sio;
    pg_client *pg;
    redis_client *redis;
    chat_app *chat;
    uv_signal_t sigint, sigterm;
    uv_timer_t shutdown;
    int shutdown_ticks;
    bool stopping;
};

static void health(void *ctx, http_req *req)
{
    http_respond_json(req, 200, "{\"status\":\"ok\"}");
}

/* Readiness: Redis and PostgreSQL reachable (serve), always (other modes). */
static void ready(void *ctx, http_req *req)
{
    struct server *srv = ctx;
    if (srv->chat && !chat_app_ready(srv->chat)) {
        char b[160];
        snprintf(b, sizeof b, "{\"status\":\"unavailable\",\"postgres\":%s,\"redis\":%s}",
                 pg_is_ready(srv->pg) ? "true" : "false",
                 srv->redis && redis_is_ready(srv->redis) ? "true" : "false");
        http_respond_json(req, 503, b);
        return;
    }
    http_respond_json(req, 200, "{\"status\":\"ready\"}");
}

/* Prometheus text exposition of the process' counters. */
static void metrics(void *ctx, http_req *req)
{
    struct server *srv = ctx;
    buf_t b;
    buf_init(&b);
    buf_printf(&b, "# TYPE chatd_engineio_sessions gauge\nchatd_engineio_sessions %zu\n",
               eio_session_count(srv->eio));
    if (srv->chat) {
        chat_app *a = srv->chat;
        buf_printf(&b,
                   "# TYPE chatd_chat_connects_total counter\nchatd_chat_connects_total %llu\n"
                   "# TYPE chatd_chat_messages_total counter\nchatd_chat_messages_total %llu\n"
                   "# TYPE chatd_room_broadcasts_total counter\nchatd_room_broadcasts_total %llu\n"
                   "# TYPE chatd_fanout_in_total counter\nchatd_fanout_in_total %llu\n"
                   "# TYPE chatd_fanout_out_total counter\nchatd_fanout_out_total %llu\n",
                   (unsigned long long)a->stats.connects, (unsigned long long)a->stats.messages,
                   (unsigned long long)a->stats.broadcasts, (unsigned long long)a->stats.fanout_in,
                   (unsigned long long)a->stats.fanout_out);
        pg_stats ps;
        pg_get_stats(srv->pg, &ps);
        buf_printf(&b,
                   "# TYPE chatd_pg_connections_ready gauge\nchatd_pg_connections_ready %d\n"
                   "# TYPE chatd_pg_queries_total counter\nchatd_pg_queries_total %llu\n"
                   "# TYPE chatd_pg_errors_total counter\nchatd_pg_errors_total %llu\n"
                   "# TYPE chatd_pg_spread gauge\nchatd_pg_spread %d\n"
                   "# TYPE chatd_redis_ready gauge\nchatd_redis_ready %d\n",
                   ps.connections_ready, (unsigned long long)ps.queries,
                   (unsigned long long)ps.errors, ps.spread,
                   srv->redis && redis_is_ready(srv->redis));
    }
    http_respond(req, 200, "text/plain; version=0.0.4", b.data, b.len);
    buf_free(&b);
}

static int setup_serve(struct server *srv, chatd_config *cfg)
{
    char err[256];
    srv->sio = sio_server_new(srv->eio, "/socket.io/");
    pg_options po;
    pg_options_default(&po);
    po.pool_size = cfg->pg_pool; /* pg_new makes a pool of at least 1 */
    srv->pg = pg_new(srv->loop, cfg->database_url, &po);
    srv->chat = chat_app_new(srv->loop, cfg, srv->sio, srv->pg, NULL, err, sizeof err);
    if (!srv->chat) {
        log_error("serve: %s", err);
        return -1;
    }
    redis_options ro;
    redis_options_init(&ro, cfg);
    ro.on_message = chat_on_fanout;
    ro.message_ctx = srv->chat;
    ro.on_state = chat_on_redis_state;
    ro.on_sub_back = chat_on_fanout_back;
    ro.state_ctx = srv->chat;
    srv->redis = redis_new(srv->loop, &ro);
    if (!srv->redis) {
        log_error("serve: bad Redis configuration (%s)", cfg->redis_url);
        return -1;
    }
    chat_app_set_redis(srv->chat, srv->redis);
    redis_start(srv->redis);
    rest_setup(srv->chat);
    return 0;
}

static void on_shutdown_tick(uv_timer_t *t)
{
    struct server *srv = t->data;
    /* give closing sessions up to ~1 s to flush their last frames */
    if (eio_session_count(srv->eio) == 0 && srv->shutdown_ticks > 2)
        uv_stop(srv->loop);
    else if (++srv->shutdown_ticks > 100)
        uv_stop(srv->loop);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct server *srv = sig->data;
    if (srv->stopping) {
        uv_stop(srv->loop);
        return;
    }
    srv->stopping = true;
    log_info("signal %d: shutting down", signum);
    eio_close_all(srv->eio, "server shutting down");
    uv_timer_start(&srv->shutdown, on_shutdown_tick, 10, 10);
}

static int run_server(chatd_config *cfg, enum mode mode)
{
    struct server srv = {0};
    srv.loop = uv_default_loop();

    eio_options eo = {
        .ping_interval_ms = cfg->ping_interval_ms,
        .ping_timeout_ms = cfg->ping_timeout_ms,
        .max_payload = cfg->max_payload,
        .max_outbound = cfg->max_outbound_bytes,
        .conn_rate_per_s = cfg->rate_conn_per_s,
    };
    srv.eio = eio_server_new(srv.loop, &eo);
    http_lws_set_eio(srv.eio);
    http_set_cors(cfg->cors_origins);
    http_route_add("/healthz", health, &srv);
    http_route_add("/readyz", ready, &srv);
    http_route_add("/metrics", metrics, &srv);
    switch (mode) {
    case MODE_CONFORMANCE:
        mode_conformance_setup(srv.eio, &srv.sio);
        break;
    case MODE_BENCH:
        mode_bench_setup(srv.eio, &srv.sio);
        break;
    case MODE_SERVE:
        if (setup_serve(&srv, cfg) != 0)
            goto fail;
        break;
    }

    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
    struct lws_protocols protocols[2] = {http_lws_protocol, {0}};
    void *foreign[1] = {srv.loop};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DISABLE_IPV6;
    info.foreign_loops = foreign;
    info.port = cfg->listen_port;
    info.iface = cfg->listen_host;
    info.protocols = protocols;
    info.pt_serv_buf_size = 16384;
    info.timeout_secs = 20;
    srv.lws = lws_create_context(&info);
    if (!srv.lws) {
        log_error("cannot listen on %s:%d", cfg->listen_host, cfg->listen_port);
        goto fail;
    }
    http_lws_start(srv.loop);
    uv_signal_init(srv.loop, &srv.sigint);
    uv_signal_init(srv.loop, &srv.sigterm);
    uv_timer_init(srv.loop, &srv.shutdown);
    srv.sigint.data = srv.sigterm.data = srv.shutdown.data = &srv;
    uv_signal_start(&srv.sigint, on_signal, SIGINT);
    uv_signal_start(&srv.sigterm, on_signal, SIGTERM);
    signal(SIGPIPE, SIG_IGN);
    log_info("listening on %s:%d (%s)", cfg->listen_host, cfg->listen_port,
             mode == MODE_CONFORMANCE ? "conformance" : mode == MODE_BENCH ? "bench-server" : "serve");

    uv_run(srv.loop, UV_RUN_DEFAULT);

    /* lws tears its connections down (their close callbacks release sessions),
     * then our own handles close and the loop drains. */
    eio_close_all(srv.eio, "server shutting down");
    lws_context_destroy(srv.lws);
    if (srv.chat) {
        /* let the last presence removals and their replies cross to Redis
         * before the clients are freed (agents go offline now, not at TTL) */
        srv.shutdown_ticks = 95;
        uv_timer_start(&srv.shutdown, on_shutdown_tick, 20, 20);
        uv_run(srv.loop, UV_RUN_DEFAULT);
        uv_timer_stop(&srv.shutdown);
    }
    http_lws_stop();
    uv_close((uv_handle_t *)&srv.sigint, NULL);
    uv_close((uv_handle_t *)&srv.sigterm, NULL);
    uv_close((uv_handle_t *)&srv.shutdown, NULL);
    chat_app_stop(srv.chat);
    pg_free(srv.pg);
    redis_free(srv.redis);
    uv_run(srv.loop, UV_RUN_DEFAULT);
    /* with a foreign loop lws finishes its teardown in a second call, once
     * its handles have closed */
    lws_context_destroy(srv.lws);
    chat_app_free(srv.chat);
    sio_server_free(srv.sio);
    eio_server_free(srv.eio);
    http_routes_clear();
    uv_loop_close(srv.loop);
    log_info("stopped");
    return 0;

fail:
    chat_app_stop(srv.chat);
    redis_free(srv.redis);
    pg_free(srv.pg);
    uv_run(srv.loop, UV_RUN_DEFAULT);
    chat_app_free(srv.chat);
    sio_server_free(srv.sio);
    eio_server_free(srv.eio);
    http_routes_clear();
    uv_loop_close(srv.loop);
    return 1;
}

/* ---- token / migrate -------------------------------------------------------- */

static int cmd_token(chatd_config *cfg, int argc, char **argv, int i)
{
    auth_mint_req req = {.max_chats = -1, .ttl_s = 3600};
    char *skills_csv = NULL;
    const char *skills[64];
    for (; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--admin")) {
            req.admin = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "chatd token: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--org")) req.org = v;
        else if (!strcmp(a, "--typ")) req.typ = v;
        else if (!strcmp(a, "--sub")) req.sub = v;
        else if (!strcmp(a, "--name")) req.name = v;
        else if (!strcmp(a, "--email")) req.email = v;
        else if (!strcmp(a, "--skills")) skills_csv = (char *)v;
        else if (!strcmp(a, "--max-chats")) req.max_chats = atoi(v);
        else if (!strcmp(a, "--ttl")) req.ttl_s = atoll(v);
        else {
            fprintf(stderr, "chatd token: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (!req.org || !req.typ || !req.sub ||
        (strcmp(req.typ, "customer") != 0 && strcmp(req.typ, "agent") != 0)) {
        fprintf(stderr, "chatd token: --org, --sub and --typ customer|agent are required\n");
        return 2;
    }
    char *csv = skills_csv ? xstrdup(skills_csv) : NULL;
    for (char *sv = NULL, *t = csv ? strtok_r(csv, ",", &sv) : NULL; t && req.nskills < 64;
         t = strtok_r(NULL, ",", &sv))
        skills[req.nskills++] = t;
    req.skills = skills;
    auth_keys keys;
    char err[256];
    int rc = 1;
    char *tok = NULL;
    if (auth_keys_from_config(&keys, cfg, err, sizeof err) != 0) {
        fprintf(stderr, "chatd token: %s\n", err);
    } else if (auth_mint(&keys, &req, (int64_t)time(NULL), &tok, err, sizeof err) != 0) {
        fprintf(stderr, "chatd token: %s\n", err);
    } else {
        printf("%s\n", tok);
        rc = 0;
    }
    free(tok);
    free(csv);
    auth_keys_free(&keys);
    return rc;
}

static int cmd_migrate(chatd_config *cfg, int argc, char **argv, int i)
{
    const char *dir = "sql";
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--sql-dir") && i + 1 < argc)
            dir = argv[++i];
        else {
            fprintf(stderr, "chatd migrate: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    char err[512];
    int n = store_migrate(cfg->database_url, dir, err, sizeof err);
    if (n < 0) {
        fprintf(stderr, "chatd migrate: %s\n", err);
        return 1;
    }
    printf("chatd migrate: %d migration(s) applied\n", n);
    return 0;
}

int main(int argc, char **argv)
{
    log_init_from_env();
    const char *cmd = "serve";
    int first = 1;
    if (argc > 1 && argv[1][0] != '-') {
        cmd = argv[1];
        first = 2;
    }
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(cmd, "help"))) {
        usage();
        return 0;
    }
    chatd_config cfg;
    config_from_env(&cfg);
    bool conformance = !strcmp(cmd, "conformance");
    if (conformance) {
        /* the values the suites assert, unless the environment says otherwise */
        if (!getenv("CHATD_PING_INTERVAL_MS"))
            cfg.ping_interval_ms = 300;
        if (!getenv("CHATD_PING_TIMEOUT_MS"))
            cfg.ping_timeout_ms = 200;
        if (!getenv("CHATD_CORS_ORIGINS")) {
            free(cfg.cors_origins);
            cfg.cors_origins = xstrdup("*");
        }
    }
    int rc;
    int next = config_parse_flags(&cfg, argc, argv, first);
    config_finish(&cfg);
    if (next < 0) {
        fprintf(stderr, "chatd: bad flag value (see --help)\n");
        rc = 2;
    } else if (!strcmp(cmd, "token")) {
        rc = cmd_token(&cfg, argc, argv, next);
    } else if (!strcmp(cmd, "migrate")) {
        rc = cmd_migrate(&cfg, argc, argv, next);
    } else if (next < argc) {
        fprintf(stderr, "chatd: unknown argument %s (see --help)\n", argv[next]);
        rc = 2;
    } else if (!strcmp(cmd, "serve")) {
        rc = run_server(&cfg, MODE_SERVE);
    } else if (conformance) {
        rc = run_server(&cfg, MODE_CONFORMANCE);
    } else if (!strcmp(cmd, "bench-server")) {
        /* one load generator opens thousands of sockets from one address */
        if (!getenv("CHATD_RATE_CONN_PER_S"))
            cfg.rate_conn_per_s = 0;
        rc = run_server(&cfg, MODE_BENCH);
    } else {
        fprintf(stderr, "chatd: unknown command %s (see --help)\n", cmd);
        rc = 2;
    }
    config_free(&cfg);
    return rc;
}
