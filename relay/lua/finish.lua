-- Finish an attempt (relay.events.EventStore.finish_attempt): log it and move the event to its
-- new state, if the event is still at the job's seq (else a newer job owns it: nothing changes).
--
-- For a merchant's event it also moves the order's webhook_status (an order with refunds shows its
-- latest event's), puts a finished order on the retention schedule (delivered or without endpoint:
-- RELAY_RETENTION; dead-lettered: RELAY_DEAD_LETTER_RETENTION; never earlier than another of its
-- events put it there: ZADD GT), and keeps the health of the endpoint the attempt went to: a
-- success clears failing_since; a failure sets it when unset and disables the endpoint once it is
-- older than the window (and adds it to the project's disabled endpoints, which every delivery
-- reads with its project). A success also enables a disabled endpoint again: one already in
-- flight when another worker disabled it proves it answers. An operator's event (kind 'operator', the relay's own alerts) touches no
-- order and no endpoint health, and is retained as itself ('e:' member).
--
-- KEYS[1] event    KEYS[2] attempts    KEYS[3] purchase    KEYS[4] outbox
-- KEYS[5] dead letters    KEYS[6] the project's dead letters    KEYS[7] retention
-- KEYS[8] the endpoint's health ('' when the attempt sent nothing)    KEYS[9] the project's endpoints
-- KEYS[10] the exhausted alert's event ('' for none)    KEYS[11] the disabled alert's event ('' for none)
-- KEYS[12] the project's disabled endpoints (a STRING: their digests, comma-separated, so that a
-- delivery reads it in the same MGET as its project and item)
-- ARGV[1] event id    ARGV[2] seq    ARGV[3] attempt JSON ('' to log none)    ARGV[4] new state
-- ARGV[5] score: when the next attempt is due (retrying) or now (failed), in ms
-- ARGV[6] next_attempt_at (ISO or '')    ARGV[7] dead_at (ISO or '')    ARGV[8] attempt log length kept
-- ARGV[9] now (ms)    ARGV[10] now (ISO)    ARGV[11] retention deadline (ms)
-- ARGV[12] dead-letter retention deadline (ms)    ARGV[13] dead reason ('' unless failed)
-- ARGV[14] endpoint url    ARGV[15] the endpoint's digest    ARGV[16] last error ('' on success)
-- ARGV[17] the disable window (ms)
-- ARGV[18] the exhausted alert's event id ('' for none)    ARGV[19] its body
-- ARGV[20] the disabled alert's event id ('' for none: no alert)    ARGV[21] its body
--
-- An alert (an operator's event: kind 'operator', project '_operator') is created pending, in the
-- outbox, due now: the caller enqueues its job, the sweeper if the caller is gone.
--
-- Returns {applied, disabled}: applied 1, or 0 when the event has moved on to a newer seq;
-- disabled 1 when this attempt disabled the endpoint, and then failing_since (ISO) third.

local function create_alert(key, alert_id, body)
  redis.call('HSET', key, 'id', alert_id, 'kind', 'operator', 'project_id', '_operator',
    'body', body, 'state', 'pending', 'seq', '0', 'attempts', '0', 'created_at', ARGV[10])
  redis.call('ZADD', KEYS[4], ARGV[9], alert_id)
end

local function without(list, digest)
  local kept = {}
  for each in string.gmatch(list, '[^,]+') do
    if each ~= digest then kept[#kept + 1] = each end
  end
  return table.concat(kept, ',')
end

local event_id = ARGV[1]
local found = redis.call('HMGET', KEYS[1], 'seq', 'kind', 'order_id')
if found[1] ~= ARGV[2] then return {0, 0} end
local operator = found[2] == 'operator'
-- An event about no one order (an operator's alert, a subscription's timer) is retained as itself.
local own = operator or not found[3] or found[3] == ''
if ARGV[3] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[8]), -1)
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
end
local state = ARGV[4]
redis.call('HSET', KEYS[1], 'state', state, 'next_attempt_at', ARGV[6], 'dead_at', ARGV[7],
  'dead_reason', ARGV[13])
if not own then redis.call('HSET', KEYS[3], 'webhook_status', state) end
local member = own and ('e:' .. event_id) or ('o:' .. found[3])
if state == 'retrying' then
  redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('ZADD', KEYS[4], ARGV[5], event_id)
elseif state == 'failed' then
  redis.call('ZREM', KEYS[4], event_id)
  redis.call('ZADD', KEYS[5], ARGV[5], event_id)
  redis.call('ZADD', KEYS[6], ARGV[5], event_id)
  redis.call('ZADD', KEYS[7], 'GT', ARGV[12], member)
  if ARGV[18] ~= '' and not operator then create_alert(KEYS[10], ARGV[18], ARGV[19]) end
else
  redis.call('ZREM', KEYS[4], event_id)
  redis.call('ZADD', KEYS[7], 'GT', ARGV[11], member)
end

if operator or KEYS[8] == '' then return {1, 0} end
redis.call('SADD', KEYS[9], ARGV[15])
if ARGV[16] == '' then
  redis.call('HSET', KEYS[8], 'url', ARGV[14], 'last_success_at', ARGV[10])
  if redis.call('HDEL', KEYS[8], 'failing_since', 'failing_since_ms', 'disabled_at') > 0 then
    local rest = without(redis.call('GET', KEYS[12]) or '', ARGV[15])
    if rest == '' then redis.call('DEL', KEYS[12]) else redis.call('SET', KEYS[12], rest) end
  end
  return {1, 0}
end
redis.call('HSET', KEYS[8], 'url', ARGV[14], 'last_failure_at', ARGV[10], 'last_error', ARGV[16])
if redis.call('HSETNX', KEYS[8], 'failing_since_ms', ARGV[9]) == 1 then
  redis.call('HSET', KEYS[8], 'failing_since', ARGV[10])
end
local health = redis.call('HMGET', KEYS[8], 'failing_since_ms', 'disabled_at', 'failing_since')
if not health[2] and tonumber(ARGV[9]) - tonumber(health[1]) >= tonumber(ARGV[17]) then
  redis.call('HSET', KEYS[8], 'disabled_at', ARGV[10])
  local list = without(redis.call('GET', KEYS[12]) or '', ARGV[15])
  redis.call('SET', KEYS[12], list == '' and ARGV[15] or (list .. ',' .. ARGV[15]))
  if ARGV[20] ~= '' then create_alert(KEYS[11], ARGV[20], ARGV[21]) end
  return {1, 1, health[3]}
end
return {1, 0}
