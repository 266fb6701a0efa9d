-- Move a subscription (relay.subscriptions.Subscriptions.move): only if it is still at the version
-- its mover read, set and delete its fields, bump the version, set or clear its timer and, given
-- one, write the event the move sends (its outbox entry and first arq job, as ingest.lua does). Two
-- workers firing the same timer, or a timer racing the API, move it once: the second finds another
-- version and nothing changes. The event is about the subscription, not one order's payment: its
-- order_id is empty, and it is retained as itself (finish.lua).
--
-- KEYS[1] subscription    KEYS[2] the subscriptions' timers    KEYS[3] event ('-' for none)
-- KEYS[4] outbox    KEYS[5] the project's events    KEYS[6] arq job key    KEYS[7] arq result key
-- KEYS[8] arq queue
-- ARGV[1] the version read    ARGV[2] subscription id    ARGV[3] its next timer (ms; '' for none)
-- ARGV[4] fields to delete, comma-separated ('' for none)    ARGV[5] now (ISO 8601)    ARGV[6] now (ms)
-- ARGV[7] event id ('' for none)    ARGV[8] event type    ARGV[9] body    ARGV[10] project id
-- ARGV[11] plan id    ARGV[12] job id ('' for none)    ARGV[13] job payload    ARGV[14] job score (ms)
-- ARGV[15] job expiry (ms)    ARGV[16..] the fields to set, field after value after field
--
-- Returns 1 when moved, 0 when the subscription is gone or at another version.

local version = redis.call('HGET', KEYS[1], 'version')
if not version or version ~= ARGV[1] then return 0 end
if #ARGV >= 16 then redis.call('HSET', KEYS[1], unpack(ARGV, 16)) end
for field in string.gmatch(ARGV[4], '[^,]+') do redis.call('HDEL', KEYS[1], field) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'version', 1)
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[2], ARGV[2])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
end
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[3], 'id', ARGV[7], 'type', ARGV[8], 'project_id', ARGV[10], 'order_id', '',
    'item_id', '', 'plan_id', ARGV[11], 'body', ARGV[9], 'state', 'pending', 'seq', '0', 'attempts', '0',
    'created_at', ARGV[5], 'next_attempt_at', '', 'dead_at', '')
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[7])
  redis.call('ZADD', KEYS[5], ARGV[6], ARGV[7])
  if ARGV[12] ~= '' and redis.call('EXISTS', KEYS[6], KEYS[7]) == 0 then
    redis.call('PSETEX', KEYS[6], ARGV[15], ARGV[13])
    redis.call('ZADD', KEYS[8], ARGV[14], ARGV[12])
  end
end
return 1
