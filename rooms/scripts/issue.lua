-- Issue a token: number it for the hub's service day, and queue it if a window is open and has
-- room, or hold it for the next window otherwise.  Log it in the hub's stream.
-- moves: (new) -> waiting, (new) -> scheduled
-- Every key touched shares the {hub} hash tag of KEYS[1], so the script runs on Redis Cluster.
-- KEYS[1] = wr:{hub}:seq:<date>   KEYS[2] = wr:{hub}:order   KEYS[3] = wr:{hub}:queue
-- KEYS[4] = wr:{hub}:day:<date>   KEYS[5] = wr:{hub}:events  KEYS[6] = wr:{hub}:window
-- KEYS[7] = wr:{hub}:held       KEYS[8] = wr:{hub}:clock
-- ARGV: 1 prefix 'wr:{hub}:'  2 hub  3 date  4 spoke  5 nurse  6 now_ms  7 ttl_s
--       8 name  9 age  10 sex  11 phone  12 complaint  13 stream_maxlen
--       14 priority  15 advance_ms (how far ahead of its issue time the token queues)
-- The queue's score is the moment the token counts as issued, in ms, times 1000, plus its rank
-- among the tokens of that millisecond: first in, first out, urgent tokens counted as issued
-- advance_ms earlier (so they overtake normal ones issued in that span, never older ones).
-- The hub's issue clock never goes back, even if a server's clock does.
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[7])
local order = redis.call('INCR', KEYS[2])
-- The issue time never goes back (servers' clocks differ a little).
local ms = tonumber(ARGV[6])
local latest = tonumber(redis.call('HGET', KEYS[8], 'ms') or '0')
if latest > ms then
  ms = latest
end
redis.call('HSET', KEYS[8], 'ms', ms)
-- Tokens that count as issued in the same millisecond (an urgent one counts earlier) are
-- ranked by arrival: the rank is kept per counted millisecond, not per issue millisecond.
-- One small hash of ranks per service day, gone two days later.
local counted = ms - tonumber(ARGV[15])
local ranks = ARGV[1] .. 'ranks:' .. ARGV[3]
local rank = redis.call('HINCRBY', ranks, counted, 1) - 1
redis.call('EXPIRE', ranks, 2 * 24 * 3600)
if rank > 999 then
  rank = 999
end
local score = counted * 1000 + rank
local token_id = ARGV[2] .. '.' .. ARGV[3] .. '.' .. n
local tkey = ARGV[1] .. 'token:' .. token_id
local window = redis.call('HMGET', KEYS[6], 'key', 'capacity', 'admitted')
local state = 'scheduled'
if window[1] and tonumber(window[3]) < tonumber(window[2]) then
  state = 'waiting'
  redis.call('HINCRBY', KEYS[6], 'admitted', 1)
end
redis.call('HSET', tkey,
  'id', token_id, 'number', n, 'hub', ARGV[2], 'date', ARGV[3], 'spoke', ARGV[4],
  'nurse', ARGV[5], 'state', state, 'order', order, 'score', score, 'issued_at', ARGV[6],
  'priority', ARGV[14],
  'name', ARGV[8], 'age', ARGV[9], 'sex', ARGV[10], 'phone', ARGV[11], 'complaint', ARGV[12])
redis.call('EXPIRE', tkey, ARGV[7])
if state == 'waiting' then
  redis.call('ZADD', KEYS[3], score, token_id)
else
  redis.call('ZADD', KEYS[7], score, token_id)
end
redis.call('ZADD', KEYS[4], n, token_id)
redis.call('EXPIRE', KEYS[4], ARGV[7])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[13], '*',
  'event', 'issued', 'token', token_id, 'spoke', ARGV[4], 'state', state, 'at', ARGV[6])
-- The token comes back whole, saving the caller a second round trip.
return {token_id, n, state, cjson.encode(redis.call('HGETALL', tkey))}
