-- Chat lifecycle operations of the /chat gateway, each one server-side call so a transition is
-- atomic and lands as exactly one chat_events row (SPEC 5).

-- chat_open: the customer's open chat for a config, created when it has none (race-safe against
-- a second tab opening at the same moment: the unique partial index decides, the loser reuses).
-- No row: the config does not exist in this org (not_found).
CREATE FUNCTION chat_open(p_org text, p_config text, p_key text, p_customer_id text,
                          p_name text, p_email text)
RETURNS TABLE (created boolean, id text, status text, config_id text, skills text[],
               priority int, created_at text, last_seq bigint, greeting text, ai_enabled boolean,
               customer_name text, customer_email text)
LANGUAGE plpgsql AS $$
DECLARE
    cfg   chat_configs%ROWTYPE;
    c     chats%ROWTYPE;
    v_ai  boolean := false;
BEGIN
    IF p_config IS NOT NULL THEN
        SELECT * INTO cfg FROM chat_configs WHERE chat_configs.id = p_config AND chat_configs.org_id = p_org;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        v_ai := coalesce((cfg.ai ->> 'enabled')::boolean, false);
    END IF;
    FOR attempt IN 1..3 LOOP
        SELECT * INTO c FROM chats
         WHERE chats.org_id = p_org AND chats.customer_key = p_key
           AND coalesce(chats.config_id, '') = coalesce(p_config, '') AND chats.status <> 'closed';
        IF FOUND THEN
            RETURN QUERY SELECT false, c.id, c.status, c.config_id, c.skills, c.priority,
                chatd_iso(c.created_at), c.last_seq, cfg.greeting, v_ai, c.customer_name, c.customer_email;
            RETURN;
        END IF;
        BEGIN
            INSERT INTO chats (org_id, config_id, status, customer_key, customer_id, customer_name,
                               customer_email, skills, priority, enqueued_at)
            VALUES (p_org, p_config, CASE WHEN v_ai THEN 'ai' ELSE 'queued' END, p_key, p_customer_id,
                    p_name, p_email, coalesce(cfg.skills, '{}'), coalesce(cfg.priority, 0),
                    CASE WHEN v_ai THEN NULL ELSE now() END)
            RETURNING * INTO c;
            INSERT INTO chat_events (chat_id, org_id, type, from_status, to_status, actor_type, actor_id)
            VALUES (c.id, p_org, 'opened', NULL, c.status, 'customer', p_customer_id);
            RETURN QUERY SELECT true, c.id, c.status, c.config_id, c.skills, c.priority,
                chatd_iso(c.created_at), c.last_seq, cfg.greeting, v_ai, c.customer_name, c.customer_email;
            RETURN;
        EXCEPTION WHEN unique_violation THEN
            -- another tab won the race: loop and reuse its chat
        END;
    END LOOP;
END;
$$;

-- chat_close: close a chat as its customer (p_key) or its assigned agent (p_agent_id), or as the
-- system (both NULL: inactivity). result: ok | not_found | forbidden | conflict (already closed).
-- The closing system message is written in the same transaction (the chat refuses writes once
-- closed); the org's moving average of assigned->closed handle time is updated.
CREATE FUNCTION chat_close(p_chat text, p_org text, p_key text, p_agent_id text, p_reason text,
                           p_text text)
RETURNS TABLE (result text, prev_status text, agent_id text, customer_key text, config_id text,
               skills text[], msg_id text, msg_seq bigint, msg_created_at text)
LANGUAGE plpgsql AS $$
DECLARE
    c      chats%ROWTYPE;
    m      messages%ROWTYPE;
    v_dur  double precision;
