-- Queue and agent operations (issue 5, SPEC 4, 5, 7): each transition of a chat between the
-- human queue and agents is one server-side call, so the status change, the chat_events row and
-- the system message announcing it commit together or not at all.
--
-- Redis holds the routing index (lua/queue_*.lua); PostgreSQL decides. The gateway
-- (gateway/chat_agent.c) picks in Redis first and then calls chat_assign(), which only assigns a
-- chat that is still queued here; when it is not (closed, taken over meanwhile) or the call
-- fails, the gateway releases or restores the Redis side, so a chat is never assigned in one
-- store and queued in the other for longer than that round trip.
--
-- Every function returns one row whose `result` is ok | not_found | forbidden | conflict, plus
-- the system message it wrote (columns named as PG_MESSAGE_COLUMNS, so pg_message_from_row()
-- reads them; NULL when nothing was written).

-- queue_system_message: appends a system message under the chat's row lock (the caller holds
-- it: SELECT ... FOR UPDATE) with the next gap-free seq.
CREATE FUNCTION queue_system_message(p_chat text, p_org text, p_text text)
RETURNS messages
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
    m     messages%ROWTYPE;
BEGIN
    UPDATE chats SET last_seq = chats.last_seq + 1, last_message_at = now()
     WHERE chats.id = p_chat RETURNING chats.last_seq INTO v_seq;
    INSERT INTO messages (chat_id, org_id, seq, sender_type, text)
    VALUES (p_chat, p_org, v_seq, 'system', p_text) RETURNING * INTO m;
    RETURN m;
END;
$$;

-- chat_assign: a queued chat goes to an agent (pick-next). p_at_ms: the moment of the pick on
-- the Redis clock (ms since the epoch), so assigned_at orders picks exactly as the queue did.
-- result: ok | not_found | conflict (the chat is not queued any more).
CREATE FUNCTION chat_assign(p_chat text, p_org text, p_agent text, p_name text, p_at_ms bigint)
RETURNS TABLE (result text, prev_status text, customer_key text, chat text, skills text,
               priority int, enqueued_ms bigint,
               id text, chat_id text, seq bigint, client_id text, sender_type text,
               sender_id text, sender_name text, text text, attachments text,
               created_at text, edited_at text, deleted_at text)
LANGUAGE plpgsql AS $$
DECLARE
    c  chats%ROWTYPE;
    m  messages%ROWTYPE;
BEGIN
    SELECT * INTO c FROM chats WHERE chats.id = p_chat AND chats.org_id = p_org FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::text, NULL::text, NULL::text, NULL::text,
            NULL::int, NULL::bigint, NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::text,
            NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text;
        RETURN;
    END IF;
    IF c.status <> 'queued' THEN
        RETURN QUERY SELECT 'conflict'::text, c.status, c.customer_key, NULL::text, NULL::text,
            NULL::int, NULL::bigint, NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::text,
            NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text;
        RETURN;
    END IF;
    m := queue_system_message(p_chat, p_org, coalesce(nullif(p_name, ''), p_agent) || ' has joined');
    UPDATE chats SET status = 'assigned', agent_id = p_agent, agent_name = coalesce(p_name, p_agent),
                     assigned_at = CASE WHEN p_at_ms > 0 THEN to_timestamp(p_at_ms / 1000.0) ELSE now() END,
                     owner_version = chats.owner_version + 1
     WHERE chats.id = p_chat RETURNING * INTO c;
    INSERT INTO chat_events (chat_id, org_id, type, from_status, to_status, actor_type, actor_id, data)
    VALUES (p_chat, p_org, 'assigned', 'queued', 'assigned', 'agent', p_agent,
            jsonb_build_object('via', 'pick-next'));
    RETURN QUERY SELECT 'ok'::text, 'queued'::text, c.customer_key, chat_object(c)::text,
        array_to_string(c.skills, ','), c.priority,
        (extract(epoch FROM coalesce(c.enqueued_at, c.created_at)) * 1000)::bigint,
        m.id, m.chat_id, m.seq, m.client_id, m.sender_type, m.sender_id, m.sender_name, m.text,
        m.attachments::text, chatd_iso(m.created_at), chatd_iso(m.edited_at), chatd_iso(m.deleted_at);
