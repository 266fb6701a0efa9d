-- Finish an attempt (relay.events.EventStore.finish_attempt): log it and move the event to its
-- new state, if the event is still at the job's seq (else a newer job owns it: nothing changes).
--
-- KEYS[1] event    KEYS[2] attempts    KEYS[3] purchase    KEYS[4] outbox
-- KEYS[5] dead letters    KEYS[6] the project's dead letters
-- ARGV[1] event id    ARGV[2] seq    ARGV[3] attempt JSON ('' to log none)    ARGV[4] new state
-- ARGV[5] score: when the next attempt is due (retrying) or now (failed), in ms
-- ARGV[6] next_attempt_at (ISO or '')    ARGV[7] dead_at (ISO or '')    ARGV[8] attempt log length kept
--
-- Returns 1 when applied, 0 when the event has moved on to a newer seq.

local event_id = ARGV[1]
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[8]), -1)
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
end
local state = ARGV[4]
redis.call('HSET', KEYS[1], 'state', state, 'next_attempt_at', ARGV[6], 'dead_at', ARGV[7])
redis.call('HSET', KEYS[3], 'webhook_status', state)
if state == 'retrying' then
  redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('ZADD', KEYS[4], ARGV[5], event_id)
elseif state == 'failed' then
  redis.call('ZREM', KEYS[4], event_id)
  redis.call('ZADD', KEYS[5], ARGV[5], event_id)
  redis.call('ZADD', KEYS[6], ARGV[5], event_id)
else
  redis.call('ZREM', KEYS[4], event_id)
end
return 1
