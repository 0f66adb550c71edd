/* JWT verification and minting (see auth.h). Pure: libjwt (signatures), cJSON (claims),
 * OpenSSL (key kind detection). The token is untrusted input throughout. */
#include "gateway/auth.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <jwt.h>
#include <math.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"

/* Upper bound on what we are willing to parse: a JWT is a header, not a document. */
#define AUTH_MAX_TOKEN 16384

const char *auth_strerror(auth_err e)
{
    switch (e) {
    case AUTH_OK: return "ok";
    case AUTH_TOKEN_MISSING: return "token_missing";
    case AUTH_TOKEN_INVALID: return "token_invalid";
    case AUTH_TOKEN_EXPIRED: return "token_expired";
    case AUTH_ORG_MISMATCH: return "org_mismatch";
    }
    return "token_invalid";
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *dup_or_null(const char *s)
{
    return s && *s ? xstrdup(s) : NULL;
}

/* Reads a PEM value: inline text when it starts with "-----BEGIN", else a file path. */
static int load_pem(const char *value, char **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!value || !*value)
        return 0;
    if (strncmp(value, "-----BEGIN", 10) == 0) {
        *out = xstrdup(value);
        return 0;
    }
    FILE *f = fopen(value, "rb");
    if (!f) {
        set_err(err, errlen, "%s: %s", value, strerror(errno));
        return -1;
    }
    char *data = xmalloc(65537);
    size_t n = fread(data, 1, 65536, f);
    fclose(f);
    data[n] = '\0';
    if (n == 0 || !strstr(data, "-----BEGIN")) {
        free(data);
        set_err(err, errlen, "%s: not a PEM file", value);
        return -1;
    }
    *out = data;
    return 0;
}

int auth_keys_from_config(auth_keys *keys, const chatd_config *cfg, char *err, size_t errlen)
{
    memset(keys, 0, sizeof *keys);
    keys->secret = dup_or_null(cfg->jwt_secret);
    keys->issuer = dup_or_null(cfg->jwt_issuer);
    keys->audience = dup_or_null(cfg->jwt_audience);
    if (load_pem(cfg->jwt_public_key, &keys->public_pem, err, errlen) < 0)
        return -1;
    if (load_pem(cfg->jwt_private_key, &keys->private_pem, err, errlen) < 0)
        return -1;
    return 0;
}

void auth_keys_free(auth_keys *keys)
{
    if (!keys)
        return;
    free(keys->secret);
    free(keys->public_pem);
    free(keys->private_pem);
    free(keys->issuer);
    free(keys->audience);
    memset(keys, 0, sizeof *keys);
}

void auth_principal_free(auth_principal *p)
{
    if (!p)
        return;
    free(p->sub);
    free(p->org);
    free(p->name);
    free(p->email);
    free(p->key);
    for (size_t i = 0; i < p->nskills; i++)
        free(p->skills[i]);
    free(p->skills);
    memset(p, 0, sizeof *p);
}

/* base64url (no padding required) decode of s[0..n) into a new NUL-terminated string. */
static char *b64url_decode(const char *s, size_t n, size_t *outlen)
{
    char *out = xmalloc(n * 3 / 4 + 4);
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i], v;
        if (c >= 'A' && c <= 'Z') v = c - 'A';
        else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
        else if (c >= '0' && c <= '9') v = c - '0' + 52;
        else if (c == '-' || c == '+') v = 62;
        else if (c == '_' || c == '/') v = 63;
        else if (c == '=') break;
        else { free(out); return NULL; }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    if (outlen)
        *outlen = o;
    return out;
}

