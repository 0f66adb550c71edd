#include "gateway/sio_packet.h"

#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"

static const char *const reserved[] = {"connect",       "connect_error",  "disconnect",
                                       "disconnecting", "newListener",    "removeListener"};

bool sio_reserved_event(const char *name)
{
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (!strcmp(name, reserved[i]))
            return true;
    return false;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Strict JSON syntax check (RFC 8259, what JSON.parse accepts), run before
 * cJSON. cJSON alone is lenient: it takes raw control characters inside
 * strings, any byte <= 0x20 as whitespace, "01" and "1." as numbers. The
 * gateway forwards payload bytes unchanged (broadcasts, echoes), and
 * socket.io-client's JSON.parse throws on such input and drops its connection
 * ("parse error"), so one sender could disconnect a whole room. Strings must
 * also be valid UTF-8: a WebSocket client closes on invalid UTF-8 in a text
 * frame. Returns 0 when [s, s+len) is one JSON value with optional whitespace. */
#define JSON_MAX_DEPTH 1000 /* cJSON's CJSON_NESTING_LIMIT */

static size_t json_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* One UTF-8 sequence starting at s[i] (s[i] >= 0x80); returns its length or 0. */
static size_t utf8_seq(const unsigned char *s, size_t len, size_t i)
{
    unsigned char c = s[i];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (len - i < n)
        return 0;
    if (s[i + 1] < lo || s[i + 1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if (s[i + k] < 0x80 || s[i + k] > 0xBF)
            return 0;
    return n;
}

static int json_string(const char *s, size_t len, size_t *pos)
{
    size_t i = *pos + 1; /* past the opening quote */
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') {
            *pos = i + 1;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            if (++i >= len)
                return -1;
            if (s[i] == 'u') {
                if (len - i < 5)
                    return -1;
                for (int k = 1; k <= 4; k++)
                    if (!strchr("0123456789abcdefABCDEF", s[i + k]) || s[i + k] == '\0')
                        return -1;
                i += 5;
            } else if (s[i] != '\0' && strchr("\"\\/bfnrt", s[i])) {
                i++;
            } else {
                return -1;
            }
        } else if (c >= 0x80) {
            size_t n = utf8_seq((const unsigned char *)s, len, i);
            if (!n)
                return -1;
            i += n;
        } else {
            i++;
        }
    }
    return -1;
}

static int json_number(const char *s, size_t len, size_t *pos)
{
    size_t i = *pos;
    if (i < len && s[i] == '-')
        i++;
    if (i < len && s[i] == '0')
        i++;
    else if (i < len && s[i] >= '1' && s[i] <= '9')
        while (i < len && is_digit(s[i]))
            i++;
    else
        return -1;
    if (i < len && s[i] == '.') {
        if (++i >= len || !is_digit(s[i]))
            return -1;
        while (i < len && is_digit(s[i]))
            i++;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= len || !is_digit(s[i]))
            return -1;
        while (i < len && is_digit(s[i]))
            i++;
    }
    *pos = i;
    return 0;
}

static int json_value(const char *s, size_t len, size_t *pos, int depth)
{
    size_t i = json_ws(s, len, *pos);
    if (i >= len || depth > JSON_MAX_DEPTH)
        return -1;
    char c = s[i];
    if (c == '"') {
        if (json_string(s, len, &i))
            return -1;
    } else if (c == '[' || c == '{') {
        char close = c == '[' ? ']' : '}';
        i = json_ws(s, len, i + 1);
        if (i < len && s[i] == close) {
            i++;
        } else {
            for (;;) {
                if (c == '{') {
                    i = json_ws(s, len, i);
                    if (i >= len || s[i] != '"' || json_string(s, len, &i))
                        return -1;
                    i = json_ws(s, len, i);
                    if (i >= len || s[i] != ':')
                        return -1;
                    i++;
                }
                if (json_value(s, len, &i, depth + 1))
                    return -1;
                i = json_ws(s, len, i);
                if (i >= len)
                    return -1;
                if (s[i] == close) {
                    i++;
                    break;
                }
                if (s[i] != ',')
                    return -1;
                i++;
            }
        }
    } else if (c == '-' || is_digit(c)) {
        if (json_number(s, len, &i))
            return -1;
    } else if (len - i >= 4 && !memcmp(s + i, "true", 4)) {
        i += 4;
    } else if (len - i >= 5 && !memcmp(s + i, "false", 5)) {
        i += 5;
    } else if (len - i >= 4 && !memcmp(s + i, "null", 4)) {
        i += 4;
    } else {
        return -1;
    }
    *pos = i;
    return 0;
}

