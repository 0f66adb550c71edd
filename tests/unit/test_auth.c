/* Unit tests for gateway/auth.c: table-driven JWT verification vectors (HS256, RS256, ES256
 * with keys generated at test time), alg confusion, claims, minting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/auth.h"

#define NOW 1700000000LL
#define SECRET "test-secret-0123456789"

static char *rsa_priv, *rsa_pub, *rsa2_priv, *ec_priv, *ec_pub;

static void pem_pair(EVP_PKEY *pk, char **priv, char **pub)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL));
    char *p;
    long n = BIO_get_mem_data(b, &p);
    *priv = strndup(p, (size_t)n);
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_PUBKEY(b, pk));
    n = BIO_get_mem_data(b, &p);
    *pub = strndup(p, (size_t)n);
    BIO_free(b);
}

static int setup_keys(void **state)
{
    (void)state;
    char *unused;
    EVP_PKEY *pk = EVP_RSA_gen(2048);
    assert_non_null(pk);
    pem_pair(pk, &rsa_priv, &rsa_pub);
    EVP_PKEY_free(pk);
    pk = EVP_RSA_gen(2048);
    pem_pair(pk, &rsa2_priv, &unused);
    free(unused);
    EVP_PKEY_free(pk);
    pk = EVP_EC_gen("P-256");
    assert_non_null(pk);
    pem_pair(pk, &ec_priv, &ec_pub);
    EVP_PKEY_free(pk);
    return 0;
}

static int teardown_keys(void **state)
{
    (void)state;
    free(rsa_priv);
    free(rsa_pub);
    free(rsa2_priv);
    free(ec_priv);
    free(ec_pub);
    return 0;
}

/* Signs claims_json with libjwt directly (to build tokens auth_mint would never make). */
static char *sign(jwt_alg_t alg, const char *key, const char *claims_json)
{
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grants_json(jwt, claims_json), 0);
    assert_int_equal(jwt_set_alg(jwt, alg, (const unsigned char *)key, key ? (int)strlen(key) : 0), 0);
    char *t = jwt_encode_str(jwt);
    assert_non_null(t);
    jwt_free(jwt);
    return t;
}

