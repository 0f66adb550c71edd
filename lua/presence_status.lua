-- presence_status: set-status online|away for a connected identity.
-- KEYS: 1 status hash, 2 ident:TYPE:ID set
-- ARGV: 1 identity, 2 status "online" | "away"
-- Returns {changed 0|1, status} ; status "offline" (changed 0) when the
-- identity has no socket.
if redis.call('SCARD', KEYS[2]) == 0 then return {0, 'offline'} end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur == ARGV[2] then return {0, cur} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, ARGV[2]}
