-- Move a subscription (relay.subscriptions.Subscriptions.move): only if it is still at the version
-- its mover read, set and delete its fields, bump the version, set or clear its timer and, given
-- one, write the event the move sends (its outbox entry and first arq job, as ingest.lua does). Two
-- workers firing the same timer, or a timer racing the API, move it once: the second finds another
-- version and nothing changes. The event is about the subscription, not one order's payment: its
-- order_id is empty, and it is retained as itself (finish.lua). A move that ends the subscription
-- (expired, canceled) puts it on the retention schedule ('s:' member; delete_finished.lua).
--
-- KEYS[1] subscription    KEYS[2] the subscriptions' timers    KEYS[3] event ('-' for none)
-- KEYS[4] outbox    KEYS[5] the project's events    KEYS[6] arq job key    KEYS[7] arq result key
-- KEYS[8] arq queue    KEYS[9] retention
-- ARGV[1] when it is deleted (ms; '' when the move does not end it)    ARGV[2] the version read
-- ARGV[3] subscription id    ARGV[4] its next timer (ms; '' for none)
-- ARGV[5] fields to delete, comma-separated ('' for none)    ARGV[6] now (ISO 8601)    ARGV[7] now (ms)
-- ARGV[8] event id ('' for none)    ARGV[9] event type    ARGV[10] body    ARGV[11] project id
-- ARGV[12] plan id    ARGV[13] job id ('' for none)    ARGV[14] job payload    ARGV[15] job score (ms)
-- ARGV[16] job expiry (ms)    ARGV[17..] the fields to set, field after value after field
--
-- Returns 1 when moved, 0 when the subscription is gone or at another version.

local version = redis.call('HGET', KEYS[1], 'version')
if not version or version ~= ARGV[2] then return 0 end
if #ARGV >= 17 then redis.call('HSET', KEYS[1], unpack(ARGV, 17)) end
for field in string.gmatch(ARGV[5], '[^,]+') do redis.call('HDEL', KEYS[1], field) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[6])
redis.call('HINCRBY', KEYS[1], 'version', 1)
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[2], ARGV[3])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
end
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[9], ARGV[1], 's:' .. ARGV[3]) end
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[3], 'id', ARGV[8], 'type', ARGV[9], 'project_id', ARGV[11], 'order_id', '',
    'item_id', '', 'plan_id', ARGV[12], 'body', ARGV[10], 'state', 'pending', 'seq', '0', 'attempts', '0',
    'created_at', ARGV[6], 'next_attempt_at', '', 'dead_at', '')
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[8])
  redis.call('ZADD', KEYS[5], ARGV[7], ARGV[8])
  if ARGV[13] ~= '' and redis.call('EXISTS', KEYS[6], KEYS[7]) == 0 then
    redis.call('PSETEX', KEYS[6], ARGV[16], ARGV[14])
    redis.call('ZADD', KEYS[8], ARGV[15], ARGV[13])
  end
end
return 1
