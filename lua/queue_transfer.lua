-- queue_transfer: hand an assigned chat to the queue or to another agent.
-- KEYS: 1 queue zset, 2 qentry:CHAT hash, 3 qsigs set, 4 qseq counter,
--       5 status hash, 6 agentload hash, 7 agentmax hash, 8 aht string,
--       9 assign:CHAT hash
-- ARGV: 1 prefix, 2 chatId, 3 mode "skills" | "agent" | "front",
--       4 skills "a,b" (skills) or target agent id (agent) or fallback
--         skills (front, used when Redis has no assignment record),
--       5 fallback priority, 6 fallback enqueuedAt ms (used when Redis has no
--       assignment record, e.g. after a Redis restart), 7 preview,
--       8 default avg handle time s
-- mode skills: required skills replaced, original enqueue time (and order)
--   kept, priority +1 (max 9), old agent's load -1.
-- mode front (no-reply reassignment): skills and priority kept, placed ahead
--   of every queued chat, old agent's load -1.
--   Both return {"queued", position, etaSeconds, availableAgents, avgHandleS,
--                queueLength, priority, enqueuedAt, oldAgent or ""}
-- mode agent: target must be online (not away) and below capacity.
--   Returns {"assigned", target, oldAgent or ""} or
--           {"refused", "offline"|"away"|"full"|"same"}
local prefix, chat, mode = ARGV[1], ARGV[2], ARGV[3]
local a = {}
local flat = redis.call('HGETALL', KEYS[9])
for i = 1, #flat, 2 do a[flat[i]] = flat[i + 1] end
local old = a.agent or ''

local function release_old()
    if old ~= '' then
        local l = redis.call('HINCRBY', KEYS[6], old, -1)
        if l < 0 then redis.call('HSET', KEYS[6], old, '0') end
    end
end

if mode == 'agent' then
    local target = ARGV[4]
    if target == old then return {'refused', 'same'} end
    local st = redis.call('HGET', KEYS[5], 'agent:' .. target)
    if not st then return {'refused', 'offline'} end
    if st ~= 'online' then return {'refused', 'away'} end
    local load = tonumber(redis.call('HGET', KEYS[6], target)) or 0
    local max = tonumber(redis.call('HGET', KEYS[7], target)) or 3
    if load >= max then return {'refused', 'full'} end
    release_old()
    redis.call('HINCRBY', KEYS[6], target, 1)
    local prev = queue_remove(prefix, KEYS[1], KEYS[3], chat) -- a queued chat handed over
    if #flat == 0 then
        local src = prev or {}
        redis.call('HSET', KEYS[9], 'assignedAt', fmt_int(now_ms()),
            'priority', src.priority or tostring(clamp_priority(ARGV[5])),
            'enqueuedAt', src.enqueuedAt or ARGV[6] or '0', 'skills', src.skills or '',
            'member', src.member or '', 'preview', src.preview or '')
    end
    redis.call('HSET', KEYS[9], 'agent', target)
    return {'assigned', target, old}
end

-- back to the queue
local prev = queue_remove(prefix, KEYS[1], KEYS[3], chat) -- transfer of a queued chat
local src = a
if prev ~= nil then src = prev end
local priority = clamp_priority(src.priority or ARGV[5])
local enq = tonumber(src.enqueuedAt or ARGV[6]) or 0
if enq <= 0 then enq = now_ms() end
local member = src.member
local skills = src.skills or ARGV[4] or ''
if mode == 'skills' then
    skills = ARGV[4]
    priority = clamp_priority(priority + 1)
end
release_old()
redis.call('DEL', KEYS[9])
member = queue_insert(prefix, KEYS[1], KEYS[3], KEYS[4], chat, priority, skills, enq, member, ARGV[7])
if mode == 'front' then
    local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    if #head == 2 and head[1] ~= member then
        local sc = fmt_int(tonumber(head[2]) - 1)
        local sig = redis.call('HGET', KEYS[2], 'sig') or ''
        redis.call('ZADD', KEYS[1], sc, member)
        redis.call('ZADD', sig_key(prefix, sig), sc, member)
        head_offer(prefix, sig, tonumber(head[2]) - 1, member)
    end
end
local pos = queue_position(KEYS[1], member)
local avail = available_agents(KEYS[5], KEYS[6], KEYS[7])
local avg = avg_handle(KEYS[8], ARGV[8])
return {'queued', pos, eta_seconds(pos, avail, avg), avail, avg, redis.call('ZCARD', KEYS[1]),
    priority, enq, old}
