/* Unit tests for common/config.c: defaults, environment, flags overriding the
 * environment, bad values (ignored in the environment, fatal as flags), the
 * listen address splitter. Each test starts from an environment without any
 * CHATD_* variable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/config.h"

extern char **environ;

static void clear_chatd_env(void)
{
    for (;;) {
        char *found = NULL;
        for (char **e = environ; e && *e; e++)
            if (!strncmp(*e, "CHATD_", 6)) {
                found = *e;
                break;
            }
        if (!found)
            return;
        char name[256];
        size_t n = strcspn(found, "=");
        if (n >= sizeof name)
            n = sizeof name - 1;
        memcpy(name, found, n);
        name[n] = '\0';
        unsetenv(name);
    }
}

static int setup(void **state)
{
    (void)state;
    clear_chatd_env();
    return 0;
}

static void test_defaults(void **state)
{
    (void)state;
    chatd_config c;
    config_from_env(&c);
    assert_string_equal(c.listen_host, "0.0.0.0");
    assert_int_equal(c.listen_port, 8080);
    assert_string_equal(c.redis_url, "redis://127.0.0.1:6379");
    assert_string_equal(c.database_url, "postgresql://chatd@127.0.0.1:5432/chatd");
    assert_int_equal(c.ping_interval_ms, 25000);
    assert_int_equal(c.ping_timeout_ms, 20000);
    assert_int_equal(c.max_payload, 1000000);
    assert_int_equal(c.ai_connect_timeout_ms, 5000);
    assert_int_equal(c.ai_first_token_timeout_ms, 15000);
    assert_int_equal(c.ai_total_timeout_ms, 120000);
    assert_int_equal(c.inactivity_warn_s, 240);
    assert_int_equal(c.inactivity_close_s, 1800);
    assert_true(c.redis_notify_config);
    assert_int_equal(c.turn_ttl_s, 86400);
    assert_int_equal(c.upload_max_bytes, 10485760);
    assert_int_equal(c.default_handle_time_s, 300);
    assert_int_equal(c.agent_reply_timeout_s, 0);
    assert_int_equal(c.max_outbound_bytes, 1048576);
    assert_int_equal(c.rate_events_per_s, 50);
    assert_int_equal(c.rate_conn_per_s, 200);
    assert_int_equal(c.pg_pool, 4);
    assert_null(c.jwt_public_key);
    assert_null(c.ai_base_url);
    assert_string_equal(c.cors_origins, "");
    /* node id defaults to host:port */
    assert_non_null(c.node_id);
    const char *colon = strrchr(c.node_id, ':');
    assert_non_null(colon);
    assert_string_equal(colon + 1, "8080");
    config_free(&c);
    assert_null(c.listen_host);
    config_free(&c); /* twice is harmless */
}

static void test_env(void **state)
{
    (void)state;
    setenv("CHATD_LISTEN", "127.0.0.1:3000", 1);
    setenv("CHATD_PING_INTERVAL_MS", "300", 1);
    setenv("CHATD_PING_TIMEOUT_MS", "200", 1);
    setenv("CHATD_MAX_PAYLOAD", "10000", 1);
    setenv("CHATD_REDIS_URL", "redis://10.0.0.1:7000", 1);
    setenv("CHATD_CORS_ORIGINS", "*", 1);
    setenv("CHATD_REDIS_NOTIFY_CONFIG", "0", 1);
    setenv("CHATD_NODE_ID", "n1", 1);
    setenv("CHATD_PG_POOL", "2", 1);
    chatd_config c;
    config_from_env(&c);
    assert_string_equal(c.listen_host, "127.0.0.1");
    assert_int_equal(c.pg_pool, 2);
    assert_int_equal(c.listen_port, 3000);
    assert_int_equal(c.ping_interval_ms, 300);
    assert_int_equal(c.ping_timeout_ms, 200);
    assert_int_equal(c.max_payload, 10000);
    assert_string_equal(c.redis_url, "redis://10.0.0.1:7000");
    assert_string_equal(c.cors_origins, "*");
    assert_false(c.redis_notify_config);
    assert_string_equal(c.node_id, "n1");
    config_free(&c);
}

