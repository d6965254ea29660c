-- End a room.  A consultation that took place completes its token; a room that ended before
-- any media flowed gives its token back its original place in the queue (or, if the window
-- has closed meanwhile, to the head of the next one).
-- moves: called -> completed, in_consultation -> completed, called -> waiting,
-- moves: called -> carried_over, called -> no_show
-- A room that ends because the spoke never joined (reason 'no_show') puts its token a few
-- places back the first time, and marks it a no-show the second.
-- The room leaves the hub's index of open rooms.
--
-- The sweep (ARGV[10] given) ends a room only if it is abandoned, and picks the reason itself:
-- a room 'created' that no process ever held (no alive_at) and was called before the no-show
-- cut-off ends as 'no_show'; a room whose holder's last beat (alive_at) is before the stale
-- cut-off ends as 'peer_lost' (completed if it was active, requeued if not).  Anything else is
-- left alone ('alive'); an active room that no process ever beat for (held by a server that
-- does not beat) leaves the index ('untracked'), as the sweep cannot tell whether it lives.
-- KEYS[1] = wr:{hub}:room:<room>   KEYS[2] = wr:{hub}:queue   KEYS[3] = wr:{hub}:events
-- KEYS[4] = wr:{hub}:window        KEYS[5] = wr:{hub}:held    KEYS[6] = wr:{hub}:open_rooms
-- ARGV: 1 prefix  2 now_ms  3 reason  4 stream_maxlen
--       5 '1' when the server saw media flow (its activation may not have reached the store)
--       6 carry offset (as in close_window.lua)
--       7 places a first no-show goes back  8 no-shows after which a token is dropped
--       9 room id  10 sweep: no-show cut-off in ms, or ''  11 sweep: stale cut-off in ms
-- Returns {outcome, token id, reason}: outcome 'completed', 'requeued' or 'no_show'; or
-- {'missing'}, {'ended', token id}, and for the sweep {'alive'} or {'untracked'}.
local state = redis.call('HGET', KEYS[1], 'state')
if state == false then
  redis.call('ZREM', KEYS[6], ARGV[9])  -- its record expired
  return {'missing'}
end
if state == 'ended' then
  redis.call('ZREM', KEYS[6], ARGV[9])
  return {'ended', redis.call('HGET', KEYS[1], 'token')}
end
local reason = ARGV[3]
if ARGV[10] ~= '' then
  local alive_at = redis.call('HGET', KEYS[1], 'alive_at')
  if alive_at then
    if tonumber(alive_at) >= tonumber(ARGV[11]) then
      return {'alive'}
    end
    reason = 'peer_lost'
  elseif state == 'created' then
    if tonumber(redis.call('HGET', KEYS[1], 'created_at') or 0) >= tonumber(ARGV[10]) then
      return {'alive'}
    end
    reason = 'no_show'
  else
    redis.call('ZREM', KEYS[6], ARGV[9])
    return {'untracked'}
  end
end
redis.call('ZREM', KEYS[6], ARGV[9])
local token_id = redis.call('HGET', KEYS[1], 'token')
local tkey = ARGV[1] .. 'token:' .. token_id
redis.call('HSET', KEYS[1], 'state', 'ended', 'ended_at', ARGV[2], 'end_reason', reason)
local outcome
if state == 'active' or ARGV[5] == '1' then
  redis.call('HSET', tkey, 'state', 'completed', 'ended_at', ARGV[2])
  outcome = 'completed'
elseif reason == 'no_show'
    and redis.call('HINCRBY', tkey, 'no_shows', 1) >= tonumber(ARGV[8]) then
  redis.call('HSET', tkey, 'state', 'no_show', 'ended_at', ARGV[2])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'event', 'no_show',
    'token', token_id, 'spoke', redis.call('HGET', KEYS[1], 'spoke'), 'at', ARGV[2])
  outcome = 'no_show'
else
  redis.call('HDEL', tkey, 'doctor', 'room', 'called_at')
  local score = tonumber(redis.call('HGET', tkey, 'score'))
  if reason == 'no_show' and redis.call('EXISTS', KEYS[4]) == 1 then
    -- Behind the next few waiting tokens: between the k-th and the (k+1)-th.
    local k = tonumber(ARGV[7])
    local around = redis.call('ZRANGE', KEYS[2], k - 1, k, 'WITHSCORES')
    if #around == 4 then
      score = (tonumber(around[2]) + tonumber(around[4])) / 2
    elseif #around == 2 then
      score = tonumber(around[2]) + 1
    else
      local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
      if #last == 2 and tonumber(last[2]) >= score then
        score = tonumber(last[2]) + 1
      end
    end
    redis.call('HSET', tkey, 'score', score)
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'event', 'no_show',
      'token', token_id, 'spoke', redis.call('HGET', KEYS[1], 'spoke'), 'requeued', '1',
      'at', ARGV[2])
  end
  if redis.call('EXISTS', KEYS[4]) == 1 then
    redis.call('HSET', tkey, 'state', 'waiting')
    redis.call('ZADD', KEYS[2], score, token_id)
  else
    if score >= 0 then
      score = score - tonumber(ARGV[6])
    end
    redis.call('HSET', tkey, 'state', 'carried_over', 'score', score)
    redis.call('ZADD', KEYS[5], score, token_id)
  end
  outcome = 'requeued'
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'event', 'ended', 'token', token_id,
  'spoke', redis.call('HGET', KEYS[1], 'spoke'), 'room', redis.call('HGET', KEYS[1], 'id'),
  'outcome', outcome, 'reason', reason, 'at', ARGV[2])
return {outcome, token_id, reason}
