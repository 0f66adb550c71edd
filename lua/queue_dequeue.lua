-- queue_dequeue: remove a chat from the queue (close, takeover of a queued
-- chat, AI resumes). Idempotent.
-- KEYS: 1 queue zset, 2 qentry:CHAT hash, 3 qsigs set
-- ARGV: 1 prefix, 2 chatId
-- Returns {removed 0|1, queueLength}
local e = queue_remove(ARGV[1], KEYS[1], KEYS[3], ARGV[2])
local removed = 0
if e ~= nil then removed = 1 end
return {removed, redis.call('ZCARD', KEYS[1])}
