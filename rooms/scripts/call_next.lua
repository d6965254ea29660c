-- Call the head of a hub's queue (or one named waiting token) and open its room, atomically:
-- two doctors calling at once never get the same token.
-- moves: waiting -> called
-- The head is the first token whose spoke is present: a spoke whose page has not been seen for
-- the hub's presence grace keeps its place, but is passed over until it is back.  A spoke
-- never seen (a token registered some other way) counts as present.
-- The room joins the hub's index of open rooms (scored by its last sign of life, here its
-- creation), where the sweep finds the rooms that nobody opened or whose process died.
-- KEYS[1] = wr:{hub}:queue   KEYS[2] = wr:{hub}:events   KEYS[3] = wr:{hub}:spokes
-- KEYS[4] = wr:{hub}:open_rooms
-- ARGV: 1 prefix 'wr:{hub}:'  2 doctor  3 room_id  4 now_ms  5 ttl_s  6 node  7 token_id or ''
--       8 stream_maxlen  9 presence grace in ms
local token_id
if ARGV[7] ~= '' then
  if redis.call('ZREM', KEYS[1], ARGV[7]) == 0 then
    return {'not_waiting'}
  end
  token_id = ARGV[7]
else
  local now = tonumber(ARGV[4])
  local grace = tonumber(ARGV[9])
  local away = 0
  local head = redis.call('ZRANGE', KEYS[1], 0, 99)
  for _, candidate in ipairs(head) do
    local spoke = redis.call('HGET', ARGV[1] .. 'token:' .. candidate, 'spoke')
    if not spoke then
      redis.call('ZREM', KEYS[1], candidate)  -- its record expired: nothing to call
    else
      local seen = redis.call('ZSCORE', KEYS[3], spoke)
      if not seen or now - tonumber(seen) <= grace then
        token_id = candidate
        break
      end
      away = away + 1
    end
  end
  if not token_id then
    if away > 0 then
      return {'away'}
    end
    return {'empty'}
  end
  redis.call('ZREM', KEYS[1], token_id)
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
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*',
  'event', 'called', 'token', token_id, 'spoke', spoke, 'room', ARGV[3], 'at', ARGV[4])
-- The token comes back whole, saving the caller a second round trip.
return {'ok', token_id, cjson.encode(redis.call('HGETALL', tkey))}
