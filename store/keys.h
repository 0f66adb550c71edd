/* store/keys.h — the Redis key layout of chatd, in one place, plus the
 * table of Lua scripts in lua/ and a small argv builder for them.
 * Pure code: libc and common/ only, usable from unit tests.
 *
 * Every key of an org starts with the prefix "chat:{ORG}:" where ORG is the
 * org id with '{', '}', '%', ':' and bytes <= 0x20 percent-escaped. The
 * braces are a Redis Cluster hash tag: all keys of one org hash to one slot,
 * so every script (which only touches keys of one org) is Cluster-safe.
 * An identity is "agent:SUB" or "customer:KEY" (KEY = email claim or sub).
 *
 *   key (after chat:{ORG}:)  type    content
 *   ----------------------   ------  ------------------------------------------
 *   sock:SID                 string  node id; PX = socket TTL, refreshed by
 *                                    heartbeats; its expiry cleans presence up
 *   sockident                hash    SID -> identity (survives the sock key, so
 *                                    the expired event can find the identity)
 *   ident:agent:SUB          set     socket ids of that identity (all nodes)
 *   ident:customer:KEY       set     idem
 *   status                   hash    identity -> "online" | "away" (absent =
 *                                    offline)
 *   agentload                hash    agent SUB -> chats currently assigned
 *   agentmax                 hash    agent SUB -> max_chats (from the token)
 *   queue                    zset    member "SEQ:CHATID" (SEQ 12 digits, enqueue
 *                                    order), score (9-priority)*1e13 + enqueuedAt
 *                                    ms: priority 9 first, then FIFO
 *   qsig:A,B                 zset    same members/scores, one zset per distinct
 *                                    required-skill set (sorted, comma joined;
 *                                    "qsig:" alone = no skill required)
 *   qsigs                    set     the skill sets that have a qsig zset
 *   qhead                    hash    skill set -> "score|member" of its first entry
 *   qsigf:SKILL              set     those skill sets whose first skill is SKILL
 *                                    (pick-next only inspects the sets starting
 *                                    with one of the agent's skills)
 *   qseq                     string  INCR counter for SEQ
 *   qentry:CHATID            hash    chat, member, skills, sig, priority,
 *                                    enqueuedAt (ms), preview
 *   assign:CHATID            hash    agent, assignedAt, and the queue entry it
 *                                    came from (priority, enqueuedAt, skills,
 *                                    member, preview) for transfer/release
 *   aht                      string  average handle time in s (mean of the last
 *                                    20 closes); absent = CHATD_DEFAULT_HANDLE_TIME_S
 *   ahtwin                   list    last 20 assigned->closed durations in ms
 *   timer:KIND:CHATID        string  chat id; PX = delay; KIND = warn | close |
 *                                    reply; expiry = keyspace notification
 *   timers                   zset    "KIND:CHATID" -> deadline ms (Redis clock):
 *                                    the claim token and the reconciler's index
 *   agentname                hash    agent SUB -> display name (set at connect;
 *                                    transfer-chat to an agent on another node)
 *   qreply:CHATID            string  chat id; PX = CHATD_AGENT_REPLY_TIMEOUT_S;
 *                                    its expiry requeues an unanswered chat
 *   qreplies                 zset    "reply:CHATID" -> deadline ms: claim token
 *                                    and reconciler index of qreply keys
 *   bus                      channel pub/sub channel for cross-node fan-out
 *
 * Global (no hash tag, never used inside a script):
 *   chat:orgs                set     orgs with presence or timers, for the
 *                                    reconcilers (SADD once per org per process)
 *   chat:qreplyorgs          set     orgs with no-reply timers (queue reconciler)
 *
 * Keyspace notifications: "__keyevent@DB__:expired" carries the key name;
 * rk_parse_key() tells sock / timer keys apart and extracts org and id.
 */
#ifndef CHATD_STORE_KEYS_H
#define CHATD_STORE_KEYS_H
#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

#define RK_ORGS_KEY "chat:orgs"

/* Appends "chat:{ORG}:" (org escaped) to b. */
void rk_prefix(buf_t *b, const char *org);
/* Appends "chat:{ORG}:" + suffix. */
void rk_key(buf_t *b, const char *org, const char *suffix);
/* Appends "chat:{ORG}:" + part1 + part2 (part2 may be NULL). */
void rk_key2(buf_t *b, const char *org, const char *part1, const char *part2);
/* Appends an identity "agent:SUB" / "customer:KEY" (type is "agent" or "customer"). */
void rk_identity(buf_t *b, const char *type, const char *id);

/* Convenience builders (append to b). */
void rk_sock(buf_t *b, const char *org, const char *sid);
void rk_ident(buf_t *b, const char *org, const char *identity);
void rk_qentry(buf_t *b, const char *org, const char *chat_id);
void rk_assign(buf_t *b, const char *org, const char *chat_id);
void rk_timer(buf_t *b, const char *org, const char *kind, const char *chat_id);
void rk_bus_channel(buf_t *b, const char *org);
/* "__keyevent@DB__:expired" */
void rk_expired_channel(buf_t *b, int db);

enum rk_key_kind {
    RK_KEY_OTHER = 0,
    RK_KEY_SOCK,  /* chat:{ORG}:sock:SID            id = SID */
    RK_KEY_TIMER, /* chat:{ORG}:timer:KIND:CHATID   kind = KIND, id = CHATID */
};

/* Result of rk_parse_key; strings are heap copies (rk_parsed_free). */
typedef struct rk_parsed {
    enum rk_key_kind kind;
    char *org;    /* unescaped */
    char *type;   /* timer kind, NULL otherwise */
    char *id;
} rk_parsed;

/* Parses a key name (from an expired event; untrusted length, not
 * NUL-terminated). Returns the kind; on RK_KEY_OTHER nothing is allocated. */
