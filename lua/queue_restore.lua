-- queue_restore: rebuild an assignment after Redis lost its data (restart
-- without persistence): the gateway replays its assigned chats from
-- PostgreSQL, and queued chats with queue_enqueue + their original time.
-- Idempotent: an existing assignment record is left alone.
-- KEYS: 1 assign:CHAT hash, 2 agentload hash, 3 agentmax hash
-- ARGV: 1 chatId, 2 agent, 3 assignedAt ms, 4 priority, 5 enqueuedAt ms,
--       6 skills "a,b", 7 max_chats of the agent ("" = unknown)
-- Returns {restored 0|1, agentLoad}
if redis.call('EXISTS', KEYS[1]) == 1 then
    return {0, tonumber(redis.call('HGET', KEYS[2], ARGV[2])) or 0}
end
redis.call('HSET', KEYS[1], 'agent', ARGV[2], 'assignedAt', ARGV[3], 'priority', ARGV[4],
    'enqueuedAt', ARGV[5], 'skills', skills_sig(split_skills(ARGV[6])), 'member', '',
    'preview', '')
if ARGV[7] ~= nil and ARGV[7] ~= '' then redis.call('HSET', KEYS[3], ARGV[2], ARGV[7]) end
return {1, redis.call('HINCRBY', KEYS[2], ARGV[2], 1)}
