-- queue_snapshot: the queue in order, for pushing queue-position to every
-- waiting customer after a change (position i => offset + i).
-- KEYS: 1 queue zset, 2 status hash, 3 agentload hash, 4 agentmax hash,
--       5 aht string
-- ARGV: 1 default avg handle time s, 2 offset (0-based), 3 limit
-- Returns {availableAgents, avgHandleS, queueLength, chatId...}
local avail = available_agents(KEYS[2], KEYS[3], KEYS[4])
local avg = avg_handle(KEYS[5], ARGV[1])
local off = tonumber(ARGV[2]) or 0
local lim = tonumber(ARGV[3]) or 100
local out = {avail, avg, redis.call('ZCARD', KEYS[1])}
if lim > 0 then
    for _, m in ipairs(redis.call('ZRANGE', KEYS[1], off, off + lim - 1)) do
        out[#out + 1] = member_chat(m)
    end
end
return out
