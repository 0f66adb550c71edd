/* Redis key layout (see keys.h for the table), script table, argv builder. */
#include "store/keys.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/xalloc.h"
#include <hiredis/hiredis.h>

static bool org_needs_escape(unsigned char c)
{
    return c <= 0x20 || c == '{' || c == '}' || c == '%' || c == ':' || c == 0x7f;
}

void rk_prefix(buf_t *b, const char *org)
{
    static const char hex[] = "0123456789ABCDEF";
    buf_puts(b, "chat:{");
    for (const unsigned char *p = (const unsigned char *)org; *p; p++) {
        if (org_needs_escape(*p)) {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            buf_append(b, e, 3);
        } else {
            buf_putc(b, (char)*p);
        }
    }
    buf_puts(b, "}:");
}

void rk_key(buf_t *b, const char *org, const char *suffix)
{
    rk_prefix(b, org);
    buf_puts(b, suffix);
}

void rk_key2(buf_t *b, const char *org, const char *part1, const char *part2)
{
    rk_prefix(b, org);
    buf_puts(b, part1);
    if (part2)
        buf_puts(b, part2);
}

void rk_identity(buf_t *b, const char *type, const char *id)
{
    buf_puts(b, type);
    buf_putc(b, ':');
    buf_puts(b, id);
}

void rk_sock(buf_t *b, const char *org, const char *sid)
{
    rk_key2(b, org, "sock:", sid);
}

void rk_ident(buf_t *b, const char *org, const char *identity)
{
    rk_key2(b, org, "ident:", identity);
}

void rk_qentry(buf_t *b, const char *org, const char *chat_id)
{
    rk_key2(b, org, "qentry:", chat_id);
}

void rk_assign(buf_t *b, const char *org, const char *chat_id)
{
    rk_key2(b, org, "assign:", chat_id);
}

void rk_timer(buf_t *b, const char *org, const char *kind, const char *chat_id)
{
    rk_prefix(b, org);
    buf_puts(b, "timer:");
    buf_puts(b, kind);
    buf_putc(b, ':');
    buf_puts(b, chat_id);
}

void rk_bus_channel(buf_t *b, const char *org)
{
    rk_key(b, org, "bus");
}

void rk_expired_channel(buf_t *b, int db)
{
    buf_printf(b, "__keyevent@%d__:expired", db);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Unescapes %XX from [p, p+n); returns NULL on a malformed escape. */
static char *org_unescape(const char *p, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%') {
            if (i + 2 >= n) {
                free(out);
                return NULL;
            }
            int h = hexval(p[i + 1]);
            int l = hexval(p[i + 2]);
            if (h < 0 || l < 0) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out[o++] = p[i];
        }
    }
    out[o] = '\0';
    return out;
}

enum rk_key_kind rk_parse_key(const char *key, size_t len, rk_parsed *out)
{
    memset(out, 0, sizeof(*out));
    static const char pre[] = "chat:{";
    size_t pl = sizeof(pre) - 1;
    if (len < pl + 2 || memcmp(key, pre, pl) != 0)
        return RK_KEY_OTHER;
    const char *org = key + pl;
    const char *end = key + len;
    const char *close = memchr(org, '}', (size_t)(end - org));
    if (!close || close + 1 >= end || close[1] != ':' || close == org)
        return RK_KEY_OTHER;
    const char *rest = close + 2;
    size_t rl = (size_t)(end - rest);
    enum rk_key_kind kind = RK_KEY_OTHER;
    const char *type = NULL, *id = NULL;
    size_t tl = 0;
    if (rl > 5 && memcmp(rest, "sock:", 5) == 0) {
        kind = RK_KEY_SOCK;
        id = rest + 5;
    } else if (rl > 6 && memcmp(rest, "timer:", 6) == 0) {
        type = rest + 6;
        const char *colon = memchr(type, ':', (size_t)(end - type));
        if (!colon || colon == type || colon + 1 >= end)
            return RK_KEY_OTHER;
        tl = (size_t)(colon - type);
        id = colon + 1;
        kind = RK_KEY_TIMER;
    } else {
        return RK_KEY_OTHER;
    }
    if (id >= end)
        return RK_KEY_OTHER;
    char *o = org_unescape(org, (size_t)(close - org));
    if (!o)
        return RK_KEY_OTHER;
    out->kind = kind;
    out->org = o;
    out->type = type ? xstrndup(type, tl) : NULL;
    out->id = xstrndup(id, (size_t)(end - id));
    return kind;
}

void rk_parsed_free(rk_parsed *p)
{
    if (!p)
        return;
    free(p->org);
    free(p->type);
    free(p->id);
    memset(p, 0, sizeof(*p));
}

