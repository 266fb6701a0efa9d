-- Postpone (relay.events.EventStore.postpone): move an event's next attempt later without making
-- one (its endpoint is saturated), if the event is still at the job's seq.
--
-- KEYS[1] event    KEYS[2] outbox
-- ARGV[1] event id    ARGV[2] seq    ARGV[3] due (ms)    ARGV[4] next_attempt_at (ISO)
--
-- Returns 1 when applied, 0 when the event has moved on to a newer seq.

local event_id = ARGV[1]
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[2] then return 0 end
redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'next_attempt_at', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], event_id)
return 1
