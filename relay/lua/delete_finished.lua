-- Delete finished records (relay.retention.Retention.delete_due): take up to ARGV[3] retention
-- entries that are due and delete what each names, with every index entry pointing at it:
--   o:{order id}  the purchase (a shop payment with its merchant order id), its events (paid,
--                 refunds) and their attempt logs, and their entries in the project's
--                 purchases and events, the outbox, the dead-letter sets and the expiry schedule;
--   e:{event id}  an event about no one order (a relay alert, a subscription's timer event) and its
--                 attempt log;
--   s:{subscription id}  an ended subscription (expired or canceled), its entries in the project's
--                 subscriptions and the timers; one paid again since is kept.
-- Each is checked again first: an order with an event pending or retrying (a replay, a late
-- settlement) or that is still pending itself is not finished; it only leaves the schedule (it
-- comes back when it finishes). One atomic step, so a callback for the order sees it whole or
-- not at all (then the callback is recorded as unmatched).
--
-- Key names are built here from ids, as relay.schema.Keys builds them under the prefix ARGV[1]
-- (``{p}:``); relay runs on one Redis, no cluster.
--
-- KEYS[1] retention    KEYS[2] outbox    KEYS[3] dead letters    KEYS[4] expiry    KEYS[5] stats
-- ARGV[1] the key prefix with its colon    ARGV[2] now (ms)    ARGV[3] most entries to take
--
-- Returns {entries taken, orders deleted, events of their own deleted, subscriptions deleted}.

local p = ARGV[1]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
local orders, alerts, subscriptions = 0, 0, 0

local function unfinished(state)
  return state == 'pending' or state == 'retrying'
end

local function drop_event(event_id, project_id)
  redis.call('DEL', p .. 'event:' .. event_id, p .. 'event:' .. event_id .. ':attempts')
  redis.call('ZREM', KEYS[2], event_id)
  redis.call('ZREM', KEYS[3], event_id)
  redis.call('ZREM', p .. 'project:' .. project_id .. ':dlq', event_id)
  redis.call('ZREM', p .. 'project:' .. project_id .. ':events', event_id)
end

for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local kind, id = string.sub(member, 1, 1), string.sub(member, 3)
  if kind == 'o' then
    local key = p .. 'purchase:' .. id
    local found = redis.call('HMGET', key, 'status', 'event_id', 'doc')
    local events = {}  -- the paid event and each refund's
    if found[2] and found[2] ~= '' then events[1] = found[2] end
    local fields = redis.call('HKEYS', key)
    for _, field in ipairs(fields) do
      if string.sub(field, 1, 7) == 'refund:' then events[#events + 1] = redis.call('HGET', key, field) end
    end
    local finished = found[1] and (#events > 0 or found[1] ~= 'pending')
    for _, event_id in ipairs(events) do
      if unfinished(redis.call('HGET', p .. 'event:' .. event_id, 'state')) then finished = false end
    end
    if finished then
      local project_id = cjson.decode(found[3]).project_id
      for _, event_id in ipairs(events) do drop_event(event_id, project_id) end
      redis.call('DEL', key)
      local doc = cjson.decode(found[3])
      if doc.kind == 'payment' and type(doc.merchant_order_id) == 'string' then  -- its id is free again
        redis.call('DEL', p .. 'project:' .. project_id .. ':payment:' .. doc.merchant_order_id)
      end
      redis.call('ZREM', p .. 'project:' .. project_id .. ':purchases', id)
      redis.call('ZREM', KEYS[4], id)
      redis.call('HINCRBY', KEYS[5], 'orders', -1)
      orders = orders + 1
    end
  elseif kind == 'e' then
    local found = redis.call('HMGET', p .. 'event:' .. id, 'state', 'project_id')
    if found[1] and not unfinished(found[1]) then
      drop_event(id, found[2])
      alerts = alerts + 1
    end
  elseif kind == 's' then
    local key = p .. 'subscription:' .. id
    local found = redis.call('HMGET', key, 'status', 'doc')
    if found[1] == 'expired' or found[1] == 'canceled' then
      redis.call('DEL', key)
      redis.call('ZREM', p .. 'project:' .. cjson.decode(found[2]).project_id .. ':subscriptions', id)
      redis.call('ZREM', p .. 'subscriptions:due', id)
      subscriptions = subscriptions + 1
    end
  end
end
return {#due, orders, alerts, subscriptions}