enum rk_key_kind rk_parse_key(const char *key, size_t len, rk_parsed *out);
void rk_parsed_free(rk_parsed *p);

/* The Lua scripts in lua/ (file = name + ".lua", lib.lua prepended). */
enum rk_script {
    RK_SCRIPT_QUEUE_ENQUEUE,
    RK_SCRIPT_QUEUE_PICK,
    RK_SCRIPT_QUEUE_DEQUEUE,
    RK_SCRIPT_QUEUE_TRANSFER,
    RK_SCRIPT_QUEUE_POSITION,
    RK_SCRIPT_QUEUE_SNAPSHOT,
    RK_SCRIPT_CHAT_RELEASE,
    RK_SCRIPT_QUEUE_RESTORE,
    RK_SCRIPT_QUEUE_UNTRANSFER,
    RK_SCRIPT_PRESENCE_ADD,
    RK_SCRIPT_PRESENCE_HEARTBEAT,
    RK_SCRIPT_PRESENCE_REMOVE,
    RK_SCRIPT_PRESENCE_EXPIRED,
    RK_SCRIPT_PRESENCE_SWEEP,
    RK_SCRIPT_PRESENCE_STATUS,
    RK_SCRIPT_TIMER_ARM,
    RK_SCRIPT_TIMER_STOP,
    RK_SCRIPT_TIMER_CLAIM,
    RK_SCRIPT_TIMER_DUE,
    RK_SCRIPT__COUNT
};
#define RK_NO_SCRIPT (-1)

const char *rk_script_name(int script); /* "queue_pick"; NULL if out of range */
/* Reads dir/lib.lua + dir/NAME.lua into out (appended). Returns 0, or -1
 * with errno set when a file cannot be read. Blocking file I/O: call at start. */
int rk_script_source(const char *dir, int script, buf_t *out);
/* The lua directory: $CHATD_LUA_DIR, else "lua" if it exists, else the
 * installed path. Borrowed static string. */
const char *rk_lua_dir(void);

/* Argument vector for one script call or plain command. Keys come first
 * (rk_argv_key), then arguments (rk_argv_arg*). Storage is owned by the
 * struct; rk_argv_free releases it. */
#define RK_ARGV_MAX 48
typedef struct rk_argv {
    int script;  /* enum rk_script, or RK_NO_SCRIPT for a plain command */
    int numkeys;
    int argc;
    bool overflow; /* more than RK_ARGV_MAX items were added (calls must fail) */
    size_t off[RK_ARGV_MAX];
    size_t len[RK_ARGV_MAX];
    buf_t data;
} rk_argv;

void rk_argv_init(rk_argv *a, int script);
void rk_argv_free(rk_argv *a);
void rk_argv_reset(rk_argv *a, int script);
void rk_argv_key(rk_argv *a, const char *p, size_t n);     /* must precede args */
void rk_argv_arg(rk_argv *a, const char *p, size_t n);
void rk_argv_args(rk_argv *a, const char *s);              /* NUL-terminated */
void rk_argv_argll(rk_argv *a, long long v);
void rk_argv_copy(rk_argv *dst, const rk_argv *src);       /* dst initialised by this call */

/* Resolves the items into argv/argvlen (at least argc entries; pointers are
 * valid until the next add/free). For a script the layout is
 * "EVALSHA" sha numkeys keys... args... (numbuf holds the numkeys digits),
 * for a plain command just the items. Returns the resulting argc, or -1 on
 * overflow / too small arrays. */
int rk_argv_resolve(const rk_argv *a, const char *sha, char numbuf[24],
                    const char **argv, size_t *argvlen, int max);

/* Outcome of decoding a script reply (queue/, presence/ decoders). */
enum rk_status {
    RK_OK = 0,
    RK_ERR_UNAVAILABLE, /* no reply: connection lost / Redis down */
    RK_ERR_REDIS,       /* Redis answered with an error reply */
    RK_ERR_SHAPE,       /* the reply does not have the documented shape */
    RK_ERR_ARG,         /* bad arguments given to a builder */
};
const char *rk_strerror(enum rk_status st);

/* Builder helpers shared by queue/ and presence/: the key "chat:{org}:" +
 * part1 + part2 (part2 may be NULL), the bare org prefix as an argument, and
 * the builder outcome (RK_ERR_ARG when an item did not fit). */
void rk_argv_key2(rk_argv *a, const char *org, const char *part1, const char *part2);
/* A script's KEYS in order, from a NULL-terminated list of parts: a part ending in ':' is
 * followed by id ("qentry:" -> chat:{org}:qentry:<id>), the others stand alone. */
void rk_argv_keys(rk_argv *a, const char *org, const char *id, const char *const *parts);
void rk_argv_prefix(rk_argv *a, const char *org);
enum rk_status rk_argv_status(const rk_argv *a);

struct redisReply;
/* Shared decoder helpers (hiredis sync reply structs; pure).
 * rk_reply_array: NULL -> UNAVAILABLE, error -> REDIS, not an array of at
 * least min elements -> SHAPE. */
enum rk_status rk_reply_array(const struct redisReply *r, size_t min);
/* Integer element (also accepts a bulk string holding an integer). */
bool rk_reply_ll(const struct redisReply *r, long long *out);
/* String element (bulk/status) copied to the heap; NULL when not a string. */
char *rk_reply_strdup(const struct redisReply *r);
/* Compares a string element with s. */
bool rk_reply_is(const struct redisReply *r, const char *s);

/* Normalises a skill list into "a,b" (sorted, unique, empty items dropped),
 * appended to out. Returns RK_ERR_ARG if a skill contains ','. */
enum rk_status rk_skills_csv(buf_t *out, const char *const *skills, size_t n);

#endif
