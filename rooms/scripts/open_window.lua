-- Open a hub's service window: held tokens join the queue, carried-over ones first (their
-- scores come before any other), then scheduled ones in issue order, up to the capacity.
-- Idempotent: opening the window that is already open does nothing.
-- moves: scheduled -> waiting, carried_over -> waiting
-- KEYS[1] = wr:{hub}:window   KEYS[2] = wr:{hub}:queue   KEYS[3] = wr:{hub}:held
-- KEYS[4] = wr:{hub}:events   KEYS[5] = wr:{hub}:window:closed (the last window closed)
-- ARGV: 1 prefix  2 window key  3 capacity  4 closes_at_ms  5 now_ms  6 stream_maxlen
-- A server whose clock lags must not reopen a window another already closed, nor open one
-- whose end has passed.
local current = redis.call('HGET', KEYS[1], 'key')
if current == ARGV[2] then
  return {'open', 0}
end
if redis.call('GET', KEYS[5]) == ARGV[2] or tonumber(ARGV[5]) >= tonumber(ARGV[4]) then
  return {'past', 0}
end
if current then
  return {'other', current}
end
local capacity = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'key', ARGV[2], 'capacity', capacity, 'admitted', 0,
  'closes_at', ARGV[4], 'opened_at', ARGV[5])
local held = redis.call('ZRANGE', KEYS[3], 0, capacity - 1, 'WITHSCORES')
local admitted = 0
for i = 1, #held, 2 do
  local token_id = held[i]
  redis.call('ZREM', KEYS[3], token_id)
  redis.call('ZADD', KEYS[2], held[i + 1], token_id)
  redis.call('HSET', ARGV[1] .. 'token:' .. token_id, 'state', 'waiting')
  admitted = admitted + 1
end
redis.call('HSET', KEYS[1], 'admitted', admitted)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'event', 'window_opened',
  'window', ARGV[2], 'admitted', admitted, 'at', ARGV[5])
return {'opened', admitted}
