-- queue_pick: atomically take the best queued chat an agent may serve.
-- Best = lowest score (priority 9 first, then enqueue time, then enqueue
-- order) among the entries whose required skills are a subset of the agent's.
-- Entries are indexed per distinct required-skill set (qsig:<sig> zsets) and
-- the sets by their first skill (qsigf:<skill>), so a pick only inspects the
-- skill sets that start with one of the agent's skills, and reads their first
-- entries from the qhead hash in one call: O(those sets + log n), never a
-- scan of the queue.
-- KEYS: 1 queue zset, 2 qsigs set, 3 agentload hash, 4 agentmax hash
-- ARGV: 1 prefix, 2 agent id (sub), 3 max_chats, 4 agent skills "a,b"
-- Returns {"full", load, max} | {"empty", load, max} |
--         {"ok", chatId, priority, enqueuedAt, skills, preview, load, max,
--          queueLength, assignedAt}
-- Side effects on "ok": entry removed from the queue, agentload +1, agentmax
-- set, assign:CHAT hash {agent, assignedAt, priority, enqueuedAt, skills,
-- member, preview} written (used by transfer and release).
local prefix, agent = ARGV[1], ARGV[2]
local max = tonumber(ARGV[3]) or 3
redis.call('HSET', KEYS[4], agent, fmt_int(max))
local load = tonumber(redis.call('HGET', KEYS[3], agent)) or 0
if load >= max then return {'full', load, max} end

local mine = split_skills(ARGV[4])
local have = {}
for _, sk in ipairs(mine) do have[sk] = true end

-- candidate skill sets: "no skill required" plus, per agent skill, the sets
-- starting with it (qsigf index); each is checked for inclusion, then the
-- heads of all eligible sets are read at once from qhead.
local cands = {''}
for _, sk in ipairs(mine) do
    for _, sig in ipairs(redis.call('SMEMBERS', prefix .. 'qsigf:' .. sk)) do
        local ok = true
        for item in string.gmatch(sig, '[^,]+') do
            if not have[item] then ok = false; break end
        end
        if ok then cands[#cands + 1] = sig end
    end
end
local best_member, best_score, best_sig
local i = 1
while i <= #cands do
    local chunk = {}
    for j = i, math.min(i + 499, #cands) do chunk[#chunk + 1] = cands[j] end
    local heads = redis.call('HMGET', prefix .. 'qhead', unpack(chunk))
    for j = 1, #chunk do
        local sc, m = head_parse(heads[j])
        if sc ~= nil and (best_score == nil or sc < best_score or (sc == best_score and m < best_member)) then
            best_member, best_score, best_sig = m, sc, chunk[j]
        end
    end
    i = i + 500
end
if best_member == nil then return {'empty', load, max} end

local chat = member_chat(best_member)
local e = queue_remove(prefix, KEYS[1], KEYS[2], chat)
if e == nil then
    -- index pointed at a chat without an entry: drop it and report empty;
    -- the caller may simply retry.
    redis.call('ZREM', KEYS[1], best_member)
    redis.call('ZREM', sig_key(prefix, best_sig), best_member)
    head_refresh(prefix, best_sig)
    return {'empty', load, max}
end
load = redis.call('HINCRBY', KEYS[3], agent, 1)
local now = now_ms()
redis.call('HSET', prefix .. 'assign:' .. chat, 'agent', agent, 'assignedAt', fmt_int(now),
    'priority', e.priority or '0', 'enqueuedAt', e.enqueuedAt or '0', 'skills', e.skills or '',
    'member', e.member or '', 'preview', e.preview or '')
return {'ok', chat, tonumber(e.priority) or 0, tonumber(e.enqueuedAt) or 0, e.skills or '',
    e.preview or '', load, max, redis.call('ZCARD', KEYS[1]), now}
