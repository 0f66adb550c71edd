-- lib.lua: helpers shared by every chatd script. The loader (store/keys.c,
-- rk_script_source) prepends this file to each script before SCRIPT LOAD, so
-- every script is self-contained once loaded. Only local functions here.
--
-- Conventions for all scripts:
--   * KEYS holds every fixed key the script touches; keys derived at run time
--     (entry hashes of other chats, per-skill-set zsets) are built from the
--     org prefix "chat:{org}:" passed in ARGV and share its {org} hash tag, so
--     they hash to the same Redis Cluster slot as KEYS[1].
--   * Numbers going to redis.call are formatted with fmt_int: Lua 5.1 turns a
--     number into a string with "%.14g", which would round queue scores.
--   * Time comes from Redis TIME (one clock for every node).

local function fmt_int(n)
    return string.format('%.0f', n)
end

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- "b,a,,b" -> {"a","b"} (sorted, unique, empty items dropped)
local function split_skills(s)
    local seen, out = {}, {}
    if s == nil then return out end
    for item in string.gmatch(s, '[^,]+') do
        if not seen[item] then
            seen[item] = true
            out[#out + 1] = item
        end
    end
    table.sort(out)
    return out
end

local function skills_sig(list)
    return table.concat(list, ',')
end

-- Queue score: priority band (9 = first) then enqueue time in ms. Both are
-- exact integers below 2^53 (band width 1e13 ms = until the year 2286).
local PRIO_BAND = 10000000000000

local function queue_score(priority, enqueued_ms)
    return (9 - priority) * PRIO_BAND + enqueued_ms
end

local function clamp_priority(p)
    p = math.floor(tonumber(p) or 0)
    if p < 0 then p = 0 end
    if p > 9 then p = 9 end
    return p
end

-- zset member: zero-padded per-org sequence + ':' + chat id, so equal scores
-- (same priority, same millisecond) still sort in enqueue order.
local function member_chat(member)
    local i = string.find(member, ':', 1, true)
    if i == nil then return member end
    return string.sub(member, i + 1)
end

-- Agents that are online, not away and below capacity.
-- status: hash identity ("agent:SUB"|"customer:KEY") -> online|away
-- load / max: hashes SUB -> count / max_chats; every agent that ever
-- connected has a max_chats entry (presence_add, queue_pick), so the agents
-- are read from `max` and only their status is looked up: the cost does not
-- grow with the customers connected (the status hash holds them too; with
-- 2,000 waiting customers HGETALL status made every enqueue take 10 ms).
local function available_agents(status_key, load_key, max_key)
    local m = redis.call('HGETALL', max_key)
    if #m == 0 then return 0 end
    local n = 0
    local i = 1
    while i <= #m do
        local subs, idents, maxes = {}, {}, {}
        for j = i, math.min(i + 999, #m), 2 do
            subs[#subs + 1] = m[j]
            idents[#idents + 1] = 'agent:' .. m[j]
            maxes[#maxes + 1] = tonumber(m[j + 1]) or 3
        end
        local st = redis.call('HMGET', status_key, unpack(idents))
        local ld = redis.call('HMGET', load_key, unpack(subs))
        for k = 1, #subs do
            if st[k] == 'online' and (tonumber(ld[k]) or 0) < maxes[k] then n = n + 1 end
        end
        i = i + 1000
    end
    return n
end

local function avg_handle(aht_key, default_s)
    local v = tonumber(redis.call('GET', aht_key))
    if v == nil then v = tonumber(default_s) or 300 end
    return v
end

-- ETA = ceil(position / max(available, 1)) * avgHandleTimeSeconds
local function eta_seconds(position, available, avg)
    if position <= 0 then return 0 end
    if available < 1 then available = 1 end
    return math.ceil(math.ceil(position / available) * avg)
end

local function entry_key(prefix, chat) return prefix .. 'qentry:' .. chat end
local function sig_key(prefix, sig) return prefix .. 'qsig:' .. sig end
-- qsigf:SKILL = the skill sets (with a qsig zset) whose first skill is SKILL,
-- so pick only looks at skill sets that can possibly match the agent.
local function sigfirst_key(prefix, sig)
    local c = string.find(sig, ',', 1, true)
    local first = sig
    if c ~= nil then first = string.sub(sig, 1, c - 1) end
    return prefix .. 'qsigf:' .. first
end

-- qhead: skill set -> "score|member" of the first entry of its qsig zset,
-- so pick reads every candidate head with one HMGET.
local function head_parse(v)
    if not v then return nil end
    local bar = string.find(v, '|', 1, true)
    if bar == nil then return nil end
    return tonumber(string.sub(v, 1, bar - 1)), string.sub(v, bar + 1)
end

local function head_offer(prefix, sig, score, member)
    local k = prefix .. 'qhead'
    local sc, m = head_parse(redis.call('HGET', k, sig))
    if sc == nil or score < sc or (score == sc and member < m) then
        redis.call('HSET', k, sig, fmt_int(score) .. '|' .. member)
    end
end

local function head_refresh(prefix, sig)
    local k = prefix .. 'qhead'
    local h = redis.call('ZRANGE', prefix .. 'qsig:' .. sig, 0, 0, 'WITHSCORES')
    if #h == 2 then
        redis.call('HSET', k, sig, fmt_int(tonumber(h[2])) .. '|' .. h[1])
    else
        redis.call('HDEL', k, sig)
    end
end

local function sig_index_add(prefix, sigs_key, sig)
    if redis.call('SADD', sigs_key, sig) == 1 and sig ~= '' then
        redis.call('SADD', sigfirst_key(prefix, sig), sig)
    end
end

local function sig_index_del(prefix, sigs_key, sig)
    redis.call('SREM', sigs_key, sig)
    if sig ~= '' then redis.call('SREM', sigfirst_key(prefix, sig), sig) end
end

-- Removes a queued chat (entry hash + both zsets). Returns the entry as a
-- table (field -> value) or nil when the chat was not queued.
local function queue_remove(prefix, queue_key, sigs_key, chat)
    local ek = entry_key(prefix, chat)
    local flat = redis.call('HGETALL', ek)
    if #flat == 0 then return nil end
    local e = {}
    for i = 1, #flat, 2 do e[flat[i]] = flat[i + 1] end
    redis.call('ZREM', queue_key, e.member)
    local sig = e.sig or ''
    local sk = sig_key(prefix, sig)
    redis.call('ZREM', sk, e.member)
    local _, hm = head_parse(redis.call('HGET', prefix .. 'qhead', sig))
    if hm == nil or hm == e.member then head_refresh(prefix, sig) end
    if redis.call('ZCARD', sk) == 0 then sig_index_del(prefix, sigs_key, sig) end
    redis.call('DEL', ek)
    return e
end

-- Inserts a chat into the queue. enq_ms/member may be given to keep the
-- original order (transfer); otherwise a new sequence number is drawn.
local function queue_insert(prefix, queue_key, sigs_key, seq_key, chat, priority, skills_csv,
                            enq_ms, member, preview)
    local list = split_skills(skills_csv)
    local sig = skills_sig(list)
    if member == nil or member == '' then
        local seq = redis.call('INCR', seq_key)
        member = string.format('%012d', seq) .. ':' .. chat
    end
    local nscore = queue_score(priority, enq_ms)
    local score = fmt_int(nscore)
    redis.call('ZADD', queue_key, score, member)
    redis.call('ZADD', sig_key(prefix, sig), score, member)
    head_offer(prefix, sig, nscore, member)
    sig_index_add(prefix, sigs_key, sig)
    redis.call('HSET', entry_key(prefix, chat), 'chat', chat, 'member', member, 'skills', sig,
        'sig', sig, 'priority', tostring(priority), 'enqueuedAt', fmt_int(enq_ms),
        'preview', preview or '')
    return member
end

local function queue_position(queue_key, member)
    local r = redis.call('ZRANK', queue_key, member)
    if r == false or r == nil then return 0 end
    return r + 1
end
