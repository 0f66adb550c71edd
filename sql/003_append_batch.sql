-- chat_append_batch: many appends in one call (multi-row write), same semantics per item as
-- chat_append_message() without uploads. p_items is a JSON array of
--   {"chat": id, "cid": clientId|null, "st": senderType, "sid": senderId, "sn": senderName,
--    "text": text, "att": [..]|null, "org": orgId|null, "ov": ownerVersion|null}
-- and one row per item comes back, in input order, idx = 0-based position.
-- Chats are locked in id order first (no deadlock between batches), then one statement with a
-- fresh snapshot (READ COMMITTED) classifies every item, numbers the new messages per chat
-- (last_seq + 1 .., gap-free, in input order), inserts them and advances last_seq.
-- A clientId repeated inside one batch behaves like a retry: the first occurrence is stored,
-- the later ones answer 'replay' with the same message.
-- The statement is written with window functions rather than joins between CTEs (whose row
-- counts the planner cannot estimate), so its cost stays linear in the batch size.
CREATE FUNCTION chat_append_batch(p_items jsonb)
RETURNS TABLE (
    idx           int,
    status        text,
    id            text,
    chat_id       text,
    seq           bigint,
    client_id     text,
    sender_type   text,
    sender_id     text,
    sender_name   text,
    text          text,
    attachments   text,
    created_at    text,
    edited_at     text,
    deleted_at    text,
    chat_status   text,
    owner_version int,
    last_seq      bigint,
    org_id        text,
    customer_key  text,
    agent_id      text)
LANGUAGE plpgsql AS $$
DECLARE
    v_ids text[];
