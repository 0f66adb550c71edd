-- Message append: the whole write path of a chat message in one server-side call.
--
-- chatd_iso(ts): ISO-8601 UTC with milliseconds, the wire format of every time (SPEC 4).
-- STABLE like to_char (not IMMUTABLE): only then does the planner inline it into queries;
-- a non-inlined SQL function call costs ~30 us per row.
CREATE FUNCTION chatd_iso(ts timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- chat_append_message: in one transaction
--   * (chat_id, client_id) already stored           -> status 'replay', the original row, no seq used
--   * chat missing, or of another org (p_org_id)     -> 'not_found'
--   * chat closed                                    -> 'closed'   (caller answers conflict)
--   * p_owner_version given and the chat's differs   -> 'stale'    (AI write after a hand-over)
--   * an upload id that is not the sender's own      -> 'bad_attachment'
--   * else seq = chats.last_seq + 1 under a row lock on the chat (concurrent senders serialize,
--     seq is gap-free and strictly increasing), the message is inserted   -> 'ok'
-- It never raises for these cases, so it can share a pipelined transaction with other appends.
-- Every row carries the message fields (NULL for not_found/closed/stale) and the chat's state
-- (status, owner_version, last_seq, org, customer, agent) so the caller can route without a
-- second query. Attachments: p_upload_ids are resolved to [{id,name,mime,size,url}] and the
-- uploads are bound to the chat; or pass p_attachments (already-built JSON array) directly.
CREATE FUNCTION chat_append_message(
    p_chat_id       text,
    p_client_id     text,
    p_sender_type   text,
    p_sender_id     text,
    p_sender_name   text,
    p_text          text,
    p_attachments   jsonb DEFAULT NULL,
    p_org_id        text DEFAULT NULL,
    p_owner_version int DEFAULT NULL,
    p_upload_ids    text[] DEFAULT NULL)
RETURNS TABLE (
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
    c       chats%ROWTYPE;
    m       messages%ROWTYPE;
    v_att   jsonb := coalesce(p_attachments, '[]'::jsonb);
    v_n     int;
BEGIN
    -- Fast path for a retry: no lock needed to return what is already committed.
    IF p_client_id IS NOT NULL THEN
        SELECT * INTO m FROM messages WHERE messages.chat_id = p_chat_id AND messages.client_id = p_client_id;
        IF FOUND THEN
            SELECT * INTO c FROM chats WHERE chats.id = p_chat_id;
            IF p_org_id IS NOT NULL AND c.org_id IS DISTINCT FROM p_org_id THEN
                RETURN QUERY SELECT 'not_found'::text, NULL::text, p_chat_id, NULL::bigint, NULL::text,
                    NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
                    NULL::text, NULL::text, NULL::int, NULL::bigint, NULL::text, NULL::text, NULL::text;
                RETURN;
            END IF;
            RETURN QUERY SELECT 'replay'::text, m.id, m.chat_id, m.seq, m.client_id, m.sender_type,
                m.sender_id, m.sender_name, m.text, m.attachments::text, chatd_iso(m.created_at),
                chatd_iso(m.edited_at), chatd_iso(m.deleted_at), c.status, c.owner_version,
                c.last_seq, c.org_id, c.customer_key, c.agent_id;
            RETURN;
        END IF;
    END IF;

    SELECT * INTO c FROM chats WHERE chats.id = p_chat_id FOR UPDATE;
    IF NOT FOUND OR (p_org_id IS NOT NULL AND c.org_id <> p_org_id) THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::text, p_chat_id, NULL::bigint, NULL::text,
            NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
            NULL::text, NULL::text, NULL::int, NULL::bigint, NULL::text, NULL::text, NULL::text;
        RETURN;
    END IF;

    -- A concurrent retry of the same clientId may have committed while we waited for the lock
    -- (READ COMMITTED: this statement sees it).
    IF p_client_id IS NOT NULL THEN
        SELECT * INTO m FROM messages WHERE messages.chat_id = p_chat_id AND messages.client_id = p_client_id;
        IF FOUND THEN
            RETURN QUERY SELECT 'replay'::text, m.id, m.chat_id, m.seq, m.client_id, m.sender_type,
                m.sender_id, m.sender_name, m.text, m.attachments::text, chatd_iso(m.created_at),
                chatd_iso(m.edited_at), chatd_iso(m.deleted_at), c.status, c.owner_version,
                c.last_seq, c.org_id, c.customer_key, c.agent_id;
            RETURN;
        END IF;
    END IF;

    IF c.status = 'closed' OR (p_owner_version IS NOT NULL AND c.owner_version <> p_owner_version) THEN
        RETURN QUERY SELECT CASE WHEN c.status = 'closed' THEN 'closed' ELSE 'stale' END,
            NULL::text, p_chat_id, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::text,
            NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, c.status, c.owner_version,
            c.last_seq, c.org_id, c.customer_key, c.agent_id;
        RETURN;
    END IF;

    IF p_upload_ids IS NOT NULL AND cardinality(p_upload_ids) > 0 THEN
        SELECT count(*), coalesce(jsonb_agg(jsonb_build_object(
                   'id', u.id, 'name', u.name, 'mime', u.mime, 'size', u.size,
                   'url', '/chat/uploads/' || u.id) ORDER BY array_position(p_upload_ids, u.id)), '[]'::jsonb)
          INTO v_n, v_att
          FROM uploads u
         WHERE u.id = ANY (p_upload_ids) AND u.org_id = c.org_id
           AND u.uploader_type = p_sender_type AND u.uploader_id = p_sender_id
           AND (u.chat_id IS NULL OR u.chat_id = p_chat_id);
        IF v_n <> (SELECT count(DISTINCT x) FROM unnest(p_upload_ids) x) THEN
            RETURN QUERY SELECT 'bad_attachment'::text, NULL::text, p_chat_id, NULL::bigint, NULL::text,
                NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
                NULL::text, c.status, c.owner_version, c.last_seq, c.org_id, c.customer_key, c.agent_id;
            RETURN;
        END IF;
    END IF;

    UPDATE chats SET last_seq = chats.last_seq + 1, last_message_at = now()
     WHERE chats.id = p_chat_id
     RETURNING chats.last_seq INTO c.last_seq;

    INSERT INTO messages (chat_id, org_id, seq, client_id, sender_type, sender_id, sender_name,
                          text, attachments)
    VALUES (p_chat_id, c.org_id, c.last_seq, p_client_id, p_sender_type, p_sender_id, p_sender_name,
            coalesce(p_text, ''), v_att)
    RETURNING * INTO m;

    IF p_upload_ids IS NOT NULL AND cardinality(p_upload_ids) > 0 THEN
        UPDATE uploads SET chat_id = p_chat_id, message_id = coalesce(uploads.message_id, m.id)
         WHERE uploads.id = ANY (p_upload_ids);
    END IF;

    RETURN QUERY SELECT 'ok'::text, m.id, m.chat_id, m.seq, m.client_id, m.sender_type,
        m.sender_id, m.sender_name, m.text, m.attachments::text, chatd_iso(m.created_at),
        NULL::text, NULL::text, c.status, c.owner_version, c.last_seq, c.org_id, c.customer_key,
        c.agent_id;
END
$$;
