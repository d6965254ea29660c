-- Media is up in a room: the room becomes active and its token "in consultation".
-- moves: called -> in_consultation
-- KEYS[1] = wr:{hub}:room:<room>   KEYS[2] = wr:{hub}:events
-- ARGV: 1 prefix  2 now_ms  3 stream_maxlen
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'created' then
  return state or 'missing'
end
local token_id = redis.call('HGET', KEYS[1], 'token')
redis.call('HSET', KEYS[1], 'state', 'active', 'started_at', ARGV[2])
redis.call('HSET', ARGV[1] .. 'token:' .. token_id, 'state', 'in_consultation',
  'started_at', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', 'started', 'token', token_id,
  'spoke', redis.call('HGET', KEYS[1], 'spoke'), 'room', redis.call('HGET', KEYS[1], 'id'),
  'at', ARGV[2])
return 'active'
