-- presence_add: a socket of an identity connected on some node.
-- KEYS: 1 sock:SID string (PX), 2 ident:TYPE:ID set, 3 status hash,
--       4 sockident hash, 5 agentmax hash
-- ARGV: 1 sid, 2 identity "agent:SUB" | "customer:KEY", 3 ttl ms, 4 node id,
--       5 max_chats for agents ("" for customers)
-- Returns {becameOnline 0|1, status "online"|"away", socketCount}
-- A new tab never resets "away" (status is only written when the identity
-- had no socket).
local sid, ident = ARGV[1], ARGV[2]
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[3])
redis.call('HSET', KEYS[4], sid, ident)
redis.call('SADD', KEYS[2], sid)
if ARGV[5] ~= nil and ARGV[5] ~= '' and string.sub(ident, 1, 6) == 'agent:' then
    redis.call('HSET', KEYS[5], string.sub(ident, 7), ARGV[5])
end
local n = redis.call('SCARD', KEYS[2])
local st = redis.call('HGET', KEYS[3], ident)
local became = 0
if not st then
    st = 'online'
    redis.call('HSET', KEYS[3], ident, st)
    became = 1
end
return {became, st, n}
