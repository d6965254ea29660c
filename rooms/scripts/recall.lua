-- A doctor recalls a token marked a no-show today (the patient came back): it goes to the head
-- of the queue if a window is open, or first in line for the next one.
-- moves: no_show -> waiting, no_show -> carried_over
-- KEYS[1] = wr:{hub}:queue   KEYS[2] = wr:{hub}:events   KEYS[3] = wr:{hub}:window
-- KEYS[4] = wr:{hub}:held
-- ARGV: 1 prefix  2 token_id  3 doctor  4 now_ms  5 stream_maxlen  6 carry offset
local tkey = ARGV[1] .. 'token:' .. ARGV[2]
local state = redis.call('HGET', tkey, 'state')
if state == false then
  return 'missing'
end
if state ~= 'no_show' then
  return state
end
-- Ahead of everyone: below the lowest score queued or held now.
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local held = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
local score = tonumber(redis.call('HGET', tkey, 'score')) - tonumber(ARGV[6])
if #first == 2 then
  score = math.min(score, tonumber(first[2]) - 1)
end
if #held == 2 then
  score = math.min(score, tonumber(held[2]) - 1)
end
redis.call('HSET', tkey, 'score', score, 'no_shows', 0)
redis.call('HDEL', tkey, 'ended_at')
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', tkey, 'state', 'waiting')
  redis.call('ZADD', KEYS[1], score, ARGV[2])
else
  redis.call('HSET', tkey, 'state', 'carried_over')
  redis.call('ZADD', KEYS[4], score, ARGV[2])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'event', 'recalled', 'token', ARGV[2],
  'doctor', ARGV[3], 'at', ARGV[4])
return 'ok'
