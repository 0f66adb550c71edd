-- queue_enqueue: put a chat into its org's queue (idempotent).
-- KEYS: 1 queue zset, 2 qentry:CHAT hash, 3 qsigs set, 4 qseq counter,
--       5 status hash, 6 agentload hash, 7 agentmax hash, 8 aht string
-- ARGV: 1 prefix "chat:{org}:", 2 chatId, 3 priority 0-9 (9 first),
--       4 required skills "a,b", 5 enqueuedAt ms (0 = now; PostgreSQL rebuild
--       passes the original), 6 preview, 7 default avg handle time s
-- Returns {created 0|1, position, etaSeconds, availableAgents, avgHandleS,
--          queueLength, priority, enqueuedAt}. A chat already queued keeps its
--          place and data (created = 0).
local prefix, chat = ARGV[1], ARGV[2]
local created = 0
local priority, enq
local member = redis.call('HGET', KEYS[2], 'member')
if member then
    priority = tonumber(redis.call('HGET', KEYS[2], 'priority')) or 0
    enq = tonumber(redis.call('HGET', KEYS[2], 'enqueuedAt')) or 0
else
    priority = clamp_priority(ARGV[3])
    enq = tonumber(ARGV[5]) or 0
    if enq <= 0 then enq = now_ms() end
    member = queue_insert(prefix, KEYS[1], KEYS[3], KEYS[4], chat, priority, ARGV[4], enq, nil, ARGV[6])
    created = 1
end
local pos = queue_position(KEYS[1], member)
local avail = available_agents(KEYS[5], KEYS[6], KEYS[7])
local avg = avg_handle(KEYS[8], ARGV[7])
return {created, pos, eta_seconds(pos, avail, avg), avail, avg, redis.call('ZCARD', KEYS[1]),
    priority, enq}
