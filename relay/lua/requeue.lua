-- Requeue (relay.events.EventStore.requeue): send an event again from a fresh retry budget, for a
-- replay or a retry-webhook. Bumps seq, so a job of the event's earlier life finds it moved on. The
-- order (or the operator's event) is no longer finished: it leaves the retention schedule until
-- the event finishes again.
--
-- KEYS[1] event    KEYS[2] purchase    KEYS[3] outbox    KEYS[4] dead letters
-- KEYS[5] the project's dead letters    KEYS[6] retention
-- ARGV[1] event id    ARGV[2] now (ms): the outbox score
--
-- Returns the new seq, or -1 when the event does not exist.

local event_id = ARGV[1]
local found = redis.call('HMGET', KEYS[1], 'seq', 'kind', 'order_id')
if not found[1] then return -1 end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', 0, 'next_attempt_at', '', 'dead_at', '',
  'dead_reason', '')
if found[2] == 'operator' or not found[3] or found[3] == '' then  -- retained as itself
  redis.call('ZREM', KEYS[6], 'e:' .. event_id)
else
  redis.call('HSET', KEYS[2], 'webhook_status', 'pending')
  redis.call('ZREM', KEYS[6], 'o:' .. found[3])
end
redis.call('ZREM', KEYS[4], event_id)
redis.call('ZREM', KEYS[5], event_id)
redis.call('ZADD', KEYS[3], ARGV[2], event_id)
return seq
