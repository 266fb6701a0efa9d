-- Requeue (relay.events.EventStore.requeue): send an event again from a fresh retry budget, for a
-- replay or a retry-webhook. Bumps seq, so a job of the event's earlier life finds it moved on.
--
-- KEYS[1] event    KEYS[2] purchase    KEYS[3] outbox    KEYS[4] dead letters
-- KEYS[5] the project's dead letters
-- ARGV[1] event id    ARGV[2] now (ms): the outbox score
--
-- Returns the new seq, or -1 when the event does not exist.

local event_id = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', 0, 'next_attempt_at', '', 'dead_at', '')
redis.call('HSET', KEYS[2], 'webhook_status', 'pending')
redis.call('ZREM', KEYS[4], event_id)
redis.call('ZREM', KEYS[5], event_id)
redis.call('ZADD', KEYS[3], ARGV[2], event_id)
return seq
