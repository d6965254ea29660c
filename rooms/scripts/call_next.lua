-- Call the head of a hub's queue (or one named waiting token) and open its room, atomically:
-- two doctors calling at once never get the same token.
-- moves: waiting -> called
-- KEYS[1] = wr:{hub}:queue   KEYS[2] = wr:{hub}:events
-- ARGV: 1 prefix 'wr:{hub}:'  2 doctor  3 room_id  4 now_ms  5 ttl_s  6 node  7 token_id or ''
--       8 stream_maxlen
local token_id
if ARGV[7] ~= '' then
  if redis.call('ZREM', KEYS[1], ARGV[7]) == 0 then
    return {'not_waiting'}
  end
  token_id = ARGV[7]
else
  local head = redis.call('ZPOPMIN', KEYS[1])
  if #head == 0 then
    return {'empty'}
  end
  token_id = head[1]
end
local tkey = ARGV[1] .. 'token:' .. token_id
local spoke = redis.call('HGET', tkey, 'spoke')
local nurse = redis.call('HGET', tkey, 'nurse')
redis.call('HSET', tkey, 'state', 'called', 'doctor', ARGV[2], 'room', ARGV[3],
  'called_at', ARGV[4])
local rkey = ARGV[1] .. 'room:' .. ARGV[3]
redis.call('HSET', rkey, 'id', ARGV[3], 'token', token_id, 'spoke', spoke, 'nurse', nurse,
  'doctor', ARGV[2], 'state', 'created', 'node', ARGV[6], 'created_at', ARGV[4])
redis.call('EXPIRE', rkey, ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*',
  'event', 'called', 'token', token_id, 'spoke', spoke, 'room', ARGV[3], 'at', ARGV[4])
return {'ok', token_id}
