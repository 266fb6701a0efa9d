-- Purge a dead letter (relay.events.EventStore.purge_dead_letter): remove it from the dead-letter
-- queue for good. The event and its attempt log stay, for the purchase's history.
--
-- KEYS[1] dead letters    KEYS[2] the project's dead letters
-- ARGV[1] event id
--
-- Returns 1 when it was a dead letter, else 0.

local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return removed
