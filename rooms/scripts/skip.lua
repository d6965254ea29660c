-- A doctor moves a waiting token a few places back (the patient stepped out for a test).
-- moves: waiting -> waiting
-- KEYS[1] = wr:{hub}:queue   KEYS[2] = wr:{hub}:events
-- ARGV: 1 prefix  2 token_id  3 places  4 doctor  5 now_ms  6 stream_maxlen
local rank = redis.call('ZRANK', KEYS[1], ARGV[2])
if not rank then
  return 'not_waiting'
end
local own = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]))
redis.call('ZREM', KEYS[1], ARGV[2])
-- Without it, the tokens that were behind it sit at rank .. rank+places-1: it goes after them.
local k = rank + tonumber(ARGV[3]) - 1
local around = redis.call('ZRANGE', KEYS[1], k, k + 1, 'WITHSCORES')
local score = own
if #around == 4 then
  score = (tonumber(around[2]) + tonumber(around[4])) / 2
elseif #around == 2 then
  score = tonumber(around[2]) + 1
else
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if #last == 2 then
    score = math.max(own, tonumber(last[2]) + 1)
  end
end
redis.call('ZADD', KEYS[1], score, ARGV[2])
redis.call('HSET', ARGV[1] .. 'token:' .. ARGV[2], 'score', score)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'event', 'skipped', 'token', ARGV[2],
  'doctor', ARGV[4], 'at', ARGV[5])
return 'ok'
