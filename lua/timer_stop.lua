-- timer_stop: cancel timers of a chat.
-- KEYS: 1 timers zset, 2.. timer:KIND:CHAT keys
-- ARGV: 1 chatId, 2.. kinds matching KEYS[2..]
-- Returns the number of timers that were armed.
local n = 0
for i = 2, #KEYS do
    redis.call('DEL', KEYS[i])
    n = n + redis.call('ZREM', KEYS[1], ARGV[i] .. ':' .. ARGV[1])
end
return n
