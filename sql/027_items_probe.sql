-- chat_append_items as in 024, with one change: the clientId check of the batch probes the
-- index once per item in every plan. Without `OFFSET 0` the planner may turn that NOT EXISTS
-- into a hashed subplan when `messages` looks small, and a session keeps that plan (generic,
-- cached) while the table grows: every combined append then read every (chat, clientId) pair
-- of the table. Seen after a TRUNCATE under 10,842 msgs/s (PostgreSQL at full load, 41 % of
-- the messages delivered); test_pg's test_append_items_probe_per_item plans the function on
-- an empty table and counts the index entries a later call reads.
CREATE OR REPLACE FUNCTION chat_append_items(p_items jsonb)
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
LANGUAGE plpgsql
SET enable_hashjoin = off
SET enable_mergejoin = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_ids text[];
    v_ok  boolean;
BEGIN
    IF jsonb_array_length(p_items) < 2 THEN
        RETURN QUERY SELECT * FROM chat_append_batch(p_items);
        RETURN;
    END IF;
    -- Chats locked in id order (no deadlock between batches); every later statement takes a
    -- fresh snapshot (READ COMMITTED), so it sees what committed before the locks were ours.
    SELECT array_agg(DISTINCT x.chat ORDER BY x.chat) INTO v_ids
      FROM jsonb_to_recordset(p_items) AS x(chat text);
    PERFORM 1 FROM chats c WHERE c.id = ANY (v_ids) ORDER BY c.id FOR UPDATE;
    SELECT count(*) = jsonb_array_length(p_items)
           AND count(DISTINCT (it.chat, it.cid)) FILTER (WHERE it.cid IS NOT NULL) = count(it.cid)
      INTO v_ok
      FROM jsonb_to_recordset(p_items) AS it(chat text, cid text, org text, ov int)
      JOIN chats c ON c.id = it.chat
     WHERE c.status <> 'closed' AND (it.org IS NULL OR c.org_id = it.org)
       AND (it.ov IS NULL OR c.owner_version = it.ov)
       AND (it.cid IS NULL OR NOT EXISTS (
               SELECT 1 FROM messages p WHERE p.chat_id = it.chat AND p.client_id = it.cid
               OFFSET 0)); -- one index probe per item, whatever the statistics say
    IF NOT v_ok THEN
        RETURN QUERY SELECT * FROM chat_append_batch(p_items);
        RETURN;
    END IF;

    RETURN QUERY
    WITH it AS MATERIALIZED (
        SELECT (x.ord - 1)::int AS i, x.chat COLLATE "C" AS chat, x.cid COLLATE "C" AS cid,
               x.st, x.sid, x.sn, coalesce(x.text, '') AS txt,
               coalesce(nullif(x.att, 'null'::jsonb), '[]'::jsonb) AS att,
               coalesce(x.id, gen_random_uuid()::text) AS new_id
          FROM ROWS FROM (jsonb_to_recordset(p_items)
               AS (chat text, cid text, st text, sid text, sn text, text text, att jsonb, id text))
               WITH ORDINALITY AS x(chat, cid, st, sid, sn, text, att, id, ord)
    ),
    upd AS (
        UPDATE chats c SET last_seq = c.last_seq + n.cnt, last_message_at = now()
          FROM (SELECT it.chat, count(*) AS cnt FROM it GROUP BY it.chat) n
         WHERE c.id = n.chat
        RETURNING c.id, c.last_seq - n.cnt AS base, c.last_seq, c.status, c.owner_version,
                  c.org_id, c.customer_key, c.agent_id
    ),
    num AS MATERIALIZED (
        SELECT it.*, u.base + row_number() OVER (PARTITION BY it.chat ORDER BY it.i) AS new_seq,
               clock_timestamp() AS ts, u.last_seq AS u_last, u.status AS u_status,
               u.owner_version AS u_ov, u.org_id AS u_org, u.customer_key AS u_key,
               u.agent_id AS u_agent
          FROM it JOIN upd u ON u.id = it.chat
    ),
    ins AS (
        INSERT INTO messages (id, chat_id, org_id, seq, client_id, sender_type, sender_id,
                              sender_name, text, attachments, created_at)
        SELECT n.new_id, n.chat, n.u_org, n.new_seq, n.cid, n.st, n.sid, n.sn, n.txt, n.att, n.ts
          FROM num n ORDER BY n.i
    )
    SELECT n.i, 'ok', n.new_id, n.chat, n.new_seq, n.cid, n.st, n.sid, n.sn, n.txt,
           n.att::text, chatd_iso(n.ts), NULL::text, NULL::text, n.u_status, n.u_ov, n.u_last,
           n.u_org, n.u_key, n.u_agent
      FROM num n ORDER BY n.i;
END
$$;