/* A bad environment value is ignored: the default stays. */
static void test_env_bad_values(void **state)
{
    (void)state;
    setenv("CHATD_LISTEN", "nonsense", 1);
    setenv("CHATD_PING_INTERVAL_MS", "abc", 1);
    setenv("CHATD_PING_TIMEOUT_MS", "-5", 1);
    setenv("CHATD_MAX_PAYLOAD", "12k", 1);
    setenv("CHATD_RATE_EVENTS_PER_S", "", 1);
    setenv("CHATD_INACTIVITY_WARN_S", "99999999999", 1); /* > INT_MAX */
    chatd_config c;
    config_from_env(&c);
    assert_string_equal(c.listen_host, "0.0.0.0");
    assert_int_equal(c.listen_port, 8080);
    assert_int_equal(c.ping_interval_ms, 25000);
    assert_int_equal(c.ping_timeout_ms, 20000);
    assert_int_equal(c.max_payload, 1000000);
    assert_int_equal(c.rate_events_per_s, 50);
    assert_int_equal(c.inactivity_warn_s, 240);
    config_free(&c);
}

static void test_bool_values(void **state)
{
    (void)state;
    static const struct {
        const char *v;
        bool want;
    } b[] = {{"0", false}, {"false", false}, {"no", false}, {"1", true}, {"true", true}, {"yes", true}};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
        setenv("CHATD_REDIS_NOTIFY_CONFIG", b[i].v, 1);
        chatd_config c;
        config_from_env(&c);
        if (c.redis_notify_config != b[i].want)
            fail_msg("CHATD_REDIS_NOTIFY_CONFIG=%s", b[i].v);
        config_free(&c);
    }
}

/* Flags win over the environment, in both --flag value and --flag=value forms. */
static void test_flags_override_env(void **state)
{
    (void)state;
    setenv("CHATD_PING_INTERVAL_MS", "300", 1);
    setenv("CHATD_MAX_PAYLOAD", "10000", 1);
    setenv("CHATD_LISTEN", "127.0.0.1:3000", 1);
    setenv("CHATD_REDIS_URL", "redis://env", 1);
    chatd_config c;
    config_from_env(&c);
    char *argv[] = {"chatd",         "serve",           "--ping-interval-ms", "1000",
                    "--max-payload=42", "--listen",     "127.0.0.1:4000",     "--redis-url=redis://flag",
                    NULL};
    int argc = 8;
    assert_int_equal(config_parse_flags(&c, argc, argv, 2), argc);
    assert_int_equal(c.ping_interval_ms, 1000);
    assert_int_equal(c.max_payload, 42);
    assert_string_equal(c.listen_host, "127.0.0.1");
    assert_int_equal(c.listen_port, 4000);
    assert_string_equal(c.redis_url, "redis://flag");
    assert_int_equal(c.ping_timeout_ms, 20000); /* untouched */
    config_free(&c);
}