END;
$$;

-- chat_requeue: a chat goes (back) to the human queue.
--   p_mode 'request'  (customer's request-agent, the AI's hand-off): from `ai` only; p_key is
--                     the customer's identity key (NULL for the system/AI); required skills
--                     replaced by p_skills when given; enqueued now.
--   p_mode 'skills'   (transfer-chat to skills by the assigned agent p_agent): from `assigned`
--                     to p_agent only; skills := p_skills, priority + 1 (max 9), the original
--                     enqueue time kept.
--   p_mode 'no_reply' (the agent did not answer in time): from `assigned` (to p_agent when
--                     given); skills, priority and enqueue time kept.
-- p_text: system message (NULL: none). p_note goes to the chat_events row.
-- result: ok | not_found | forbidden (not the assigned agent) | conflict (wrong status).
CREATE FUNCTION chat_requeue(p_chat text, p_org text, p_mode text, p_key text, p_agent text,
                             p_skills text[], p_text text, p_note text)
RETURNS TABLE (result text, prev_status text, prev_agent text, customer_key text, skills text,
               priority int, enqueued_ms bigint,
               id text, chat_id text, seq bigint, client_id text, sender_type text,
               sender_id text, sender_name text, text text, attachments text,
               created_at text, edited_at text, deleted_at text)
LANGUAGE plpgsql AS $$
DECLARE
    c       chats%ROWTYPE;
    m       messages%ROWTYPE;
    v_res   text := 'ok';
    v_prev  text;
    v_agent text;
BEGIN
    SELECT * INTO c FROM chats WHERE chats.id = p_chat AND chats.org_id = p_org FOR UPDATE;
    IF NOT FOUND OR (p_key IS NOT NULL AND c.customer_key <> p_key) THEN
        v_res := 'not_found';
    ELSIF p_mode = 'request' THEN
        IF c.status <> 'ai' THEN v_res := 'conflict'; END IF;
    ELSIF p_mode IN ('skills', 'no_reply') THEN
        IF c.status = 'assigned' AND p_agent IS NOT NULL AND c.agent_id IS DISTINCT FROM p_agent THEN
            v_res := CASE WHEN p_mode = 'skills' THEN 'forbidden' ELSE 'conflict' END;
        ELSIF c.status <> 'assigned' THEN
            v_res := CASE WHEN p_mode = 'skills' AND c.status <> 'closed' THEN 'forbidden' ELSE 'conflict' END;
        END IF;
    ELSE
        RAISE EXCEPTION 'chat_requeue: bad mode %', p_mode;
    END IF;
    IF v_res <> 'ok' THEN
        RETURN QUERY SELECT v_res, c.status, c.agent_id, NULL::text, NULL::text, NULL::int,
            NULL::bigint, NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::text,
            NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text;
        RETURN;
    END IF;
    v_prev := c.status;
    v_agent := c.agent_id;
    IF p_text IS NOT NULL THEN
        m := queue_system_message(p_chat, p_org, p_text);
    END IF;
    UPDATE chats SET status = 'queued', agent_id = NULL, agent_name = NULL, assigned_at = NULL,
           skills = CASE WHEN p_mode = 'no_reply' OR p_skills IS NULL THEN chats.skills ELSE p_skills END,
           priority = CASE WHEN p_mode = 'skills' THEN least(chats.priority + 1, 9) ELSE chats.priority END,
           enqueued_at = CASE WHEN p_mode = 'request' OR chats.enqueued_at IS NULL THEN now()
                              ELSE chats.enqueued_at END,
           owner_version = chats.owner_version + 1
     WHERE chats.id = p_chat RETURNING * INTO c;
    INSERT INTO chat_events (chat_id, org_id, type, from_status, to_status, actor_type, actor_id, data)
    VALUES (p_chat, p_org,
            CASE p_mode WHEN 'request' THEN 'handoff' WHEN 'skills' THEN 'transferred' ELSE 'requeued' END,
            v_prev, 'queued',
            CASE WHEN p_mode = 'skills' THEN 'agent' WHEN p_key IS NOT NULL THEN 'customer' ELSE 'system' END,
            CASE WHEN p_mode = 'skills' THEN p_agent WHEN p_key IS NOT NULL THEN c.customer_id ELSE NULL END,
            jsonb_strip_nulls(jsonb_build_object('mode', p_mode, 'fromAgent', v_agent,
                                                 'toSkills', to_jsonb(p_skills), 'note', p_note)));
    RETURN QUERY SELECT 'ok'::text, v_prev, v_agent, c.customer_key, array_to_string(c.skills, ','),
        c.priority, (extract(epoch FROM c.enqueued_at) * 1000)::bigint,
        m.id, m.chat_id, m.seq, m.client_id, m.sender_type, m.sender_id, m.sender_name, m.text,
        m.attachments::text, chatd_iso(m.created_at), chatd_iso(m.edited_at), chatd_iso(m.deleted_at);