BEGIN
    -- An array (not IN (subquery)) so both chat lookups are index scans.
    SELECT array_agg(DISTINCT x->>'chat') INTO v_ids FROM jsonb_array_elements(p_items) x;
    PERFORM 1 FROM chats c WHERE c.id = ANY (v_ids) ORDER BY c.id FOR UPDATE;

    RETURN QUERY
    WITH ch AS MATERIALIZED (
        SELECT c.id, c.status, c.owner_version, c.last_seq, c.org_id, c.customer_key, c.agent_id
          FROM chats c WHERE c.id = ANY (v_ids)
    ),
    items AS (
        SELECT (t.ord - 1)::int AS i,
               (t.x->>'chat') COLLATE "C" AS chat,
               (t.x->>'cid') COLLATE "C" AS cid,
               t.x->>'st' AS st, t.x->>'sid' AS sid, t.x->>'sn' AS sn,
               coalesce(t.x->>'text', '') AS txt,
               coalesce(nullif(t.x->'att', 'null'::jsonb), '[]'::jsonb) AS att,
               t.x->>'org' AS org, (t.x->>'ov')::int AS ov
          FROM jsonb_array_elements(p_items) WITH ORDINALITY AS t(x, ord)
    ),
    classified AS (
        SELECT it.*, c.status AS c_status, c.owner_version AS c_ov, c.last_seq AS c_last,
               c.org_id AS c_org, c.customer_key AS c_key, c.agent_id AS c_agent,
               p.id AS p_id, p.seq AS p_seq, p.sender_type AS p_st, p.sender_id AS p_sid,
               p.sender_name AS p_sn, p.text AS p_text, p.attachments AS p_att,
               p.created_at AS p_created, p.edited_at AS p_edited, p.deleted_at AS p_deleted,
               CASE WHEN it.cid IS NULL THEN it.i
                    ELSE min(it.i) OVER (PARTITION BY it.chat, it.cid) END AS first_i,
               CASE WHEN c.id IS NULL OR (it.org IS NOT NULL AND c.org_id <> it.org) THEN 'not_found'
                    WHEN p.id IS NOT NULL THEN 'replay'
                    WHEN c.status = 'closed' THEN 'closed'
                    WHEN it.ov IS NOT NULL AND c.owner_version <> it.ov THEN 'stale'
                    ELSE 'ok' END AS st_alone
          FROM items it
          LEFT JOIN ch c ON c.id = it.chat
          LEFT JOIN messages p ON p.chat_id = it.chat AND p.client_id = it.cid
    ),
    staged AS (
        -- st0: 'ok' only for the first occurrence of a clientId; later ones are 'dup'
        SELECT cl.*,
               CASE WHEN cl.st_alone = 'ok' AND cl.first_i <> cl.i THEN 'dup' ELSE cl.st_alone END AS st0
          FROM classified cl
    ),
    numbered AS (
        SELECT s.*,
               CASE WHEN s.st0 = 'ok' THEN
                   s.c_last + count(*) FILTER (WHERE s.st0 = 'ok')
                       OVER (PARTITION BY s.chat ORDER BY s.i ROWS UNBOUNDED PRECEDING)
               END AS new_seq,
               s.c_last + count(*) FILTER (WHERE s.st0 = 'ok') OVER (PARTITION BY s.chat) AS chat_last,
               CASE WHEN s.st0 = 'ok' THEN gen_random_uuid()::text END AS new_id,
               clock_timestamp() AS now_ts
          FROM staged s
    ),
    resolved AS (
        SELECT n.*,
               first_value(n.st0) OVER w AS f_st,
               first_value(n.new_seq) OVER w AS f_seq,
               first_value(n.new_id) OVER w AS f_id,
               first_value(n.now_ts) OVER w AS f_ts,
               first_value(n.st) OVER w AS f_sender_type,
               first_value(n.sid) OVER w AS f_sid,
               first_value(n.sn) OVER w AS f_sn,
               first_value(n.txt) OVER w AS f_txt,
               first_value(n.att) OVER w AS f_att
          FROM numbered n
        WINDOW w AS (PARTITION BY n.chat, coalesce(n.cid, 'idx:' || n.i) ORDER BY n.i
                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
    ),
    ins AS (
        INSERT INTO messages (id, chat_id, org_id, seq, client_id, sender_type, sender_id,
                              sender_name, text, attachments, created_at)
        SELECT r.new_id, r.chat, r.c_org, r.new_seq, r.cid, r.st, r.sid, r.sn, r.txt, r.att,
               r.now_ts
          FROM resolved r
         WHERE r.st0 = 'ok'
         ORDER BY r.i
    ),
    upd AS (
        UPDATE chats c SET last_seq = m.chat_last, last_message_at = now()
          FROM (SELECT DISTINCT r.chat, r.chat_last FROM resolved r WHERE r.chat_last > r.c_last) m
         WHERE c.id = m.chat
    )
    SELECT r.i,
           CASE WHEN r.st0 <> 'dup' THEN r.st0
                WHEN r.f_st = 'ok' THEN 'replay'
                ELSE r.f_st END,
           CASE WHEN r.st0 = 'ok' THEN r.new_id WHEN r.st0 = 'dup' THEN r.f_id ELSE r.p_id END,
           r.chat,
           CASE WHEN r.st0 = 'ok' THEN r.new_seq WHEN r.st0 = 'dup' THEN r.f_seq ELSE r.p_seq END,
           CASE WHEN r.st0 IN ('ok', 'dup', 'replay') THEN r.cid END,
           CASE WHEN r.st0 = 'ok' THEN r.st WHEN r.st0 = 'dup' THEN r.f_sender_type
                WHEN r.st0 = 'replay' THEN r.p_st END,
           CASE WHEN r.st0 = 'ok' THEN r.sid WHEN r.st0 = 'dup' THEN r.f_sid
                WHEN r.st0 = 'replay' THEN r.p_sid END,
           CASE WHEN r.st0 = 'ok' THEN r.sn WHEN r.st0 = 'dup' THEN r.f_sn
                WHEN r.st0 = 'replay' THEN r.p_sn END,
           CASE WHEN r.st0 = 'ok' THEN r.txt WHEN r.st0 = 'dup' THEN r.f_txt
                WHEN r.st0 = 'replay' THEN r.p_text END,
           (CASE WHEN r.st0 = 'ok' THEN r.att WHEN r.st0 = 'dup' THEN r.f_att
                 WHEN r.st0 = 'replay' THEN r.p_att END)::text,
           chatd_iso(CASE WHEN r.st0 = 'ok' THEN r.now_ts WHEN r.st0 = 'dup' THEN r.f_ts
                          WHEN r.st0 = 'replay' THEN r.p_created END),
           chatd_iso(CASE WHEN r.st0 = 'replay' THEN r.p_edited END),
           chatd_iso(CASE WHEN r.st0 = 'replay' THEN r.p_deleted END),
           CASE WHEN r.st0 <> 'not_found' THEN r.c_status END,
           CASE WHEN r.st0 <> 'not_found' THEN r.c_ov END,
           CASE WHEN r.st0 <> 'not_found' THEN r.chat_last END,
           CASE WHEN r.st0 <> 'not_found' THEN r.c_org END,
           CASE WHEN r.st0 <> 'not_found' THEN r.c_key END,
           CASE WHEN r.st0 <> 'not_found' THEN r.c_agent END
      FROM resolved r
     ORDER BY r.i;
END
$$;
