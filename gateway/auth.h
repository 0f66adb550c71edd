/* JWT authentication (SPEC section 2). Pure CPU code: libjwt + cJSON + OpenSSL, no I/O except
 * auth_keys_from_config reading PEM files once at start. Time is a parameter.
 *
 * Accepted tokens: HS256/384/512 signed with CHATD_JWT_SECRET, RS256/384/512 or ES256/384/512
 * signed with the key in CHATD_JWT_PUBLIC_KEY. The header's `alg` must match a configured key
 * kind: `alg:none` is always refused and an HS* token is refused when only a public key is
 * configured (the classic "public key used as HMAC secret" forgery). `exp` is required,
 * `nbf`/`iss`/`aud` are checked when present/configured. The role comes from `typ` alone. */
#ifndef CHATD_GATEWAY_AUTH_H
#define CHATD_GATEWAY_AUTH_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

typedef enum auth_err {
    AUTH_OK = 0,
    AUTH_TOKEN_MISSING, /* no token / empty string */
    AUTH_TOKEN_INVALID, /* malformed, bad signature, wrong alg, bad/missing claims, nbf, iss, aud */
    AUTH_TOKEN_EXPIRED, /* now >= exp (+ leeway) */
    AUTH_ORG_MISMATCH,  /* the client's orgId differs from the org claim */
} auth_err;

/* The wire code: "token_missing", "token_invalid", "token_expired", "org_mismatch" ("ok"). */
const char *auth_strerror(auth_err e);

/* Verification/minting keys. Created once at start (auth_keys_from_config or by filling the
 * fields by hand in tests), read-only afterwards, shared by every connection. All strings are
 * owned heap copies freed by auth_keys_free. */
typedef struct auth_keys {
    char *secret;      /* HS* shared secret, or NULL */
    char *public_pem;  /* PEM text of the RS/ES verification key, or NULL */
    char *private_pem; /* PEM text of the RS/ES signing key (auth_mint only), or NULL */
    char *issuer;      /* required `iss` when non-NULL */
    char *audience;    /* required `aud` (string or array member) when non-NULL */
    int leeway_s;      /* clock skew allowed on exp/nbf (0) */
} auth_keys;

/* Fills keys from cfg: jwt_secret, jwt_public_key / jwt_private_key (a PEM file path, or PEM
 * text when the value starts with "-----BEGIN"), jwt_issuer, jwt_audience. Returns 0, or -1 with
 * err set (unreadable file). keys is zeroed first; free with auth_keys_free either way. */
int auth_keys_from_config(auth_keys *keys, const chatd_config *cfg, char *err, size_t errlen);
void auth_keys_free(auth_keys *keys); /* accepts NULL; frees the fields, not keys itself */

typedef enum auth_role { AUTH_ROLE_NONE = 0, AUTH_ROLE_CUSTOMER, AUTH_ROLE_AGENT } auth_role;

/* The verified principal. Strings are owned heap copies; free with auth_principal_free. */
typedef struct auth_principal {
    auth_role role;   /* from `typ` only */
    char *sub;        /* `sub` */
    char *org;        /* `org` */
    char *name;       /* `name`, or NULL */
    char *email;      /* `email`, or NULL */
    char *key;        /* identity key: customers email if present else sub; agents sub */
    char **skills;    /* `skills` strings (nskills), NULL when none */
    size_t nskills;
    int max_chats;    /* `max_chats` (3) */
    bool admin;       /* `admin` === true */
    int64_t exp;      /* `exp`, seconds since the epoch */
} auth_principal;

void auth_principal_free(auth_principal *p); /* accepts NULL; frees fields, zeroes p */

/* Verifies token (untrusted input) at time now (seconds since the epoch). org_hint is the
 * orgId the client sent (NULL or "" = none). On AUTH_OK *out is filled (caller frees with
 * auth_principal_free); on any error *out is left zeroed. */
auth_err auth_verify(const auth_keys *keys, const char *token, const char *org_hint, int64_t now,
                     auth_principal *out);

/* What auth_mint puts in a token. NULL strings are omitted. */
typedef struct auth_mint_req {
    const char *org;
    const char *typ; /* "customer" or "agent" */
    const char *sub;
    const char *name;
    const char *email;
    const char *const *skills;
    size_t nskills;
    int max_chats;   /* < 0: omitted */
    bool admin;      /* true: "admin": true */
    int64_t ttl_s;   /* <= 0: 3600 */
} auth_mint_req;

/* Mints a token: RS256/ES256 with keys->private_pem when set (kind taken from the key), else
 * HS256 with keys->secret. Adds iat, exp = now + ttl, and iss/aud when configured.
 * Returns 0 and *out_token (caller frees with free()), or -1 with err set. */
int auth_mint(const auth_keys *keys, const auth_mint_req *req, int64_t now, char **out_token,
              char *err, size_t errlen);

#endif