/* The `alg` of the token's header, JWT_ALG_INVAL when unreadable. */
static jwt_alg_t header_alg(const char *token)
{
    const char *dot = strchr(token, '.');
    if (!dot)
        return JWT_ALG_INVAL;
    size_t hlen;
    char *hjson = b64url_decode(token, (size_t)(dot - token), &hlen);
    if (!hjson)
        return JWT_ALG_INVAL;
    jwt_alg_t alg = JWT_ALG_INVAL;
    cJSON *h = cJSON_ParseWithLength(hjson, hlen);
    const cJSON *a = h ? cJSON_GetObjectItemCaseSensitive(h, "alg") : NULL;
    if (cJSON_IsString(a))
        alg = jwt_str_alg(a->valuestring);
    cJSON_Delete(h);
    free(hjson);
    return alg;
}

static bool alg_is_hmac(jwt_alg_t a)
{
    return a == JWT_ALG_HS256 || a == JWT_ALG_HS384 || a == JWT_ALG_HS512;
}

static bool alg_is_pub(jwt_alg_t a)
{
    return a == JWT_ALG_RS256 || a == JWT_ALG_RS384 || a == JWT_ALG_RS512 ||
           a == JWT_ALG_ES256 || a == JWT_ALG_ES384 || a == JWT_ALG_ES512;
}

/* A claim that must be a non-empty string, or NULL. */
static const char *claim_str(const cJSON *claims, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(claims, name);
    return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

/* Identity claims: at most max bytes, no control characters (U+0000-U+001F, U+007F). */
#define AUTH_MAX_ORG 128
#define AUTH_MAX_ID 256
static bool id_claim_ok(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f || n >= max)
            return false;
    return true;
}

/* Numeric date claim: 1 present (value in *out), 0 absent, -1 present but not a number or
 * beyond +-2^53 s. A signed token can carry any number, and converting a double that no int64_t
 * holds is undefined (x86 gave INT64_MIN: an `exp` of 1e300 answered "expired"); the bound also
 * keeps `exp + leeway` from overflowing. */
static int claim_time(const cJSON *claims, const char *name, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(claims, name);
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v) || !(fabs(v->valuedouble) <= 9007199254740992.0)) /* NaN fails too */
        return -1;
    *out = (int64_t)floor(v->valuedouble);
    return 1;
}

static bool aud_matches(const cJSON *aud, const char *want)
{
    if (cJSON_IsString(aud))
        return strcmp(aud->valuestring, want) == 0;
    if (cJSON_IsArray(aud)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, aud) {
            if (cJSON_IsString(it) && strcmp(it->valuestring, want) == 0)
                return true;
        }
    }
    return false;
}

