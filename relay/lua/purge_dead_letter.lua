-- Purge a dead letter (relay.events.EventStore.purge_dead_letter): remove it from the dead-letter
-- queue for good. The event and its attempt log stay, for the order's history, until the order
-- (or the operator's event) is deleted RELAY_RETENTION from now rather than the dead-letter
-- retention.
--
-- KEYS[1] dead letters    KEYS[2] the project's dead letters    KEYS[3] event    KEYS[4] retention
-- ARGV[1] event id    ARGV[2] the retention deadline (ms)
--
-- Returns 1 when it was a dead letter, else 0.

local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if removed == 1 then
  local found = redis.call('HMGET', KEYS[3], 'kind', 'order_id')
  -- An event about no one order (an operator's alert, a subscription's timer) is retained as itself.
  local own = found[1] == 'operator' or not found[2] or found[2] == ''
  local member = own and ('e:' .. ARGV[1]) or ('o:' .. found[2])
  if found[1] or found[2] then redis.call('ZADD', KEYS[4], ARGV[2], member) end
end
return removed