static int json_strict(const char *s, size_t len)
{
    size_t i = 0;
    if (json_value(s, len, &i, 0))
        return -1;
    return json_ws(s, len, i) == len ? 0 : -1;
}

static unsigned hex4(const char *p)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p[k];
        v = v << 4 | (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

/* JSON.parse accepts escaped lone UTF-16 surrogates ("\ud800"), and
 * JSON.stringify writes them for a string cut inside a surrogate pair (an emoji
 * truncated with slice()); cJSON refuses them. For JSON that json_strict
 * accepted, rewrites each lone surrogate escape into "\ufffd" (same length, so
 * offsets do not move) in place, for cJSON's sake only: the packet bytes that
 * are forwarded stay as received. Returns the number of escapes rewritten. */
static size_t json_fix_lone_surrogates(char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\\')
            continue;
        if (s[i + 1] != 'u') { /* validated: an escape always has its next char */
            i++;
            continue;
        }
        unsigned v = hex4(s + i + 2);
        if (v >= 0xD800 && v <= 0xDBFF && i + 11 < len && s[i + 6] == '\\' && s[i + 7] == 'u') {
            unsigned w = hex4(s + i + 8);
            if (w >= 0xDC00 && w <= 0xDFFF) {
                i += 11; /* a proper pair */
                continue;
            }
        }
        if (v >= 0xD800 && v <= 0xDFFF) {
            memcpy(s + i + 2, "fffd", 4);
            n++;
        }
        i += 5;
    }
    return n;
}

/* The payload shapes the reference parser accepts per type. */
static bool payload_valid(enum sio_type type, const cJSON *j)
{
    switch (type) {
    case SIO_CONNECT:
        return cJSON_IsObject(j);
    case SIO_DISCONNECT:
        return false; /* DISCONNECT carries no payload */
    case SIO_CONNECT_ERROR:
        return cJSON_IsString(j) || cJSON_IsObject(j);
    case SIO_EVENT:
    case SIO_BINARY_EVENT: {
        if (!cJSON_IsArray(j) || !j->child)
            return false;
        const cJSON *first = j->child;
        if (cJSON_IsNumber(first))
            return true;
        return cJSON_IsString(first) && !sio_reserved_event(first->valuestring);
    }
    case SIO_ACK:
    case SIO_BINARY_ACK:
        return cJSON_IsArray(j);
    }
    return false;
}

bool sio_json_valid(const char *s, size_t len)
{
    return json_strict(s, len) == 0;
}

bool sio_text_valid(const char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_seq((const unsigned char *)s, len, i);
        if (!n)
            return false;
        i += n;
    }
    return true;
}

bool sio_json_has_nul(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\\')
            continue;
        if (i + 5 < len && s[i + 1] == 'u' && !memcmp(s + i + 2, "0000", 4))
            return true;
        i++; /* the escaped character, a backslash included */
    }
    return false;
}

