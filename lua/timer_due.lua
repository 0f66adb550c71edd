-- timer_due: reconciler. Claims up to LIMIT timers of an org whose deadline
-- passed but nobody claimed (missed notification, all nodes down).
-- KEYS: 1 timers zset
-- ARGV: 1 prefix, 2 limit, 3 grace ms (only deadlines older than now-grace,
--       so the notification path normally wins)
-- Returns {kind, chatId, deadlineMs, ...} for every timer claimed.
local prefix = ARGV[1]
local upto = now_ms() - (tonumber(ARGV[3]) or 0)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', fmt_int(upto), 'WITHSCORES',
    'LIMIT', 0, tonumber(ARGV[2]) or 100)
local out = {}
for i = 1, #due, 2 do
    local m = due[i]
    local c = string.find(m, ':', 1, true)
    if c ~= nil then
        local kind, chat = string.sub(m, 1, c - 1), string.sub(m, c + 1)
        redis.call('ZREM', KEYS[1], m)
        redis.call('DEL', prefix .. 'timer:' .. kind .. ':' .. chat)
        out[#out + 1] = kind
        out[#out + 1] = chat
        out[#out + 1] = tonumber(due[i + 1])
    end
end
return out