static void b64url(const char *in, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(in), o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | (unsigned char)in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = tbl[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = tbl[(acc << (6 - bits)) & 63];
    out[o] = '\0';
}

/* A hand-made unsigned token {"alg":"none"}.payload. */
static char *alg_none(const char *claims_json)
{
    char h[256], p[2048];
    b64url("{\"alg\":\"none\",\"typ\":\"JWT\"}", h);
    b64url(claims_json, p);
    char *t = malloc(strlen(h) + strlen(p) + 3);
    sprintf(t, "%s.%s.", h, p);
    return t;
}

#define CUST "\"sub\":\"u1\",\"org\":\"acme\",\"typ\":\"customer\""
#define EXP_OK "\"exp\":1700003600"

struct vec {
    const char *name;
    int kind;              /* 0 HS secret, 1 RS256 rsa_priv, 2 ES256, 3 RS256 other key, 4 none,
                              5 HS256 signed with rsa_pub as secret, 6 raw token text */
    const char *claims;    /* JSON, or the raw token for kind 6 */
    int keyset;            /* 0 secret only, 1 public only, 2 both, 3 secret + iss/aud */
    const char *org_hint;
    auth_err want;
};

static const struct vec vectors[] = {
    {"valid hs256", 0, "{" CUST "," EXP_OK "}", 0, NULL, AUTH_OK},
    {"valid with org hint", 0, "{" CUST "," EXP_OK "}", 0, "acme", AUTH_OK},
    {"empty org hint ignored", 0, "{" CUST "," EXP_OK "}", 0, "", AUTH_OK},
    {"org mismatch", 0, "{" CUST "," EXP_OK "}", 0, "other", AUTH_ORG_MISMATCH},
    {"expired", 0, "{" CUST ",\"exp\":1699999999}", 0, NULL, AUTH_TOKEN_EXPIRED},
    {"expires exactly now", 0, "{" CUST ",\"exp\":1700000000}", 0, NULL, AUTH_TOKEN_EXPIRED},
    {"expired wins over org", 0, "{" CUST ",\"exp\":1600000000}", 0, "other", AUTH_TOKEN_EXPIRED},
    {"no exp", 0, "{" CUST "}", 0, NULL, AUTH_TOKEN_INVALID},
    {"exp not a number", 0, "{" CUST ",\"exp\":\"soon\"}", 0, NULL, AUTH_TOKEN_INVALID},
    /* identity claims name rooms and keys: bounded (org 128 bytes, sub/email 256), no control
     * characters (a '\n' would split a cross-node message) */
    {"org of 129 bytes", 0, "{\"sub\":\"u1\",\"org\":\"ooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooo\",\"typ\":\"agent\"," EXP_OK "}", 0, NULL, AUTH_TOKEN_INVALID},
    {"sub of 257 bytes", 0, "{\"sub\":\"sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss\",\"org\":\"acme\",\"typ\":\"agent\"," EXP_OK "}", 0, NULL, AUTH_TOKEN_INVALID},
    {"sub with a newline", 0, "{\"sub\":\"u1\\nchat:acme:x\",\"org\":\"acme\",\"typ\":\"agent\"," EXP_OK "}", 0, NULL, AUTH_TOKEN_INVALID},
    {"org with DEL", 0, "{\"sub\":\"u1\",\"org\":\"ac\\u007fme\",\"typ\":\"agent\"," EXP_OK "}", 0, NULL, AUTH_TOKEN_INVALID},
    {"email with a tab", 0, "{" CUST ",\"email\":\"a\\tb@c\"," EXP_OK "}", 0, NULL, AUTH_TOKEN_INVALID},
    {"skill with a newline", 0, "{\"sub\":\"u1\",\"org\":\"acme\",\"typ\":\"agent\",\"skills\":[\"a\\nb\"]," EXP_OK "}", 0, NULL, AUTH_TOKEN_INVALID},
    {"name may hold a newline (display only)", 0, "{" CUST ",\"name\":\"A\\nB\"," EXP_OK "}", 0, NULL, AUTH_OK},
    /* dates no int64_t holds (a signed token can say anything): refused, never converted */
    {"exp 1e300", 0, "{" CUST ",\"exp\":1e300}", 0, NULL, AUTH_TOKEN_INVALID},
    {"exp -1e300", 0, "{" CUST ",\"exp\":-1e300}", 0, NULL, AUTH_TOKEN_INVALID},
    {"exp 9.3e18 (past INT64_MAX)", 0, "{" CUST ",\"exp\":9.3e18}", 0, NULL, AUTH_TOKEN_INVALID},
    {"exp 2^53 + 2", 0, "{" CUST ",\"exp\":9007199254740994.0}", 0, NULL, AUTH_TOKEN_INVALID},
    {"nbf 1e300", 0, "{" CUST "," EXP_OK ",\"nbf\":1e300}", 0, NULL, AUTH_TOKEN_INVALID},
    {"nbf -1e300", 0, "{" CUST "," EXP_OK ",\"nbf\":-1e300}", 0, NULL, AUTH_TOKEN_INVALID},
    {"nbf future", 0, "{" CUST "," EXP_OK ",\"nbf\":1700000100}", 0, NULL, AUTH_TOKEN_INVALID},
    {"nbf past", 0, "{" CUST "," EXP_OK ",\"nbf\":1690000000}", 0, NULL, AUTH_OK},
    {"typ admin", 0, "{\"sub\":\"u1\",\"org\":\"acme\",\"typ\":\"admin\"," EXP_OK "}", 0, NULL,
     AUTH_TOKEN_INVALID},
    {"typ missing", 0, "{\"sub\":\"u1\",\"org\":\"acme\",\"role\":\"agent\"," EXP_OK "}", 0, NULL,
     AUTH_TOKEN_INVALID},
    {"sub missing", 0, "{\"org\":\"acme\",\"typ\":\"agent\"," EXP_OK "}", 0, NULL, AUTH_TOKEN_INVALID},
    {"org missing", 0, "{\"sub\":\"u1\",\"typ\":\"agent\"," EXP_OK "}", 0, NULL, AUTH_TOKEN_INVALID},
    {"skills not array", 0, "{" CUST "," EXP_OK ",\"skills\":\"x\"}", 0, NULL, AUTH_TOKEN_INVALID},
    {"alg none", 4, "{" CUST "," EXP_OK "}", 0, NULL, AUTH_TOKEN_INVALID},
    {"alg none, public key", 4, "{" CUST "," EXP_OK "}", 1, NULL, AUTH_TOKEN_INVALID},
    {"bad signature rs256", 3, "{" CUST "," EXP_OK "}", 1, NULL, AUTH_TOKEN_INVALID},
    {"valid rs256", 1, "{" CUST "," EXP_OK "}", 1, NULL, AUTH_OK},
    {"valid es256", 2, "{" CUST "," EXP_OK "}", 1, NULL, AUTH_OK},
    {"rs256 with both configured", 1, "{" CUST "," EXP_OK "}", 2, NULL, AUTH_OK},
    {"hs256 with both configured", 0, "{" CUST "," EXP_OK "}", 2, NULL, AUTH_OK},
    {"hs256 forged with public key", 5, "{" CUST "," EXP_OK "}", 1, NULL, AUTH_TOKEN_INVALID},
    {"hs256, only public key", 0, "{" CUST "," EXP_OK "}", 1, NULL, AUTH_TOKEN_INVALID},
    {"rs256, only secret", 1, "{" CUST "," EXP_OK "}", 0, NULL, AUTH_TOKEN_INVALID},
    {"malformed garbage", 6, "abc", 0, NULL, AUTH_TOKEN_INVALID},
    {"malformed dots", 6, "a.b.c", 0, NULL, AUTH_TOKEN_INVALID},
    {"malformed empty parts", 6, "..", 0, NULL, AUTH_TOKEN_INVALID},
    {"malformed header json", 6, "eyJhbGciOiJIUzI1NiJ9e30.e30.e30", 0, NULL, AUTH_TOKEN_INVALID},
    {"empty token", 6, "", 0, NULL, AUTH_TOKEN_MISSING},
    {"iss+aud ok", 0, "{" CUST "," EXP_OK ",\"iss\":\"me\",\"aud\":\"chatd\"}", 3, NULL, AUTH_OK},
    {"aud array ok", 0, "{" CUST "," EXP_OK ",\"iss\":\"me\",\"aud\":[\"x\",\"chatd\"]}", 3, NULL,
     AUTH_OK},
    {"iss wrong", 0, "{" CUST "," EXP_OK ",\"iss\":\"you\",\"aud\":\"chatd\"}", 3, NULL,
     AUTH_TOKEN_INVALID},
    {"iss missing", 0, "{" CUST "," EXP_OK ",\"aud\":\"chatd\"}", 3, NULL, AUTH_TOKEN_INVALID},
    {"aud wrong", 0, "{" CUST "," EXP_OK ",\"iss\":\"me\",\"aud\":\"other\"}", 3, NULL,
     AUTH_TOKEN_INVALID},
    {"aud missing", 0, "{" CUST "," EXP_OK ",\"iss\":\"me\"}", 3, NULL, AUTH_TOKEN_INVALID},
};

static void keyset(auth_keys *k, int which)
{
    memset(k, 0, sizeof *k);
    if (which == 0 || which == 2 || which == 3)
        k->secret = strdup(SECRET);
    if (which == 1 || which == 2)
        k->public_pem = strdup(rsa_pub);
    if (which == 3) {
        k->issuer = strdup("me");
        k->audience = strdup("chatd");
    }
}

/* The longest identity claims still pass, whole: org 128 bytes, sub 256 bytes. */
static void test_identity_bounds(void **state)
{
    (void)state;
    char org[129], sub[257], claims[600];
    memset(org, 'o', 128);
    org[128] = '\0';
    memset(sub, 's', 256);
    sub[256] = '\0';
    snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"org\":\"%s\",\"typ\":\"agent\"," EXP_OK "}",
             sub, org);
    char *tok = sign(JWT_ALG_HS256, SECRET, claims);
    auth_keys k;
    keyset(&k, 0);
    auth_principal p;
    assert_int_equal(auth_verify(&k, tok, NULL, NOW, &p), AUTH_OK);
    assert_string_equal(p.org, org);
    assert_string_equal(p.sub, sub);
    auth_principal_free(&p);
    auth_keys_free(&k);
    free(tok);
}

