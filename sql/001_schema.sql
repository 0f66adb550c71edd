-- chatd schema (SPEC section 8). Ids are opaque text: a malformed id simply matches no row
-- (not_found), it can never raise a cast error. Applied by `chatd migrate` in one transaction.

-- Id columns use COLLATE "C": ids are opaque byte strings, compared with memcmp (faster b-trees
-- than a linguistic collation, and no locale-dependent ordering of cursors).

-- Orgs exist implicitly (any org in a valid token is usable); rows are created on first use
-- and carry per-org data. No foreign keys point here so nothing has to create them first.
CREATE TABLE orgs (
    id          text COLLATE "C" PRIMARY KEY,
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Widget/chat configurations. `ai` holds {enabled, baseUrl?, model?, systemPrompt?, apiKey?};
-- apiKey is write-only towards clients (never returned by the API).
CREATE TABLE chat_configs (
    id               text COLLATE "C" PRIMARY KEY DEFAULT gen_random_uuid()::text,
    org_id           text COLLATE "C" NOT NULL,
    name             text NOT NULL DEFAULT '',
    greeting         text,
    ai               jsonb NOT NULL DEFAULT '{"enabled": false}'::jsonb,
    skills           text[] NOT NULL DEFAULT '{}',
    priority         int NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    allow_anonymous  boolean NOT NULL DEFAULT false,
    allowed_origins  text[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_configs_org ON chat_configs (org_id, created_at);

-- One conversation. customer_key is the identity key (email claim if present, else sub);
-- customer_id is the token's sub. owner_version is bumped at every AI<->human hand-over so stale
-- AI writes can be refused. last_seq is the last allocated message seq (gap-free per chat).
CREATE TABLE chats (
    id               text COLLATE "C" PRIMARY KEY DEFAULT gen_random_uuid()::text,
    org_id           text COLLATE "C" NOT NULL,
    config_id        text COLLATE "C",
    status           text NOT NULL CHECK (status IN ('ai', 'queued', 'assigned', 'closed')),
    customer_key     text COLLATE "C" NOT NULL,
    customer_id      text COLLATE "C" NOT NULL,
    customer_name    text,
    customer_email   text,
    agent_id         text COLLATE "C",
    agent_name       text,
    skills           text[] NOT NULL DEFAULT '{}',
    priority         int NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    owner_version    int NOT NULL DEFAULT 0,
    last_seq         bigint NOT NULL DEFAULT 0,
    greeted          boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    enqueued_at      timestamptz,
    assigned_at      timestamptz,
    closed_at        timestamptz,
    close_reason     text CHECK (close_reason IN ('customer', 'agent', 'inactivity', 'system')),
    last_message_at  timestamptz
) WITH (fillfactor = 60);
-- fillfactor: every message updates last_seq/last_message_at (not indexed), so free room on the
-- page keeps those updates HOT (no index maintenance, short version chains).
-- A customer has at most one open chat per config (race-safe open-or-reuse).
CREATE UNIQUE INDEX chats_one_open_per_config ON chats (org_id, customer_key, coalesce(config_id, ''))
    WHERE status <> 'closed';
CREATE INDEX chats_org_status ON chats (org_id, status, created_at DESC, id);
CREATE INDEX chats_org_created ON chats (org_id, created_at DESC, id);
CREATE INDEX chats_customer ON chats (org_id, customer_key, created_at DESC);
CREATE INDEX chats_agent_open ON chats (org_id, agent_id) WHERE status = 'assigned';

-- Messages. seq is allocated by chat_append_message() under a row lock on the chat.
-- (chat_id, client_id) makes sends idempotent; NULL client_id (system/ai) never collides.
CREATE TABLE messages (
    id           text COLLATE "C" PRIMARY KEY DEFAULT gen_random_uuid()::text,
    chat_id      text COLLATE "C" NOT NULL, -- no FK: only chat_append_message() inserts, under the chat's lock
    org_id       text COLLATE "C" NOT NULL,
    seq          bigint NOT NULL,
    client_id    text COLLATE "C",
    sender_type  text NOT NULL CHECK (sender_type IN ('customer', 'agent', 'ai', 'system')),
    sender_id    text COLLATE "C",
    sender_name  text,
    text         text NOT NULL DEFAULT '',
    attachments  jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    edited_at    timestamptz,
    deleted_at   timestamptz,
    tsv          tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED,
    CONSTRAINT messages_chat_seq UNIQUE (chat_id, seq),
    CONSTRAINT messages_chat_client UNIQUE (chat_id, client_id)
);
CREATE INDEX messages_tsv ON messages USING gin (tsv);

-- Read markers: monotonic per (chat, reader).
CREATE TABLE read_markers (
    chat_id      text COLLATE "C" NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    reader_type  text NOT NULL CHECK (reader_type IN ('customer', 'agent')),
    reader_id    text COLLATE "C" NOT NULL,
    seq          bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, reader_type, reader_id)
);

-- Audit of every status transition / hand-over (SPEC section 5).
CREATE TABLE chat_events (
    id           bigserial PRIMARY KEY,
    chat_id      text COLLATE "C" NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    org_id       text COLLATE "C" NOT NULL,
    type         text NOT NULL,
    from_status  text,
    to_status    text,
    actor_type   text,
    actor_id     text COLLATE "C",
    data         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_events_chat ON chat_events (chat_id, id);

-- Uploaded files, stored on disk by content hash (sha256). chat_id/message_id are set when the
-- upload is attached to a message; before that it belongs to its uploader only.
CREATE TABLE uploads (
    id             text COLLATE "C" PRIMARY KEY DEFAULT gen_random_uuid()::text,
    org_id         text COLLATE "C" NOT NULL,
    uploader_type  text NOT NULL CHECK (uploader_type IN ('customer', 'agent')),
    uploader_id    text COLLATE "C" NOT NULL,
    chat_id        text COLLATE "C" REFERENCES chats (id) ON DELETE SET NULL,
    message_id     text COLLATE "C",
    name           text NOT NULL DEFAULT '',
    mime           text NOT NULL DEFAULT 'application/octet-stream',
    size           bigint NOT NULL CHECK (size >= 0),
    sha256         text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX uploads_chat ON uploads (chat_id);

-- Per-org statistics: moving average of assigned->closed durations (SPEC 12.10).
CREATE TABLE org_stats (
    org_id              text COLLATE "C" PRIMARY KEY,
    avg_handle_time_s   double precision,
    closed_count        bigint NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
