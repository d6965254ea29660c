-- A nurse withdraws a token that is waiting, scheduled or carried over (the patient left).
-- moves: waiting -> cancelled, scheduled -> cancelled, carried_over -> cancelled
-- KEYS[1] = wr:{hub}:queue   KEYS[2] = wr:{hub}:events   KEYS[3] = wr:{hub}:held
-- ARGV: 1 prefix  2 token_id  3 spoke  4 now_ms  5 stream_maxlen
local tkey = ARGV[1] .. 'token:' .. ARGV[2]
if redis.call('HGET', tkey, 'spoke') ~= ARGV[3] then
  return 'missing'
end
if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 and redis.call('ZREM', KEYS[3], ARGV[2]) == 0 then
  return redis.call('HGET', tkey, 'state')
end
redis.call('HSET', tkey, 'state', 'cancelled', 'ended_at', ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'event', 'cancelled', 'token', ARGV[2],
  'spoke', ARGV[3], 'at', ARGV[4])
return 'ok'
