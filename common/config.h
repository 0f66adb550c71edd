/* Runtime configuration: filled once at start from environment variables,
 * then overridden by command-line flags (config_parse). Runtime code only reads it.
 * Every variable is listed in config_usage() and README.md. */
#ifndef CHATD_CONFIG_H
#define CHATD_CONFIG_H
#include <stdbool.h>
#include <stdint.h>

typedef struct chatd_config {
    char *listen_host;   /* CHATD_LISTEN host part ("0.0.0.0") */
    int listen_port;     /* CHATD_LISTEN port part (8080) */
    char *redis_url;     /* CHATD_REDIS_URL (redis://127.0.0.1:6379) */
    char *database_url;  /* CHATD_DATABASE_URL (postgresql://chatd@127.0.0.1:5432/chatd) */
    char *jwt_secret;    /* CHATD_JWT_SECRET: HS256 shared secret */
    char *jwt_public_key;/* CHATD_JWT_PUBLIC_KEY: PEM file for RS256/ES256 */
    char *jwt_private_key;/* CHATD_JWT_PRIVATE_KEY: PEM file used by `chatd token` for RS/ES */
    char *jwt_issuer;    /* CHATD_JWT_ISSUER (optional) */
    char *jwt_audience;  /* CHATD_JWT_AUDIENCE (optional) */
    int ping_interval_ms;/* CHATD_PING_INTERVAL_MS (25000) */
    int ping_timeout_ms; /* CHATD_PING_TIMEOUT_MS (20000) */
    int64_t max_payload; /* CHATD_MAX_PAYLOAD (1000000) */
    char *cors_origins;  /* CHATD_CORS_ORIGINS, comma separated ("" = none, "*" = any) */
    char *ai_base_url;   /* CHATD_AI_BASE_URL (unset: built-in offline provider) */
    char *ai_api_key;    /* CHATD_AI_API_KEY */
    char *ai_model;      /* CHATD_AI_MODEL */
    int ai_connect_timeout_ms;     /* CHATD_AI_CONNECT_TIMEOUT_MS (5000) */
    int ai_first_token_timeout_ms; /* CHATD_AI_FIRST_TOKEN_TIMEOUT_MS (15000) */
    int ai_total_timeout_ms;       /* CHATD_AI_TOTAL_TIMEOUT_MS (120000) */
    int inactivity_warn_s;  /* CHATD_INACTIVITY_WARN_S (240) */
    int inactivity_close_s; /* CHATD_INACTIVITY_CLOSE_S (1800) */
    bool redis_notify_config; /* CHATD_REDIS_NOTIFY_CONFIG (1): set notify-keyspace-events Ex */
    char *stun_urls;     /* CHATD_STUN_URLS, comma separated */
    char *turn_urls;     /* CHATD_TURN_URLS, comma separated */
    char *turn_secret;   /* CHATD_TURN_SECRET */
    int turn_ttl_s;      /* CHATD_TURN_TTL_S (86400) */
    char *upload_dir;    /* CHATD_UPLOAD_DIR (./.data/uploads) */
    int64_t upload_max_bytes; /* CHATD_UPLOAD_MAX_BYTES (10485760) */
    int default_handle_time_s;   /* CHATD_DEFAULT_HANDLE_TIME_S (300) */
    int agent_reply_timeout_s;   /* CHATD_AGENT_REPLY_TIMEOUT_S (0 = off) */
    int64_t max_outbound_bytes;  /* CHATD_MAX_OUTBOUND_BYTES (1048576) */
    int rate_events_per_s;       /* CHATD_RATE_EVENTS_PER_S (50, burst 4x) */
    int rate_conn_per_s;         /* CHATD_RATE_CONN_PER_S (200, burst 4x) */
    int recovery_ms;             /* CHATD_RECOVERY_MS (120000; 0 = no state recovery) */
    int pg_pool;                 /* CHATD_PG_POOL (4): PostgreSQL connections of this process */
    char *node_id;       /* CHATD_NODE_ID (hostname:port) */
} chatd_config;

/* Fills cfg with defaults, then the environment. Strings are heap copies. */
void config_from_env(chatd_config *cfg);
/* Applies --flag value / --flag=value overrides from argv[first..argc).
 * Returns the index of the first unrecognised argument, or -1 on a bad value. */
int config_parse_flags(chatd_config *cfg, int argc, char **argv, int first);
/* Derived defaults, after the environment and the flags (the dev JWT secret). */
void config_finish(chatd_config *cfg);
void config_free(chatd_config *cfg);
void config_usage(void);
/* Splits "host:port" into cfg listen fields; returns 0 or -1. */
int config_set_listen(chatd_config *cfg, const char *addr);

#endif
