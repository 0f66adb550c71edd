-- presence_remove: a socket closed normally.
-- KEYS: 1 sock:SID, 2 ident:TYPE:ID set, 3 status hash, 4 sockident hash
-- ARGV: 1 sid, 2 identity
-- Returns {wentOffline 0|1, remainingSockets}
local sid, ident = ARGV[1], ARGV[2]
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[4], sid)
local removed = redis.call('SREM', KEYS[2], sid)
local n = redis.call('SCARD', KEYS[2])
local off = 0
if n == 0 and redis.call('HDEL', KEYS[3], ident) == 1 then off = 1 end
if removed == 0 then off = 0 end
return {off, n}
