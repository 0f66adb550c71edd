-- timer_claim: a timer key expired (keyspace notification seen by every
-- node). Removing the zset member is the claim: only the first caller whose
-- deadline has passed gets 1; a timer re-armed meanwhile (deadline in the
-- future) is not claimed.
-- KEYS: 1 timers zset, 2 timer:KIND:CHAT key
-- ARGV: 1 kind, 2 chatId
-- Returns {claimed 0|1, deadlineMs}
local m = ARGV[1] .. ':' .. ARGV[2]
local dl = tonumber(redis.call('ZSCORE', KEYS[1], m))
if dl == nil then return {0, 0} end
if dl > now_ms() then return {0, dl} end
redis.call('ZREM', KEYS[1], m)
redis.call('DEL', KEYS[2])
return {1, dl}