/* Claims -> principal. Returns AUTH_OK or the error; fills p only on success. */
static auth_err parse_claims(const auth_keys *keys, const cJSON *c, const char *org_hint,
                             int64_t now, auth_principal *p)
{
    int64_t exp = 0, nbf = 0;
    if (claim_time(c, "exp", &exp) != 1)
        return AUTH_TOKEN_INVALID;
    int has_nbf = claim_time(c, "nbf", &nbf);
    if (has_nbf < 0)
        return AUTH_TOKEN_INVALID;

    const char *sub = claim_str(c, "sub"), *org = claim_str(c, "org"), *typ = claim_str(c, "typ");
    if (!sub || !org || !typ)
        return AUTH_TOKEN_INVALID;
    /* org, sub and email name rooms, Redis keys and the fields of cross-node messages (which
     * are split on '\n'): bounded, so a room name is never cut short (two orgs sharing a
     * 292-character prefix shared their agents' room), and without control characters. */
    const char *email = claim_str(c, "email");
    if (!id_claim_ok(org, AUTH_MAX_ORG) || !id_claim_ok(sub, AUTH_MAX_ID) ||
        (email && !id_claim_ok(email, AUTH_MAX_ID)))
        return AUTH_TOKEN_INVALID;
    auth_role role;
    if (strcmp(typ, "customer") == 0)
        role = AUTH_ROLE_CUSTOMER;
    else if (strcmp(typ, "agent") == 0)
        role = AUTH_ROLE_AGENT;
    else
        return AUTH_TOKEN_INVALID;

    if (keys->issuer) {
        const char *iss = claim_str(c, "iss");
        if (!iss || strcmp(iss, keys->issuer) != 0)
            return AUTH_TOKEN_INVALID;
    }
    if (keys->audience && !aud_matches(cJSON_GetObjectItemCaseSensitive(c, "aud"), keys->audience))
        return AUTH_TOKEN_INVALID;
    if (has_nbf && now + keys->leeway_s < nbf)
        return AUTH_TOKEN_INVALID;

    const cJSON *skills = cJSON_GetObjectItemCaseSensitive(c, "skills");
    if (skills && !cJSON_IsArray(skills) && !cJSON_IsNull(skills))
        return AUTH_TOKEN_INVALID;
    for (const cJSON *sk = cJSON_IsArray(skills) ? skills->child : NULL; sk; sk = sk->next)
        if (cJSON_IsString(sk) && sk->valuestring[0] && !id_claim_ok(sk->valuestring, AUTH_MAX_ORG))
            return AUTH_TOKEN_INVALID;
    const cJSON *maxc = cJSON_GetObjectItemCaseSensitive(c, "max_chats");
    int max_chats = 3;
    if (maxc && !cJSON_IsNull(maxc)) {
        if (!cJSON_IsNumber(maxc) || maxc->valuedouble < 0 || maxc->valuedouble > 100000)
            return AUTH_TOKEN_INVALID;
        max_chats = (int)maxc->valuedouble;
    }
    /* Expiry last among claim checks, but before the org hint: a stale token is "expired"
     * whatever else the client sent. */
    if (now >= exp + keys->leeway_s)
        return AUTH_TOKEN_EXPIRED;
    if (org_hint && *org_hint && strcmp(org_hint, org) != 0)
        return AUTH_ORG_MISMATCH;

    memset(p, 0, sizeof *p);
    p->role = role;
    p->sub = xstrdup(sub);
    p->org = xstrdup(org);
    p->name = dup_or_null(claim_str(c, "name"));
    p->email = dup_or_null(email);
    p->key = xstrdup(role == AUTH_ROLE_CUSTOMER && p->email ? p->email : sub);
    p->max_chats = max_chats;
    p->admin = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "admin"));
    p->exp = exp;
    if (cJSON_IsArray(skills)) {
        int n = cJSON_GetArraySize(skills);
        p->skills = n > 0 ? xcalloc((size_t)n, sizeof *p->skills) : NULL;
        const cJSON *it;
        cJSON_ArrayForEach(it, skills) {
            if (cJSON_IsString(it) && it->valuestring[0])
                p->skills[p->nskills++] = xstrdup(it->valuestring);
        }
    }
    return AUTH_OK;
}

auth_err auth_verify(const auth_keys *keys, const char *token, const char *org_hint, int64_t now,
                     auth_principal *out)
{
    memset(out, 0, sizeof *out);
    if (!token || !*token)
        return AUTH_TOKEN_MISSING;
    if (strlen(token) > AUTH_MAX_TOKEN)
        return AUTH_TOKEN_INVALID;

    /* Choose the key from the header's alg, and refuse any alg we have no key kind for. */
    jwt_alg_t alg = header_alg(token);
    const char *key = NULL;
    if (alg_is_hmac(alg) && keys->secret)
        key = keys->secret;
    else if (alg_is_pub(alg) && keys->public_pem)
        key = keys->public_pem;
    if (!key || !*key)
        return AUTH_TOKEN_INVALID;

    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, token, (const unsigned char *)key, (int)strlen(key)) != 0 || !jwt)
        return AUTH_TOKEN_INVALID;
    auth_err rc = AUTH_TOKEN_INVALID;
    char *json = NULL;
    cJSON *claims = NULL;
    /* Belt and braces: libjwt must have verified with the alg we chose the key for. */
    if (jwt_get_alg(jwt) != alg)
        goto out;
    json = jwt_get_grants_json(jwt, NULL);
    if (!json)
        goto out;
    claims = cJSON_Parse(json);
    if (!cJSON_IsObject(claims))
        goto out;
    rc = parse_claims(keys, claims, org_hint, now, out);