int sio_decode(const char *buf, size_t len, sio_packet *out)
{
    size_t i = 0;
    memset(out, 0, sizeof *out);
    out->ack_id = -1;
    out->nsp = "/";
    out->nsp_len = 1;
    if (len == 0)
        return SIO_ERR_EMPTY;
    if (buf[0] < '0' || buf[0] > '6')
        return SIO_ERR_TYPE;
    out->type = (enum sio_type)(buf[0] - '0');
    i = 1;

    if (out->type == SIO_BINARY_EVENT || out->type == SIO_BINARY_ACK) {
        size_t start = i;
        int n = 0;
        while (i < len && is_digit(buf[i])) {
            n = n * 10 + (buf[i] - '0');
            if (n > SIO_MAX_ATTACHMENTS)
                return SIO_ERR_ATTACHMENTS;
            i++;
        }
        if (i == start || i >= len || buf[i] != '-' || n < 1)
            return SIO_ERR_ATTACHMENTS;
        out->attachments = n;
        i++;
    }

    if (i < len && buf[i] == '/') {
        size_t start = i;
        while (i < len && buf[i] != ',')
            i++;
        out->nsp = buf + start;
        out->nsp_len = i - start;
        if (i < len)
            i++; /* the comma */
    }

    if (i < len && is_digit(buf[i])) {
        int64_t id = 0;
        int digits = 0;
        while (i < len && is_digit(buf[i])) {
            if (++digits > 15)
                return SIO_ERR_ACK_ID;
            id = id * 10 + (buf[i] - '0');
            i++;
        }
        out->ack_id = id;
    }

    if (i < len) {
        const char *end = NULL;
        if (json_strict(buf + i, len - i) != 0)
            return SIO_ERR_JSON;
        cJSON *j = cJSON_ParseWithLengthOpts(buf + i, len - i, &end, false);
        if (!j) {
            /* Valid JSON that cJSON refuses: lone surrogate escapes. */
            char *copy = xmalloc(len - i);
            memcpy(copy, buf + i, len - i);
            if (json_fix_lone_surrogates(copy, len - i))
                j = cJSON_ParseWithLengthOpts(copy, len - i, &end, false);
            if (j)
                end = buf + i + (end - copy);
            free(copy);
            if (!j)
                return SIO_ERR_JSON;
        }
        /* The whole rest must be the JSON value (trailing whitespace allowed). */
        while (end < buf + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
            end++;
        if (end != buf + len) {
            cJSON_Delete(j);
            return SIO_ERR_JSON;
        }
        if (!payload_valid(out->type, j)) {
            cJSON_Delete(j);
            return SIO_ERR_PAYLOAD;
        }
        out->json = j;
        out->data = buf + i;
        out->data_len = len - i;
    } else if (out->type == SIO_EVENT || out->type == SIO_BINARY_EVENT || out->type == SIO_ACK ||
               out->type == SIO_BINARY_ACK || out->type == SIO_CONNECT_ERROR) {
        return SIO_ERR_PAYLOAD; /* these need a payload */
    }
    if (out->type == SIO_BINARY_EVENT || out->type == SIO_BINARY_ACK) {
        if (sio_count_placeholders(out->json, out->attachments) < 0) {
            sio_packet_clear(out);
            return SIO_ERR_ATTACHMENTS;
        }
    }
    return SIO_OK;
}

void sio_packet_clear(sio_packet *p)
{
    cJSON_Delete(p->json);
    p->json = NULL;
}

void sio_encode_header(buf_t *out, enum sio_type type, const char *nsp, int attachments,
                       int64_t ack_id)
{
    buf_putc(out, (char)('0' + type));
    if (type == SIO_BINARY_EVENT || type == SIO_BINARY_ACK)
        buf_printf(out, "%d-", attachments);
    if (nsp && strcmp(nsp, "/") != 0) {
        buf_puts(out, nsp);
        buf_putc(out, ',');
    }
    if (ack_id >= 0)
        buf_printf(out, "%lld", (long long)ack_id);
}

static size_t skip_ws(const char *d, size_t len, size_t i)
{
    while (i < len && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r'))
        i++;
    return i;
}

int sio_skip_first_element(const char *data, size_t len, size_t *after)
{
    size_t i = skip_ws(data, len, 0);
    if (i >= len || data[i] != '[')
        return -1;
    i = skip_ws(data, len, i + 1);
    if (i >= len)
        return -1;
    if (data[i] == '"') {
        for (i++; i < len && data[i] != '"'; i++)
            if (data[i] == '\\')
                i++;
        if (i >= len)
            return -1;
        i++;
    } else if (data[i] == '-' || is_digit(data[i])) {
        while (i < len && (is_digit(data[i]) || (data[i] != '\0' && strchr("+-.eE", data[i]))))
            i++;
    } else {
        return -1;
    }
    i = skip_ws(data, len, i);
    if (i >= len || (data[i] != ',' && data[i] != ']'))
        return -1;
    *after = i;
    return 0;
}

static int count_rec(const cJSON *j, int attachments, int depth)
{
    if (!j || depth > 64)
        return depth > 64 ? -1 : 0;
    if (cJSON_IsObject(j)) {
        const cJSON *ph = cJSON_GetObjectItemCaseSensitive(j, "_placeholder");
        if (cJSON_IsTrue(ph)) {
            const cJSON *num = cJSON_GetObjectItemCaseSensitive(j, "num");
            if (!cJSON_IsNumber(num) || num->valuedouble < 0 || num->valuedouble >= attachments ||
                num->valuedouble != (double)num->valueint)
                return -1;
            return 1;
        }
    }
    int total = 0;
    if (cJSON_IsObject(j) || cJSON_IsArray(j)) {
        for (const cJSON *c = j->child; c; c = c->next) {
            int n = count_rec(c, attachments, depth + 1);
            if (n < 0)
                return -1;
            total += n;
        }
    }
    return total;
}

int sio_count_placeholders(const cJSON *json, int attachments)
{
    return count_rec(json, attachments, 0);
}

const char *sio_strerror(int status)
{
    switch (status) {
    case SIO_OK: return "ok";
    case SIO_ERR_EMPTY: return "empty packet";
    case SIO_ERR_TYPE: return "unknown packet type";
    case SIO_ERR_ATTACHMENTS: return "illegal attachments";
    case SIO_ERR_ACK_ID: return "invalid ack id";
    case SIO_ERR_JSON: return "invalid JSON payload";
    case SIO_ERR_PAYLOAD: return "invalid payload for packet type";
    }
    return "unknown error";
}
