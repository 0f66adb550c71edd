-- timer_arm: (re)arm a chat's timers; any message resets them by arming again.
-- Each timer is a key with PX (its expiry fires the keyspace notification)
-- plus a member "KIND:CHAT" in the org's timers zset scored by the deadline
-- (the reconciler's index and the claim token).
-- KEYS: 1 timers zset, 2.. timer:KIND:CHAT keys
-- ARGV: 1 chatId, then per key in KEYS[2..]: kind, delay ms
-- Returns {deadlineMs...} in KEYS order (Redis clock).
local chat = ARGV[1]
local now = now_ms()
local out = {}
for i = 2, #KEYS do
    local kind, ms = ARGV[2 * i - 2], tonumber(ARGV[2 * i - 1])
    local dl = now + ms
    redis.call('SET', KEYS[i], chat, 'PX', fmt_int(ms))
    redis.call('ZADD', KEYS[1], fmt_int(dl), kind .. ':' .. chat)
    out[#out + 1] = dl
end
return out
