-- presence_heartbeat: refresh a socket's TTL.
-- KEYS: 1 sock:SID, 2 sockident hash
-- ARGV: 1 sid, 2 ttl ms
-- Returns 1, or 0 when the socket is unknown (its key expired and was
-- cleaned up): the caller re-adds it with presence_add.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('PEXPIRE', KEYS[1], ARGV[2]) == 0 then return 0 end
return 1