BEGIN
    SELECT * INTO c FROM chats WHERE chats.id = p_chat AND chats.org_id = p_org FOR UPDATE;
    IF NOT FOUND OR (p_key IS NOT NULL AND c.customer_key <> p_key) THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::text, NULL::text, NULL::text, NULL::text,
            NULL::text[], NULL::text, NULL::bigint, NULL::text;
        RETURN;
    END IF;
    IF p_agent_id IS NOT NULL AND (c.status <> 'assigned' OR c.agent_id IS DISTINCT FROM p_agent_id) THEN
        RETURN QUERY SELECT CASE WHEN c.status = 'closed' THEN 'conflict' ELSE 'forbidden' END,
            c.status, c.agent_id, c.customer_key, c.config_id, c.skills, NULL::text, NULL::bigint, NULL::text;
        RETURN;
    END IF;
    IF c.status = 'closed' THEN
        RETURN QUERY SELECT 'conflict'::text, c.status, c.agent_id, c.customer_key, c.config_id,
            c.skills, NULL::text, NULL::bigint, NULL::text;
        RETURN;
    END IF;
    UPDATE chats SET last_seq = chats.last_seq + 1, last_message_at = now()
     WHERE chats.id = p_chat RETURNING chats.last_seq INTO c.last_seq;
    INSERT INTO messages (chat_id, org_id, seq, sender_type, text)
    VALUES (p_chat, p_org, c.last_seq, 'system', p_text) RETURNING * INTO m;
    UPDATE chats SET status = 'closed', closed_at = now(), close_reason = p_reason,
                     owner_version = chats.owner_version + 1
     WHERE chats.id = p_chat;
    INSERT INTO chat_events (chat_id, org_id, type, from_status, to_status, actor_type, actor_id, data)
    VALUES (p_chat, p_org, 'closed', c.status, 'closed',
            CASE WHEN p_agent_id IS NOT NULL THEN 'agent' WHEN p_key IS NOT NULL THEN 'customer' ELSE 'system' END,
            coalesce(p_agent_id, c.customer_id), jsonb_build_object('reason', p_reason));
    IF c.assigned_at IS NOT NULL THEN
        v_dur := extract(epoch FROM now() - c.assigned_at);
        INSERT INTO org_stats (org_id, avg_handle_time_s, closed_count) VALUES (p_org, v_dur, 1)
        ON CONFLICT (org_id) DO UPDATE
           SET avg_handle_time_s = CASE WHEN org_stats.avg_handle_time_s IS NULL THEN v_dur
                                        ELSE org_stats.avg_handle_time_s * 0.8 + v_dur * 0.2 END,
               closed_count = org_stats.closed_count + 1, updated_at = now();
    END IF;
    RETURN QUERY SELECT 'ok'::text, c.status, c.agent_id, c.customer_key, c.config_id, c.skills,
        m.id, m.seq, chatd_iso(m.created_at);
END;
$$;

-- chat_read: monotonic read marker. found=false: not the caller's chat (not_found).
-- advanced: the stored marker moved (announce it); seq: the stored marker after the call.
CREATE FUNCTION chat_read(p_chat text, p_org text, p_key text, p_reader_type text,
                          p_reader_id text, p_seq bigint)
RETURNS TABLE (found boolean, advanced boolean, seq bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
    v_old  bigint;
    v_new  bigint;
BEGIN
    SELECT chats.last_seq INTO v_last FROM chats
     WHERE chats.id = p_chat AND chats.org_id = p_org AND (p_key IS NULL OR chats.customer_key = p_key);
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, false, 0::bigint;
        RETURN;
    END IF;
    SELECT r.seq INTO v_old FROM read_markers r
     WHERE r.chat_id = p_chat AND r.reader_type = p_reader_type AND r.reader_id = p_reader_id;
    INSERT INTO read_markers AS r (chat_id, reader_type, reader_id, seq)
    VALUES (p_chat, p_reader_type, p_reader_id, LEAST(GREATEST(p_seq, 0), v_last))
    ON CONFLICT (chat_id, reader_type, reader_id) DO UPDATE
       SET seq = GREATEST(r.seq, EXCLUDED.seq), updated_at = now()
    RETURNING r.seq INTO v_new;
    RETURN QUERY SELECT true, (v_old IS NULL AND v_new > 0) OR v_new > v_old, v_new;
END;
$$;

-- The SPEC chat object {id, orgId, configId, status, customer:{id,name,email?}, agent?:{id,name},
-- skills, priority, createdAt, closedAt?, lastSeq}; customer.id is the identity key.
CREATE FUNCTION chat_object(c chats) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', c.id, 'orgId', c.org_id, 'configId', c.config_id, 'status', c.status,
        'customer', jsonb_build_object('id', c.customer_key, 'name', c.customer_name,
                                       'email', c.customer_email),
        'agent', CASE WHEN c.agent_id IS NULL THEN NULL
                      ELSE jsonb_build_object('id', c.agent_id, 'name', c.agent_name) END,
        'skills', to_jsonb(c.skills), 'priority', c.priority,
        'createdAt', chatd_iso(c.created_at), 'closedAt', chatd_iso(c.closed_at)))
        || jsonb_build_object('lastSeq', c.last_seq, 'configId', c.config_id)
$$;
