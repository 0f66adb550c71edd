-- presence_expired: clean up after a socket key expired (keyspace "expired"
-- event, seen by every node). Deleting the sid from the sockident hash is the
-- claim: it succeeds once, so exactly one node reports the change.
-- KEYS: 1 sockident hash, 2 status hash, 3 sock:SID
-- ARGV: 1 prefix, 2 sid
-- Returns {acted 0|1, identity or "", wentOffline 0|1, remainingSockets}
local prefix, sid = ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[3]) == 1 then return {0, '', 0, 0} end -- alive again
local ident = redis.call('HGET', KEYS[1], sid)
if not ident then return {0, '', 0, 0} end
redis.call('HDEL', KEYS[1], sid)
local set = prefix .. 'ident:' .. ident
redis.call('SREM', set, sid)
local n = redis.call('SCARD', set)
local off = 0
if n == 0 and redis.call('HDEL', KEYS[2], ident) == 1 then off = 1 end
return {1, ident, off, n}