static void test_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        const struct vec *v = &vectors[i];
        char *tok;
        switch (v->kind) {
        case 0: tok = sign(JWT_ALG_HS256, SECRET, v->claims); break;
        case 1: tok = sign(JWT_ALG_RS256, rsa_priv, v->claims); break;
        case 2: tok = sign(JWT_ALG_ES256, ec_priv, v->claims); break;
        case 3: tok = sign(JWT_ALG_RS256, rsa2_priv, v->claims); break;
        case 4: tok = alg_none(v->claims); break;
        case 5: tok = sign(JWT_ALG_HS256, rsa_pub, v->claims); break;
        default: tok = strdup(v->claims); break;
        }
        auth_keys k;
        keyset(&k, v->keyset);
        if (v->kind == 2) { /* ES256 vectors verify against the EC public key */
            free(k.public_pem);
            k.public_pem = strdup(ec_pub);
        }
        auth_principal p;
        auth_err got = auth_verify(&k, tok, v->org_hint, NOW, &p);
        if (got != v->want)
            fail_msg("vector '%s': got %s want %s", v->name, auth_strerror(got),
                     auth_strerror(v->want));
        if (got == AUTH_OK) {
            assert_int_equal(p.role, AUTH_ROLE_CUSTOMER);
            assert_string_equal(p.sub, "u1");
            assert_string_equal(p.org, "acme");
            assert_string_equal(p.key, "u1");
            assert_int_equal(p.max_chats, 3);
        } else {
            assert_null(p.sub);
        }
        auth_principal_free(&p);
        auth_keys_free(&k);
        free(tok);
    }
}

