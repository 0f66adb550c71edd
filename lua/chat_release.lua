-- chat_release: a chat leaves human handling. mode "close" (close-chat,
-- inactivity) also feeds the per-org average handle time; mode "release"
-- (resume-ai) only frees capacity. Both: dequeue if queued, agent load -1,
-- assignment record deleted, timers stopped. Idempotent.
-- Average handle time = mean of the last 20 assigned->closed durations
-- (rounded to whole seconds), CHATD_DEFAULT_HANDLE_TIME_S before the first.
-- KEYS: 1 queue zset, 2 qentry:CHAT, 3 qsigs, 4 agentload, 5 assign:CHAT,
--       6 aht string, 7 ahtwin list, 8 timers zset, 9.. timer:KIND:CHAT keys
-- ARGV: 1 prefix, 2 chatId, 3 mode, 4 default avg handle time s,
--       5.. timer kinds matching KEYS[9..]
-- Returns {wasQueued 0|1, agent or "", handledMs (0 if none), avgHandleS}
local prefix, chat, mode = ARGV[1], ARGV[2], ARGV[3]
local was = 0
if queue_remove(prefix, KEYS[1], KEYS[3], chat) ~= nil then was = 1 end
local agent = redis.call('HGET', KEYS[5], 'agent') or ''
local at = tonumber(redis.call('HGET', KEYS[5], 'assignedAt')) or 0
local handled = 0
if agent ~= '' then
    local l = redis.call('HINCRBY', KEYS[4], agent, -1)
    if l < 0 then redis.call('HSET', KEYS[4], agent, '0') end
    if mode == 'close' and at > 0 then
        handled = now_ms() - at
        if handled < 0 then handled = 0 end
        redis.call('LPUSH', KEYS[7], fmt_int(handled))
        redis.call('LTRIM', KEYS[7], 0, 19)
        local sum, n = 0, 0
        for _, v in ipairs(redis.call('LRANGE', KEYS[7], 0, -1)) do
            sum = sum + tonumber(v); n = n + 1
        end
        redis.call('SET', KEYS[6], fmt_int(math.floor(sum / n / 1000 + 0.5)))
    end
end
redis.call('DEL', KEYS[5])
for i = 9, #KEYS do
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[8], ARGV[i - 4] .. ':' .. chat)
end
return {was, agent, handled, avg_handle(KEYS[6], ARGV[4])}