END;
$$;

-- chat_transfer_agent: the assigned agent p_from hands the chat to agent p_to (the gateway has
-- checked in Redis that p_to is online, not away and below capacity, and moved the load).
-- p_to_name NULL: the name the target last had in this org, else its id.
-- result: ok | not_found | forbidden (caller not the assigned agent) | conflict (closed).
CREATE FUNCTION chat_transfer_agent(p_chat text, p_org text, p_from text, p_to text,
                                    p_to_name text, p_note text)
RETURNS TABLE (result text, agent_name text, customer_key text, chat text,
               id text, chat_id text, seq bigint, client_id text, sender_type text,
               sender_id text, sender_name text, text text, attachments text,
               created_at text, edited_at text, deleted_at text)
LANGUAGE plpgsql AS $$
DECLARE
    c       chats%ROWTYPE;
    m       messages%ROWTYPE;
    v_name  text := p_to_name;
    v_res   text := 'ok';
BEGIN
    SELECT * INTO c FROM chats WHERE chats.id = p_chat AND chats.org_id = p_org FOR UPDATE;
    IF NOT FOUND THEN
        v_res := 'not_found';
    ELSIF c.status = 'closed' THEN
        v_res := 'conflict';
    ELSIF c.status <> 'assigned' OR c.agent_id IS DISTINCT FROM p_from THEN
        v_res := 'forbidden';
    END IF;
    IF v_res <> 'ok' THEN
        RETURN QUERY SELECT v_res, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
            NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
            NULL::text, NULL::text, NULL::text;
        RETURN;
    END IF;
    IF v_name IS NULL OR v_name = '' THEN
        SELECT x.agent_name INTO v_name FROM chats x
         WHERE x.org_id = p_org AND x.agent_id = p_to AND x.agent_name IS NOT NULL
         ORDER BY x.assigned_at DESC NULLS LAST LIMIT 1;
        v_name := coalesce(v_name, p_to);
    END IF;
    m := queue_system_message(p_chat, p_org,
        coalesce(c.agent_name, p_from) || ' transferred the chat to ' || v_name
        || CASE WHEN coalesce(p_note, '') <> '' THEN ': ' || p_note ELSE '' END);
    UPDATE chats SET agent_id = p_to, agent_name = v_name, assigned_at = now(),
                     owner_version = chats.owner_version + 1
     WHERE chats.id = p_chat RETURNING * INTO c;
    INSERT INTO chat_events (chat_id, org_id, type, from_status, to_status, actor_type, actor_id, data)
    VALUES (p_chat, p_org, 'transferred', 'assigned', 'assigned', 'agent', p_from,
            jsonb_strip_nulls(jsonb_build_object('fromAgent', p_from, 'toAgent', p_to, 'note', p_note)));
    RETURN QUERY SELECT 'ok'::text, v_name, c.customer_key, chat_object(c)::text,
        m.id, m.chat_id, m.seq, m.client_id, m.sender_type, m.sender_id, m.sender_name, m.text,
        m.attachments::text, chatd_iso(m.created_at), chatd_iso(m.edited_at), chatd_iso(m.deleted_at);
END;
$$;