static void test_null_token(void **state)
{
    (void)state;
    auth_keys k;
    keyset(&k, 0);
    auth_principal p;
    assert_int_equal(auth_verify(&k, NULL, NULL, NOW, &p), AUTH_TOKEN_MISSING);
    auth_keys_free(&k);
}

static void test_tampered_payload(void **state)
{
    (void)state;
    auth_keys k;
    keyset(&k, 0);
    char *tok = sign(JWT_ALG_HS256, SECRET, "{" CUST "," EXP_OK "}");
    char *agent = sign(JWT_ALG_HS256, "other", "{\"sub\":\"u1\",\"org\":\"acme\",\"typ\":\"agent\"," EXP_OK "}");
    /* Splice the agent payload into the customer's signed token. */
    char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    char *a1 = strchr(agent, '.'), *a2 = strrchr(agent, '.');
    char buf[4096];
    snprintf(buf, sizeof buf, "%.*s%.*s%s", (int)(d1 - tok), tok, (int)(a2 - a1), a1, d2);
    auth_principal p;
    assert_int_equal(auth_verify(&k, buf, NULL, NOW, &p), AUTH_TOKEN_INVALID);
    free(tok);
    free(agent);
    auth_keys_free(&k);
}

static void test_claims(void **state)
{
    (void)state;
    auth_keys k;
    keyset(&k, 0);
    char *tok = sign(JWT_ALG_HS256, SECRET,
                     "{\"sub\":\"a7\",\"org\":\"acme\",\"typ\":\"agent\",\"name\":\"Ann\","
                     "\"email\":\"ann@x.io\",\"skills\":[\"billing\",\"fr\",3],\"max_chats\":5,"
                     "\"admin\":true,\"exp\":1700003600.5}");
    auth_principal p;
    assert_int_equal(auth_verify(&k, tok, "acme", NOW, &p), AUTH_OK);
    assert_int_equal(p.role, AUTH_ROLE_AGENT);
    assert_string_equal(p.key, "a7"); /* agents: sub, even with an email */
    assert_string_equal(p.name, "Ann");
    assert_string_equal(p.email, "ann@x.io");
    assert_int_equal(p.nskills, 2);
    assert_string_equal(p.skills[0], "billing");
    assert_string_equal(p.skills[1], "fr");
    assert_int_equal(p.max_chats, 5);
    assert_true(p.admin);
    assert_int_equal(p.exp, 1700003600);
    auth_principal_free(&p);
    free(tok);

    /* customers: identity key is the email when present; admin only when === true */
    tok = sign(JWT_ALG_HS256, SECRET,
               "{\"sub\":\"v-1\",\"org\":\"acme\",\"typ\":\"customer\",\"email\":\"c@x.io\","
               "\"admin\":\"yes\"," EXP_OK "}");
    assert_int_equal(auth_verify(&k, tok, NULL, NOW, &p), AUTH_OK);
    assert_int_equal(p.role, AUTH_ROLE_CUSTOMER);
    assert_string_equal(p.key, "c@x.io");
    assert_string_equal(p.sub, "v-1");
    assert_false(p.admin);
    assert_int_equal(p.nskills, 0);
    auth_principal_free(&p);
    free(tok);
    auth_keys_free(&k);
}

