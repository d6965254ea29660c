-- Close a hub's service window.  Tokens still waiting are carried over to the head of the next
-- window in their order, or expire, as the hub's policy says.  Tokens already called or in
-- consultation are not touched: those consultations go on.  Idempotent.
-- moves: waiting -> carried_over, waiting -> expired
-- KEYS[1] = wr:{hub}:window   KEYS[2] = wr:{hub}:queue   KEYS[3] = wr:{hub}:held
-- KEYS[4] = wr:{hub}:events   KEYS[5] = wr:{hub}:window:closed
-- ARGV: 1 prefix  2 policy ('carry_over' or 'expire')  3 now_ms  4 stream_maxlen
--       5 carry offset (subtracted once from a score so carried tokens come first)
--       6 '1' to close before the window's time (its hours were changed); otherwise a server
--         whose clock lags cannot close a window that another just opened
local current = redis.call('HGET', KEYS[1], 'key')
if not current then
  return {'closed', 0}
end
if ARGV[6] ~= '1' and tonumber(ARGV[3]) < tonumber(redis.call('HGET', KEYS[1], 'closes_at')) then
  return {'early', 0}
end
local waiting = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local offset = tonumber(ARGV[5])
for i = 1, #waiting, 2 do
  local token_id = waiting[i]
  local tkey = ARGV[1] .. 'token:' .. token_id
  if ARGV[2] == 'carry_over' then
    local score = tonumber(waiting[i + 1])
    if score >= 0 then
      score = score - offset
    end
    redis.call('ZADD', KEYS[3], score, token_id)
    -- The token keeps its carried place even if it is called and requeued later.
    redis.call('HSET', tkey, 'state', 'carried_over', 'score', score)
  else
    redis.call('HSET', tkey, 'state', 'expired', 'ended_at', ARGV[3],
      'end_reason', 'service window closed')
  end
end
redis.call('DEL', KEYS[2])
redis.call('DEL', KEYS[1])
-- Remember a window closed at its time, so a lagging server cannot reopen it; one closed early
-- by an edit of the hours may open again if the edit is undone.
if ARGV[6] ~= '1' then
  redis.call('SET', KEYS[5], current, 'EX', 7 * 24 * 3600)
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'event', 'window_closed',
  'window', current, 'policy', ARGV[2], 'tokens', #waiting / 2, 'at', ARGV[3])
return {'closed', #waiting / 2}
