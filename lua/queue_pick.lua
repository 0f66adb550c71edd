-- queue_pick: atomically take the best queued chat an agent may serve.
-- Best = lowest score (priority 9 first, then enqueue time, then enqueue
-- order) among the entries whose required skills are a subset of the agent's.
-- Entries are indexed per distinct required-skill set (qsig:<sig> zsets) and
-- the sets by their first skill (qsigf:<skill>), so a pick only inspects the
-- skill sets that start with one of the agent's skills: O(those sets + log n),
-- never a scan of the queue.
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
-- starting with it (qsigf index); each is checked for inclusion.
local best_member, best_score
local function consider(sig)
    for item in string.gmatch(sig, '[^,]+') do
        if not have[item] then return end
    end
    local head = redis.call('ZRANGE', sig_key(prefix, sig), 0, 0, 'WITHSCORES')
    if #head == 2 then
        local sc = tonumber(head[2])
        if best_score == nil or sc < best_score or (sc == best_score and head[1] < best_member) then
            best_member, best_score = head[1], sc
        end
    else
        sig_index_del(prefix, KEYS[2], sig) -- stale index entry
    end
end
consider('')
for _, sk in ipairs(mine) do
    for _, sig in ipairs(redis.call('SMEMBERS', prefix .. 'qsigf:' .. sk)) do
        consider(sig)
    end
end
if best_member == nil then return {'empty', load, max} end

local chat = member_chat(best_member)
local e = queue_remove(prefix, KEYS[1], KEYS[2], chat)
if e == nil then
    -- index pointed at a chat without an entry: drop it and report empty;
    -- the caller may simply retry.
    redis.call('ZREM', KEYS[1], best_member)
    return {'empty', load, max}
end
load = redis.call('HINCRBY', KEYS[3], agent, 1)
local now = now_ms()
redis.call('HSET', prefix .. 'assign:' .. chat, 'agent', agent, 'assignedAt', fmt_int(now),
    'priority', e.priority or '0', 'enqueuedAt', e.enqueuedAt or '0', 'skills', e.skills or '',
    'member', e.member or '', 'preview', e.preview or '')
return {'ok', chat, tonumber(e.priority) or 0, tonumber(e.enqueuedAt) or 0, e.skills or '',
    e.preview or '', load, max, redis.call('ZCARD', KEYS[1]), now}
