/* libFuzzer target for JWT verification (gateway/auth.c).
 *
 * Even first byte: the rest is a token as a client sends it (auth.token), verified against an
 * HS256 secret and a public key; random bytes must be refused, never crash or leak.
 * Odd first byte: the rest is a claims object, signed here with the secret (a token only the
 * issuer could make), so every claim path runs: whatever the claims say, the verdict is one of
 * the four errors or a principal that holds what auth.h promises. The second byte picks the
 * org hint, the issuer/audience requirement and the leeway. */
#include <jwt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xalloc.c"
#include "gateway/auth.c"

#define NOW 1700000000
#define SECRET "fuzz-secret-0123456789"

/* A P-256 public key that signs nothing here: an RS/ES token can only be refused. */
static const char pub_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                              "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEdl4+HDZt/tYIFm2+tgjDa5xCWWe4\n"
                              "TxxqCUCoUyzVyu8gfNoOOdw6fDdJQC0zl/ozTsoow1U1Gcp44V7LC+QhQQ==\n"
                              "-----END PUBLIC KEY-----\n";

static void check_principal(const auth_keys *k, const auth_principal *p, const char *hint)
{
    if (p->role != AUTH_ROLE_CUSTOMER && p->role != AUTH_ROLE_AGENT)
        abort();
    if (!p->sub || !*p->sub || !p->org || !*p->org || !p->key)
        abort();
    if (hint && *hint && strcmp(hint, p->org) != 0)
        abort();
    /* identity claims end up in room names and Redis keys: bounded, no control characters */
    if (!id_claim_ok(p->org, AUTH_MAX_ORG) || !id_claim_ok(p->sub, AUTH_MAX_ID) ||
        (p->email && !id_claim_ok(p->email, AUTH_MAX_ID)))
        abort();
    const char *want_key = p->role == AUTH_ROLE_CUSTOMER && p->email ? p->email : p->sub;
    if (strcmp(p->key, want_key) != 0)
        abort();
    if (NOW >= p->exp + k->leeway_s) /* an expired token is never a principal */
        abort();
    if (p->max_chats < 0 || p->max_chats > 100000)
        abort();
    if (p->nskills && !p->skills)
        abort();
    for (size_t i = 0; i < p->nskills; i++)
        if (!p->skills[i] || !*p->skills[i] || !id_claim_ok(p->skills[i], AUTH_MAX_ORG))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t mode = data[0], knobs = data[1];
    char *text = xmalloc(size - 1);
    memcpy(text, data + 2, size - 2);
    text[size - 2] = '\0';
    if (strlen(text) != size - 2) { /* a NUL inside: no client string carries one */
        free(text);
        return 0;
    }
    static const char *const hints[4] = {NULL, "", "acme", "other"};
    const char *hint = hints[knobs & 3];
    auth_keys k = {
        .secret = SECRET,
        .public_pem = (char *)pub_pem,
        .issuer = knobs & 4 ? "me" : NULL,
        .audience = knobs & 8 ? "chatd" : NULL,
        .leeway_s = knobs & 16 ? 30 : 0,
    };

    char *token = text;
    if (mode & 1) {
        jwt_t *jwt = NULL;
        token = NULL;
        if (jwt_new(&jwt) == 0 && jwt_add_grants_json(jwt, text) == 0 &&
            jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)SECRET, (int)strlen(SECRET)) == 0)
            token = jwt_encode_str(jwt);
        jwt_free(jwt);
        if (!token) { /* not a JSON object libjwt takes: nothing to verify */
            free(text);
            return 0;
        }
    }
    auth_principal p;
    auth_err e = auth_verify(&k, token, hint, NOW, &p);
    switch (e) {
    case AUTH_OK:
        check_principal(&k, &p, hint);
        break;
    case AUTH_TOKEN_MISSING:
        if (*token)
            abort();
        /* fall through */
    case AUTH_TOKEN_INVALID:
    case AUTH_TOKEN_EXPIRED:
    case AUTH_ORG_MISMATCH:
        if (p.sub || p.org || p.key || p.skills) /* on error *out stays zeroed */
            abort();
        break;
    default:
        abort();
    }
    auth_principal_free(&p);
    if (token != text)
        free(token);
    free(text);
    return 0;
}
