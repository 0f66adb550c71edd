#include "common/config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/xalloc.h"

enum kind { K_STR, K_INT, K_I64, K_BOOL };

/* One row per setting: the environment name, the flag name and where it lands. */
static const struct setting {
    const char *env, *flag, *def, *help;
    enum kind kind;
    size_t off;
} settings[] = {
#define S(env, flag, kind, field, def, help) {env, flag, def, help, kind, offsetof(chatd_config, field)}
    S("CHATD_REDIS_URL", "redis-url", K_STR, redis_url, "redis://127.0.0.1:6379", "Redis URL"),
    S("CHATD_DATABASE_URL", "database-url", K_STR, database_url,
      "postgresql://chatd@127.0.0.1:5432/chatd", "PostgreSQL URL"),
    S("CHATD_JWT_SECRET", "jwt-secret", K_STR, jwt_secret, NULL,
      "HS256 secret (unset and no public key: the development secret dev-secret-change-me)"),
    S("CHATD_JWT_PUBLIC_KEY", "jwt-public-key", K_STR, jwt_public_key, NULL, "PEM public key file (RS256/ES256)"),
    S("CHATD_JWT_PRIVATE_KEY", "jwt-private-key", K_STR, jwt_private_key, NULL, "PEM private key file for `chatd token`"),
    S("CHATD_JWT_ISSUER", "jwt-issuer", K_STR, jwt_issuer, NULL, "required iss claim"),
    S("CHATD_JWT_AUDIENCE", "jwt-audience", K_STR, jwt_audience, NULL, "required aud claim"),
    S("CHATD_PING_INTERVAL_MS", "ping-interval-ms", K_INT, ping_interval_ms, "25000", "Engine.IO pingInterval"),
    S("CHATD_PING_TIMEOUT_MS", "ping-timeout-ms", K_INT, ping_timeout_ms, "20000", "Engine.IO pingTimeout"),
    S("CHATD_MAX_PAYLOAD", "max-payload", K_I64, max_payload, "1000000", "Engine.IO maxPayload bytes"),
    S("CHATD_CORS_ORIGINS", "cors-origins", K_STR, cors_origins, "", "allowed origins, comma separated, * = any"),
    S("CHATD_AI_BASE_URL", "ai-base-url", K_STR, ai_base_url, NULL, "OpenAI-compatible base URL (unset: offline provider)"),
    S("CHATD_AI_API_KEY", "ai-api-key", K_STR, ai_api_key, NULL, "AI provider key"),
    S("CHATD_AI_MODEL", "ai-model", K_STR, ai_model, "gpt-4o-mini", "AI model"),
    S("CHATD_AI_CONNECT_TIMEOUT_MS", "ai-connect-timeout-ms", K_INT, ai_connect_timeout_ms, "5000", "AI connect timeout"),
    S("CHATD_AI_FIRST_TOKEN_TIMEOUT_MS", "ai-first-token-timeout-ms", K_INT, ai_first_token_timeout_ms, "15000", "AI first token timeout"),
    S("CHATD_AI_TOTAL_TIMEOUT_MS", "ai-total-timeout-ms", K_INT, ai_total_timeout_ms, "120000", "AI total timeout"),
    S("CHATD_INACTIVITY_WARN_S", "inactivity-warn-s", K_INT, inactivity_warn_s, "240", "inactivity warning"),
    S("CHATD_INACTIVITY_CLOSE_S", "inactivity-close-s", K_INT, inactivity_close_s, "1800", "inactivity close"),
    S("CHATD_REDIS_NOTIFY_CONFIG", "redis-notify-config", K_BOOL, redis_notify_config, "1", "enable notify-keyspace-events Ex at start"),
    S("CHATD_STUN_URLS", "stun-urls", K_STR, stun_urls, "", "STUN urls, comma separated"),
    S("CHATD_TURN_URLS", "turn-urls", K_STR, turn_urls, "", "TURN urls, comma separated"),
    S("CHATD_TURN_SECRET", "turn-secret", K_STR, turn_secret, NULL, "TURN REST shared secret"),
    S("CHATD_TURN_TTL_S", "turn-ttl-s", K_INT, turn_ttl_s, "86400", "TURN credential lifetime"),
    S("CHATD_UPLOAD_DIR", "upload-dir", K_STR, upload_dir, "./.data/uploads", "upload storage dir"),
    S("CHATD_UPLOAD_MAX_BYTES", "upload-max-bytes", K_I64, upload_max_bytes, "10485760", "upload size limit"),
    S("CHATD_DEFAULT_HANDLE_TIME_S", "default-handle-time-s", K_INT, default_handle_time_s, "300", "handle time before any chat closed"),
    S("CHATD_AGENT_REPLY_TIMEOUT_S", "agent-reply-timeout-s", K_INT, agent_reply_timeout_s, "0", "no-reply reassignment (0 = off)"),
    S("CHATD_MAX_OUTBOUND_BYTES", "max-outbound-bytes", K_I64, max_outbound_bytes, "1048576", "per-socket outbound bound"),
    S("CHATD_RATE_EVENTS_PER_S", "rate-events-per-s", K_INT, rate_events_per_s, "50", "per-socket events/s (burst 4x)"),
    S("CHATD_RATE_CONN_PER_S", "rate-conn-per-s", K_INT, rate_conn_per_s, "200", "per-IP connections/s (burst 4x)"),
    S("CHATD_RECOVERY_MS", "recovery-ms", K_INT, recovery_ms, "120000", "how long a dropped socket's state is kept for Socket.IO connection state recovery (0 = off)"),
    S("CHATD_PG_POOL", "pg-pool", K_INT, pg_pool, "4", "PostgreSQL connections of this process"),
    S("CHATD_NODE_ID", "node-id", K_STR, node_id, NULL, "node name in a cluster (hostname:port)"),
#undef S
};

