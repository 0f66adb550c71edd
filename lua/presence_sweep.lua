-- presence_sweep: reconciler for missed "expired" notifications (every node
-- down, notifications off): drops sockets whose key no longer exists.
-- KEYS: 1 sockident hash, 2 status hash
-- ARGV: 1 prefix, 2 HSCAN cursor ("0" to start), 3 count
-- Returns {nextCursor, identity, wentOffline, identity, wentOffline, ...}
-- (one pair per removed socket). Call until nextCursor is "0".
local prefix = ARGV[1]
local r = redis.call('HSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])
local out = {r[1]}
local flat = r[2]
for i = 1, #flat, 2 do
    local sid, ident = flat[i], flat[i + 1]
    if redis.call('EXISTS', prefix .. 'sock:' .. sid) == 0 then
        redis.call('HDEL', KEYS[1], sid)
        local set = prefix .. 'ident:' .. ident
        redis.call('SREM', set, sid)
        local off = 0
        if redis.call('SCARD', set) == 0 and redis.call('HDEL', KEYS[2], ident) == 1 then off = 1 end
        out[#out + 1] = ident
        out[#out + 1] = off
    end
end
return out
