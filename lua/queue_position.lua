-- queue_position: 1-based position of a queued chat and its ETA.
-- ETA = ceil(position / max(availableAgents, 1)) * avgHandleTimeSeconds,
-- availableAgents = agents online, not away, below capacity.
-- KEYS: 1 queue zset, 2 qentry:CHAT hash, 3 status hash, 4 agentload hash,
--       5 agentmax hash, 6 aht string
-- ARGV: 1 prefix, 2 chatId, 3 default avg handle time s
-- Returns {position (0 = not queued), etaSeconds, availableAgents,
--          avgHandleS, queueLength}
local member = redis.call('HGET', KEYS[2], 'member')
local pos = 0
if member then pos = queue_position(KEYS[1], member) end
local avail = available_agents(KEYS[3], KEYS[4], KEYS[5])
local avg = avg_handle(KEYS[6], ARGV[3])
return {pos, eta_seconds(pos, avail, avg), avail, avg, redis.call('ZCARD', KEYS[1])}
