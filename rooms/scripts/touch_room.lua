-- The process holding a live room says that it still holds it: the room's alive_at, and its
-- place in the hub's index of open rooms (scored by its last sign of life), which the sweep
-- reads.  Only an open room is touched: an ended or expired record stays as it is, so a late
-- beat never brings a room back.  No token changes state here.
-- KEYS[1] = wr:{hub}:room:<room>   KEYS[2] = wr:{hub}:open_rooms
-- ARGV: 1 room id  2 now_ms
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'created' and state ~= 'active' then
  return state or 'missing'
end
redis.call('HSET', KEYS[1], 'alive_at', ARGV[2])
-- A room called before the index existed joins it at its first beat.
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return state