out:
    cJSON_Delete(claims);
    free(json);
    jwt_free(jwt);
    return rc;
}

/* RS256 or ES256 from the kind of the private key; JWT_ALG_INVAL if unreadable/other. */
static jwt_alg_t private_key_alg(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (!bio)
        return JWT_ALG_INVAL;
    EVP_PKEY *pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!pk)
        return JWT_ALG_INVAL;
    jwt_alg_t alg = JWT_ALG_INVAL;
    switch (EVP_PKEY_base_id(pk)) {
    case EVP_PKEY_RSA: alg = JWT_ALG_RS256; break;
    case EVP_PKEY_EC: alg = JWT_ALG_ES256; break;
    default: break;
    }
    EVP_PKEY_free(pk);
    return alg;
}

int auth_mint(const auth_keys *keys, const auth_mint_req *req, int64_t now, char **out_token,
              char *err, size_t errlen)
{
    *out_token = NULL;
    if (!req->org || !*req->org || !req->sub || !*req->sub || !req->typ ||
        (strcmp(req->typ, "customer") != 0 && strcmp(req->typ, "agent") != 0)) {
        set_err(err, errlen, "org, sub and typ (customer|agent) are required");
        return -1;
    }
    jwt_alg_t alg;
    const char *key;
    if (keys->private_pem) {
        alg = private_key_alg(keys->private_pem);
        key = keys->private_pem;
        if (alg == JWT_ALG_INVAL) {
            set_err(err, errlen, "private key is not a readable RSA or EC PEM key");
            return -1;
        }
    } else if (keys->secret && *keys->secret) {
        alg = JWT_ALG_HS256;
        key = keys->secret;
    } else {
        set_err(err, errlen, "no signing key: set CHATD_JWT_SECRET or CHATD_JWT_PRIVATE_KEY");
        return -1;
    }

    int64_t ttl = req->ttl_s > 0 ? req->ttl_s : 3600;
    cJSON *c = cJSON_CreateObject();
    jwt_t *jwt = NULL;
    char *json = NULL;
    int rc = -1;
    if (!c)
        goto fail;
    cJSON_AddStringToObject(c, "sub", req->sub);
    cJSON_AddStringToObject(c, "org", req->org);
    cJSON_AddStringToObject(c, "typ", req->typ);
    if (req->name)
        cJSON_AddStringToObject(c, "name", req->name);
    if (req->email)
        cJSON_AddStringToObject(c, "email", req->email);
    if (req->nskills) {
        cJSON *arr = cJSON_AddArrayToObject(c, "skills");
        for (size_t i = 0; arr && i < req->nskills; i++)
            cJSON_AddItemToArray(arr, cJSON_CreateString(req->skills[i]));
    }
    if (req->max_chats >= 0)
        cJSON_AddNumberToObject(c, "max_chats", req->max_chats);
    if (req->admin)
        cJSON_AddTrueToObject(c, "admin");
    if (keys->issuer)
        cJSON_AddStringToObject(c, "iss", keys->issuer);
    if (keys->audience)
        cJSON_AddStringToObject(c, "aud", keys->audience);
    cJSON_AddNumberToObject(c, "iat", (double)now);
    cJSON_AddNumberToObject(c, "exp", (double)(now + ttl));
    json = cJSON_PrintUnformatted(c);
    if (!json || jwt_new(&jwt) != 0 || !jwt)
        goto fail;
    if (jwt_add_grants_json(jwt, json) != 0 ||
        jwt_set_alg(jwt, alg, (const unsigned char *)key, (int)strlen(key)) != 0)
        goto fail;
    *out_token = jwt_encode_str(jwt);
    if (!*out_token)
        goto fail;
    rc = 0;
    goto out;
fail:
    set_err(err, errlen, "could not mint the token (bad key?)");
out:
    jwt_free(jwt);
    free(json);
    cJSON_Delete(c);
    return rc;
}
