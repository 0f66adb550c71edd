-- queue_untransfer: undo a transfer to an agent (queue_transfer, mode agent) that PostgreSQL
-- did not take, but only while that transfer's assignment still stands. A close that ran in
-- between (chat_release) has already given the target's capacity back and deleted the record:
-- undoing on top of it took the target below zero and gave the old agent a chat it no longer
-- had, for good (found by a review).
-- KEYS: 1 assign:CHAT hash, 2 agentload hash
-- ARGV: 1 the agent before the transfer, 2 the target
-- Returns 1 when undone, 0 when there was nothing to undo
if redis.call('HGET', KEYS[1], 'agent') ~= ARGV[2] then return 0 end
local l = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if l < 0 then redis.call('HSET', KEYS[2], ARGV[2], '0') end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HSET', KEYS[1], 'agent', ARGV[1])
return 1