static int set_value(chatd_config *cfg, const struct setting *s, const char *v)
{
    void *p = (char *)cfg + s->off;
    char *end;
    switch (s->kind) {
    case K_STR:
        free(*(char **)p);
        *(char **)p = v ? xstrdup(v) : NULL;
        return 0;
    case K_INT: {
        errno = 0;
        long n = strtol(v, &end, 10);
        if (*v == '\0' || *end != '\0' || errno == ERANGE || n < 0 || n > 0x7fffffff)
            return -1;
        *(int *)p = (int)n;
        return 0;
    }
    case K_I64: {
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (*v == '\0' || *end != '\0' || errno == ERANGE || n < 0)
            return -1;
        *(int64_t *)p = n;
        return 0;
    }
    case K_BOOL:
        *(bool *)p = !(strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0);
        return 0;
    }
    return -1;
}

int config_set_listen(chatd_config *cfg, const char *addr)
{
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535)
        return -1;
    free(cfg->listen_host);
    cfg->listen_host = xstrndup(addr, (size_t)(colon - addr));
    cfg->listen_port = (int)port;
    return 0;
}

void config_from_env(chatd_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    config_set_listen(cfg, "0.0.0.0:8080");
    const char *l = getenv("CHATD_LISTEN");
    if (l && config_set_listen(cfg, l) != 0)
        fprintf(stderr, "chatd: ignoring bad CHATD_LISTEN=%s\n", l);
    for (size_t i = 0; i < ARRAY_LEN(settings); i++) {
        const struct setting *s = &settings[i];
        if (s->def)
            set_value(cfg, s, s->def);
        const char *v = getenv(s->env);
        if (v && set_value(cfg, s, v) != 0)
            fprintf(stderr, "chatd: ignoring bad %s=%s\n", s->env, v);
    }
    if (!cfg->node_id) {
        char host[256] = "localhost";
        gethostname(host, sizeof host - 1);
        char id[300];
        snprintf(id, sizeof id, "%s:%d", host, cfg->listen_port);
        cfg->node_id = xstrdup(id);
    }
}

int config_parse_flags(chatd_config *cfg, int argc, char **argv, int first)
{
    int i = first;
    while (i < argc) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            return i;
        const char *name = a + 2, *eq = strchr(name, '='), *val;
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int used = 1;
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[i + 1];
            used = 2;
        } else {
            val = NULL;
        }
        if (nlen == 6 && !strncmp(name, "listen", 6)) {
            if (!val || config_set_listen(cfg, val) != 0)
                return -1;
            i += used;
            continue;
        }
        const struct setting *s = NULL;
        for (size_t k = 0; k < ARRAY_LEN(settings); k++)
            if (strlen(settings[k].flag) == nlen && !strncmp(settings[k].flag, name, nlen))
                s = &settings[k];
        if (!s)
            return i;
        if (!val || set_value(cfg, s, val) != 0)
            return -1;
        i += used;
    }
    return i;
}

void config_finish(chatd_config *cfg)
{
    /* A development secret only when no key at all is configured: with a public
     * key, HS256 tokens signed with a well-known secret must never pass. */
    if (!cfg->jwt_secret && !cfg->jwt_public_key)
        cfg->jwt_secret = xstrdup("dev-secret-change-me");
}

void config_free(chatd_config *cfg)
{
    free(cfg->listen_host);
    for (size_t i = 0; i < ARRAY_LEN(settings); i++)
        if (settings[i].kind == K_STR)
            free(*(char **)((char *)cfg + settings[i].off));
    memset(cfg, 0, sizeof *cfg);
}

void config_usage(void)
{
    printf("Configuration (environment variable / --flag, flags win):\n");
    printf("  %-34s --%-26s %s (%s)\n", "CHATD_LISTEN", "listen", "address:port", "0.0.0.0:8080");
    for (size_t i = 0; i < ARRAY_LEN(settings); i++)
        printf("  %-34s --%-26s %s (%s)\n", settings[i].env, settings[i].flag, settings[i].help,
               settings[i].def ? settings[i].def : "unset");
}
