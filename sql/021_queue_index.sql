-- The queue module's poll (gateway/chat_queue.c) counts the queued chats per org every
-- CHATD_QUEUE_POLL_MS on every node, and a rebuild reads an org's queued chats: a partial index
-- keeps both proportional to the chats waiting, not to every chat ever opened.
CREATE INDEX chats_queued ON chats (org_id, enqueued_at) WHERE status = 'queued';