static const char *const script_names[RK_SCRIPT__COUNT] = {
    [RK_SCRIPT_QUEUE_ENQUEUE] = "queue_enqueue",
    [RK_SCRIPT_QUEUE_PICK] = "queue_pick",
    [RK_SCRIPT_QUEUE_DEQUEUE] = "queue_dequeue",
    [RK_SCRIPT_QUEUE_TRANSFER] = "queue_transfer",
    [RK_SCRIPT_QUEUE_POSITION] = "queue_position",
    [RK_SCRIPT_QUEUE_SNAPSHOT] = "queue_snapshot",
    [RK_SCRIPT_CHAT_RELEASE] = "chat_release",
    [RK_SCRIPT_QUEUE_RESTORE] = "queue_restore",
    [RK_SCRIPT_QUEUE_UNTRANSFER] = "queue_untransfer",
    [RK_SCRIPT_PRESENCE_ADD] = "presence_add",
    [RK_SCRIPT_PRESENCE_HEARTBEAT] = "presence_heartbeat",
    [RK_SCRIPT_PRESENCE_REMOVE] = "presence_remove",
    [RK_SCRIPT_PRESENCE_EXPIRED] = "presence_expired",
    [RK_SCRIPT_PRESENCE_SWEEP] = "presence_sweep",
    [RK_SCRIPT_PRESENCE_STATUS] = "presence_status",
    [RK_SCRIPT_TIMER_ARM] = "timer_arm",
    [RK_SCRIPT_TIMER_STOP] = "timer_stop",
    [RK_SCRIPT_TIMER_CLAIM] = "timer_claim",
    [RK_SCRIPT_TIMER_DUE] = "timer_due",
};

const char *rk_script_name(int script)
{
    if (script < 0 || script >= RK_SCRIPT__COUNT)
        return NULL;
    return script_names[script];
}

static int read_file_into(const char *path, buf_t *out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        buf_append(out, tmp, n);
    int err = ferror(f);
    fclose(f);
    if (err) {
        errno = EIO;
        return -1;
    }
    return 0;
}

int rk_script_source(const char *dir, int script, buf_t *out)
{
    const char *name = rk_script_name(script);
    if (!name) {
        errno = EINVAL;
        return -1;
    }
    buf_t path;
    buf_init(&path);
    buf_printf(&path, "%s/lib.lua", dir);
    int rc = read_file_into(path.data, out);
    if (rc == 0) {
        buf_putc(out, '\n');
        buf_reset(&path);
        buf_printf(&path, "%s/%s.lua", dir, name);
        rc = read_file_into(path.data, out);
    }
    buf_free(&path);
    return rc;
}

static bool is_lua_dir(const char *d)
{
    buf_t path;
    struct stat st;
    buf_init(&path);
    buf_printf(&path, "%s/lib.lua", d);
    bool ok = stat(path.data, &st) == 0;
    buf_free(&path);
    return ok;
}

const char *rk_lua_dir(void)
{
    static char found[PATH_MAX];
    const char *env = getenv("CHATD_LUA_DIR");
    if (env && *env)
        return env;
    if (is_lua_dir("lua"))
        return "lua";
    /* next to the binary: build/chatd, build/tests/unit/test_x ... */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
        static const char *const ups[] = {"/lua", "/../lua", "/../../lua", "/../../../lua"};
        for (size_t i = 0; i < ARRAY_LEN(ups); i++) {
            if (strlen(exe) + strlen(ups[i]) + 1 > sizeof(found))
                continue;
            strcpy(found, exe);
            strcat(found, ups[i]);
            if (is_lua_dir(found))
                return found;
        }
    }
    if (is_lua_dir("/usr/share/chatd/lua"))
        return "/usr/share/chatd/lua";
    return "lua";
}

void rk_argv_init(rk_argv *a, int script)
{
    memset(a, 0, sizeof(*a));
    buf_init(&a->data);
    a->script = script;
}

void rk_argv_free(rk_argv *a)
{
    if (!a)
        return;
    buf_free(&a->data);
    a->argc = a->numkeys = 0;
}

void rk_argv_reset(rk_argv *a, int script)
{
    buf_reset(&a->data);
    a->argc = a->numkeys = 0;
    a->overflow = false;
    a->script = script;
}

void rk_argv_arg(rk_argv *a, const char *p, size_t n)
{
    if (a->argc >= RK_ARGV_MAX) {
        a->overflow = true;
        return;
    }
    a->off[a->argc] = a->data.len;
    a->len[a->argc] = n;
    buf_append(&a->data, p, n);
    a->argc++;
}

void rk_argv_key(rk_argv *a, const char *p, size_t n)
{
    if (a->argc != a->numkeys) /* keys after args: a programming error */
        a->overflow = true;
    rk_argv_arg(a, p, n);
    if (!a->overflow)
        a->numkeys++;
}

void rk_argv_args(rk_argv *a, const char *s)
{
    rk_argv_arg(a, s ? s : "", s ? strlen(s) : 0);
}