static void test_mint_roundtrip(void **state)
{
    (void)state;
    const char *skills[] = {"billing", "de"};
    auth_mint_req req = {.org = "acme", .typ = "agent", .sub = "a1", .name = "Bo",
                         .email = "bo@x.io", .skills = skills, .nskills = 2, .max_chats = 4,
                         .admin = true, .ttl_s = 60};
    char err[256];
    for (int kind = 0; kind < 3; kind++) {
        auth_keys mk = {0}, vk = {0};
        if (kind == 0) {
            mk.secret = strdup(SECRET);
            vk.secret = strdup(SECRET);
        } else {
            mk.private_pem = strdup(kind == 1 ? rsa_priv : ec_priv);
            vk.public_pem = strdup(kind == 1 ? rsa_pub : ec_pub);
        }
        mk.issuer = strdup("me");
        vk.issuer = strdup("me");
        char *tok = NULL;
        assert_int_equal(auth_mint(&mk, &req, NOW, &tok, err, sizeof err), 0);
        auth_principal p;
        assert_int_equal(auth_verify(&vk, tok, NULL, NOW, &p), AUTH_OK);
        assert_int_equal(p.role, AUTH_ROLE_AGENT);
        assert_string_equal(p.sub, "a1");
        assert_int_equal(p.nskills, 2);
        assert_int_equal(p.max_chats, 4);
        assert_true(p.admin);
        assert_int_equal(p.exp, NOW + 60);
        auth_principal_free(&p);
        assert_int_equal(auth_verify(&vk, tok, NULL, NOW + 60, &p), AUTH_TOKEN_EXPIRED);
        free(tok);
        auth_keys_free(&mk);
        auth_keys_free(&vk);
    }
    auth_keys none = {0};
    char *tok = NULL;
    assert_int_equal(auth_mint(&none, &req, NOW, &tok, err, sizeof err), -1);
    assert_null(tok);
    auth_keys k = {.secret = SECRET};
    auth_mint_req bad = req;
    bad.typ = "root";
    assert_int_equal(auth_mint(&k, &bad, NOW, &tok, err, sizeof err), -1);
}

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(auth_strerror(AUTH_TOKEN_MISSING), "token_missing");
    assert_string_equal(auth_strerror(AUTH_TOKEN_INVALID), "token_invalid");
    assert_string_equal(auth_strerror(AUTH_TOKEN_EXPIRED), "token_expired");
    assert_string_equal(auth_strerror(AUTH_ORG_MISMATCH), "org_mismatch");
}

static void test_keys_from_config(void **state)
{
    (void)state;
    char path[] = "/tmp/chatd-auth-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(rsa_pub, f);
    fclose(f);
    chatd_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.jwt_public_key = path;
    cfg.jwt_private_key = rsa_priv; /* inline PEM works too */
    cfg.jwt_audience = "aud1";
    auth_keys k;
    char err[256];
    assert_int_equal(auth_keys_from_config(&k, &cfg, err, sizeof err), 0);
    assert_non_null(k.public_pem);
    assert_non_null(k.private_pem);
    assert_null(k.secret);
    assert_string_equal(k.audience, "aud1");
    auth_keys_free(&k);
    unlink(path);
    cfg.jwt_public_key = "/nonexistent/key.pem";
    assert_int_equal(auth_keys_from_config(&k, &cfg, err, sizeof err), -1);
    auth_keys_free(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_identity_bounds),
        cmocka_unit_test(test_null_token),
        cmocka_unit_test(test_tampered_payload),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_mint_roundtrip),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_keys_from_config),
    };
    return cmocka_run_group_tests(tests, setup_keys, teardown_keys);
}