static void test_flags_stop_and_errors(void **state)
{
    (void)state;
    chatd_config c;
    config_from_env(&c);
    {
        char *argv[] = {"chatd", "--ping-timeout-ms", "5", "conformance", "--x"};
        assert_int_equal(config_parse_flags(&c, 5, argv, 1), 3); /* first non-flag */
        assert_int_equal(c.ping_timeout_ms, 5);
    }
    {
        char *argv[] = {"chatd", "--no-such-flag", "1"};
        assert_int_equal(config_parse_flags(&c, 3, argv, 1), 1); /* unknown flag */
    }
    {
        char *argv[] = {"chatd", "--ping-interval-ms", "abc"};
        assert_int_equal(config_parse_flags(&c, 3, argv, 1), -1);
    }
    {
        char *argv[] = {"chatd", "--ping-interval-ms=-1"};
        assert_int_equal(config_parse_flags(&c, 2, argv, 1), -1);
    }
    {
        char *argv[] = {"chatd", "--max-payload"}; /* missing value */
        assert_int_equal(config_parse_flags(&c, 2, argv, 1), -1);
    }
    {
        char *argv[] = {"chatd", "--listen=nocolon"};
        assert_int_equal(config_parse_flags(&c, 2, argv, 1), -1);
    }
    {
        char *argv[] = {"chatd", "--listen"};
        assert_int_equal(config_parse_flags(&c, 2, argv, 1), -1);
    }
    {
        char *argv[] = {"chatd", "--ping-interval"}; /* prefix of a flag is not that flag */
        assert_int_equal(config_parse_flags(&c, 2, argv, 1), 1);
    }
    {
        char *argv[] = {"chatd"};
        assert_int_equal(config_parse_flags(&c, 1, argv, 1), 1); /* nothing to parse */
    }
    {
        char *argv[] = {"chatd", "--jwt-secret", "s1", "--jwt-secret=s2"}; /* last wins, no leak */
        assert_int_equal(config_parse_flags(&c, 4, argv, 1), 4);
        assert_string_equal(c.jwt_secret, "s2");
    }
    assert_int_equal(c.ping_interval_ms, 25000); /* failed flags left it alone */
    config_free(&c);
}

static void test_set_listen(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;
        const char *host;
        int port;
    } l[] = {
        {"127.0.0.1:3000", 0, "127.0.0.1", 3000},
        {"0.0.0.0:0", 0, "0.0.0.0", 0},
        {"localhost:65535", 0, "localhost", 65535},
        {":8080", 0, "", 8080},
        {"[::1]:80", 0, "[::1]", 80},
        {"127.0.0.1", -1, NULL, 0},
        {"127.0.0.1:", -1, NULL, 0},
        {"127.0.0.1:65536", -1, NULL, 0},
        {"127.0.0.1:-1", -1, NULL, 0},
        {"127.0.0.1:80x", -1, NULL, 0},
        {"", -1, NULL, 0},
    };
    for (size_t i = 0; i < sizeof l / sizeof l[0]; i++) {
        chatd_config c;
        config_from_env(&c);
        int rc = config_set_listen(&c, l[i].in);
        if (rc != l[i].rc)
            fail_msg("listen '%s': rc %d", l[i].in, rc);
        if (rc == 0) {
            assert_string_equal(c.listen_host, l[i].host);
            assert_int_equal(c.listen_port, l[i].port);
        } else {
            assert_string_equal(c.listen_host, "0.0.0.0"); /* unchanged */
            assert_int_equal(c.listen_port, 8080);
        }
        config_free(&c);
    }
}

/* A 64-bit value that does not fit must be refused like any other bad value,
 * not clamped to INT64_MAX by strtoll. */
static void test_i64_overflow_refused(void **state)
{
    (void)state;
    setenv("CHATD_MAX_PAYLOAD", "99999999999999999999", 1);
    chatd_config c;
    config_from_env(&c);
    assert_int_equal(c.max_payload, 1000000);
    char *argv[] = {"chatd", "--max-payload=99999999999999999999"};
    assert_int_equal(config_parse_flags(&c, 2, argv, 1), -1);
    config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, setup),
        cmocka_unit_test_setup(test_env, setup),
        cmocka_unit_test_setup(test_env_bad_values, setup),
        cmocka_unit_test_setup(test_bool_values, setup),
        cmocka_unit_test_setup(test_flags_override_env, setup),
        cmocka_unit_test_setup(test_flags_stop_and_errors, setup),
        cmocka_unit_test_setup(test_set_listen, setup),
        cmocka_unit_test_setup(test_i64_overflow_refused, setup),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
