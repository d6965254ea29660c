-- Place an open room on another node, if it is still on the one the caller saw (its node died,
-- or is draining and never opened the room).  Returns the room's node after the call.
-- KEYS[1] = wr:{hub}:room:<room>
-- ARGV: 1 the node the caller saw  2 the node to move it to
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return false
end
if state == 'ended' then
  return 'ended'
end
local node = redis.call('HGET', KEYS[1], 'node')
if node == ARGV[1] then
  redis.call('HSET', KEYS[1], 'node', ARGV[2])
  return ARGV[2]
end
return node