void rk_argv_argll(rk_argv *a, long long v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%lld", v);
    rk_argv_arg(a, tmp, (size_t)n);
}

void rk_argv_key2(rk_argv *a, const char *org, const char *part1, const char *part2)
{
    buf_t k;
    buf_init(&k);
    rk_key2(&k, org, part1, part2);
    rk_argv_key(a, k.data, k.len);
    buf_free(&k);
}

void rk_argv_keys(rk_argv *a, const char *org, const char *id, const char *const *parts)
{
    for (; *parts; parts++) {
        size_t n = strlen(*parts);
        rk_argv_key2(a, org, *parts, n && (*parts)[n - 1] == ':' ? id : NULL);
    }
}

void rk_argv_prefix(rk_argv *a, const char *org)
{
    buf_t k;
    buf_init(&k);
    rk_prefix(&k, org);
    rk_argv_arg(a, k.data, k.len);
    buf_free(&k);
}

enum rk_status rk_argv_status(const rk_argv *a)
{
    return a->overflow ? RK_ERR_ARG : RK_OK;
}

void rk_argv_copy(rk_argv *dst, const rk_argv *src)
{
    rk_argv_init(dst, src->script);
    dst->numkeys = src->numkeys;
    dst->argc = src->argc;
    dst->overflow = src->overflow;
    memcpy(dst->off, src->off, sizeof(src->off));
    memcpy(dst->len, src->len, sizeof(src->len));
    if (src->data.len)
        buf_append(&dst->data, src->data.data, src->data.len);
}

int rk_argv_resolve(const rk_argv *a, const char *sha, char numbuf[24],
                    const char **argv, size_t *argvlen, int max)
{
    if (a->overflow)
        return -1;
    int n = 0;
    if (a->script != RK_NO_SCRIPT) {
        if (!sha || max < a->argc + 3)
            return -1;
        argv[0] = "EVALSHA";
        argvlen[0] = 7;
        argv[1] = sha;
        argvlen[1] = strlen(sha);
        int nl = snprintf(numbuf, 24, "%d", a->numkeys);
        argv[2] = numbuf;
        argvlen[2] = (size_t)nl;
        n = 3;
    } else if (max < a->argc || a->argc == 0) {
        return -1;
    }
    for (int i = 0; i < a->argc; i++) {
        argv[n] = a->data.data + a->off[i];
        argvlen[n] = a->len[i];
        n++;
    }
    return n;
}

const char *rk_strerror(enum rk_status st)
{
    switch (st) {
    case RK_OK:
        return "ok";
    case RK_ERR_UNAVAILABLE:
        return "redis unavailable";
    case RK_ERR_REDIS:
        return "redis error reply";
    case RK_ERR_SHAPE:
        return "unexpected reply shape";
    case RK_ERR_ARG:
        return "bad argument";
    }
    return "unknown";
}

enum rk_status rk_reply_array(const redisReply *r, size_t min)
{
    if (!r)
        return RK_ERR_UNAVAILABLE;
    if (r->type == REDIS_REPLY_ERROR)
        return RK_ERR_REDIS;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < min)
        return RK_ERR_SHAPE;
    return RK_OK;
}

bool rk_reply_ll(const redisReply *r, long long *out)
{
    if (!r)
        return false;
    if (r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer;
        return true;
    }
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
        if (r->len == 0 || r->len > 22)
            return false;
        char tmp[24];
        memcpy(tmp, r->str, r->len);
        tmp[r->len] = '\0';
        char *end;
        errno = 0;
        long long v = strtoll(tmp, &end, 10);
        if (errno || *end)
            return false;
        *out = v;
        return true;
    }
    return false;
}

char *rk_reply_strdup(const redisReply *r)
{
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS))
        return NULL;
    return xstrndup(r->str, r->len);
}

bool rk_reply_is(const redisReply *r, const char *s)
{
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS))
        return false;
    size_t n = strlen(s);
    return r->len == n && memcmp(r->str, s, n) == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

enum rk_status rk_skills_csv(buf_t *out, const char *const *skills, size_t n)
{
    if (n == 0)
        return RK_OK;
    const char **tmp = xcalloc(n, sizeof(*tmp));
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!skills[i] || !skills[i][0])
            continue;
        if (strchr(skills[i], ',')) {
            free(tmp);
            return RK_ERR_ARG;
        }
        tmp[m++] = skills[i];
    }
    qsort(tmp, m, sizeof(*tmp), cmp_str);
    bool first = true;
    for (size_t i = 0; i < m; i++) {
        if (i > 0 && strcmp(tmp[i], tmp[i - 1]) == 0)
            continue;
        if (!first)
            buf_putc(out, ',');
        buf_puts(out, tmp[i]);
        first = false;
    }
    free(tmp);
    return RK_OK;
}
