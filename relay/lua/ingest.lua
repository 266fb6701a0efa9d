-- Ingest: the one atomic step of a gateway callback (relay.store.Store.ingest).
--
-- Reads the order; checks the gateway, the currency, the amount and the status ladder; then moves
-- the status and writes what the move sends. Loaded after what it is loaded with (relay.store.
-- ingest_script): RANK (relay.models.RANK), METADATA_JOIN and BODY_END (relay.event_body), REFUND_OF
-- (each paying event type's refund type, relay.event_types) and relay/lua/lib/periods.lua.
--
-- On the order's first settlement it writes the event its kind sends (doc.event_type; an order
-- stored before kinds existed sends item.purchased), its body from the template stored with the
-- order; a first subscription payment starts the period at paid_at (add_interval) and a renewal
-- pays the period its invoice names: the subscription becomes active with that period, its renewal
-- timer set RELAY_RENEWAL_NOTICE before the period ends. A refund of a paid order writes the refund
-- type's event (once per refund key), its body the paid body with refunded_at, refund_amount and
-- reason before metadata; refund_amount is at most the order's amount, and refunded_at never
-- before the paid_at it follows (a gateway's time, or a refund kept from before the payment, is
-- raised to it). Each event gets its outbox entry and, given one, its first arq job as arq's
-- enqueue_job writes it (job key with its expiry, queue entry), unless that job id exists.
-- One round trip, no read-then-write race.
--
-- The first settlement writes the event even when the order is already refunded (a refund or
-- chargeback that arrived first, reordered or forged, must not swallow a real payment); the status
-- stays refunded, and the refunds kept from then (each refund key once, in the order they came,
-- at most MAX_KEPT_REFUNDS: pending_refund holds them as a JSON list) are sent too (outbox only:
-- the sweeper enqueues them). An order never gets a second paid event.
--
-- Stock (create_purchase.lua): an order that fails, or is refunded before it is paid, gives back
-- the units it reserved; one that is paid keeps them (sold). A settlement for an order whose units were given back (it had expired)
-- takes them again if they are still there, and else is honoured all the same (the money arrived)
-- and marked oversold: {'oversold', 'paid', n}.
--
-- Key names other than KEYS are built here under the prefix ARGV[15] (``{p}:``); relay runs on
-- one Redis, no cluster; an order's stock key is the one it stored (stock_key).
--
-- KEYS[1] purchase        KEYS[2] event             KEYS[3] outbox
-- KEYS[4] arq job key     KEYS[5] arq result key    KEYS[6] arq queue    KEYS[7] retention
-- ARGV[1] gateway         ARGV[2] new status        ARGV[3] now (ISO 8601)
-- ARGV[4] amount as integer text ('' matches nothing)            ARGV[5] amount rule: exact | at_least
-- ARGV[6] event id        ARGV[7] paid_at (ISO 8601 UTC to the second, with Z; at most now)
-- ARGV[8] the currency the callback states ('' when it states none)
-- ARGV[9] now (ms): the outbox score
-- ARGV[10] job id ('' for none)   ARGV[11] job payload   ARGV[12] job score (ms)   ARGV[13] job expiry (ms)
-- ARGV[14] the retention deadline (ms)    ARGV[15] the key prefix with its colon (``{p}:``)
-- ARGV[16] refund key     ARGV[17] refunded_at (ISO 8601 UTC to the second, with Z)
-- ARGV[18] refund amount (integer text)   ARGV[19] refund reason as JSON (a string or null)
-- ARGV[20] RELAY_RENEWAL_NOTICE (ms)
--
-- Returns {code, detail, events written}: {'applied', status} | {'unknown_order', ''}
--   | {'other_gateway', gateway} | {'currency_mismatch', stored currency}
--   | {'amount_mismatch', stored amount} | {'unchanged', status}
--   | {'no_template', ''} (nothing written: store the template and run again)
--   | {'clamped', 'paid'}: applied, with paid_at raised to the order's creation (it was earlier)
--   | {'oversold', 'paid'}: applied, but its units had been given back and sold again.

local p = ARGV[15]
-- Refunds one order sends (and keeps, unpaid, for its payment): a bound, as a refund's details are
-- not signed (Midtrans signs order, status code and gross amount only), so one captured
-- notification could otherwise be replayed into any number of refunds.
local MAX_KEPT_REFUNDS = 20
local found = redis.call('HMGET', KEYS[1], 'status', 'doc', 'event_id', 'event_head', 'event_tail', 'metadata',
  'pending_refund', 'paid_at', 'reserved', 'stock_key')
local status = found[1]
if not status then return {'unknown_order', '', 0} end
local doc = cjson.decode(found[2])
for name, value in pairs(doc) do  -- a null is an unset field
  if value == cjson.null then doc[name] = nil end
end
if doc.gateway ~= ARGV[1] then return {'other_gateway', doc.gateway, 0} end
if ARGV[8] ~= '' and string.upper(ARGV[8]) ~= string.upper(doc.currency) then
  return {'currency_mismatch', doc.currency, 0}
end
local amount = tonumber(ARGV[4])
local stored = string.format('%d', doc.amount)
if amount == nil or (ARGV[5] == 'at_least' and amount < doc.amount)
    or (ARGV[5] ~= 'at_least' and ARGV[4] ~= stored) then
  return {'amount_mismatch', stored, 0}
end
local paid_event_id = found[3]
if paid_event_id == '' then paid_event_id = false end
local event_type = doc.event_type or 'item.purchased'

local function write_event(key, event_id, body, type_, score)
  redis.call('HSET', key, 'id', event_id, 'type', type_, 'project_id', doc.project_id,
    'order_id', doc.order_id, 'item_id', doc.item_id or '', 'plan_id', doc.plan_id or '', 'body', body,
    'state', 'pending', 'seq', '0', 'attempts', '0', 'created_at', ARGV[3], 'next_attempt_at', '', 'dead_at', '')
  redis.call('ZADD', KEYS[3], score, event_id)
  redis.call('ZADD', p .. 'project:' .. doc.project_id .. ':events', score, event_id)
end

local function enqueue_job()
  if ARGV[10] ~= '' and redis.call('EXISTS', KEYS[4], KEYS[5]) == 0 then
    redis.call('PSETEX', KEYS[4], ARGV[13], ARGV[11])
    redis.call('ZADD', KEYS[6], ARGV[12], ARGV[10])
  end
end

-- The refund's body: the paid body with its refund type for its name and the refund's fields
-- before metadata. The first '","metadata":' is the top-level key: every value before it is a
-- number, null, or a string whose quotes are escaped.
local function refund_body(paid_body, refund)
  local name_end = string.find(paid_body, '"', 11, true)
  local split = string.find(paid_body, '","metadata":', 1, true)
  return '{"event":"' .. REFUND_OF[event_type] .. string.sub(paid_body, name_end, split)
    .. ',"refunded_at":"' .. refund.at .. '","refund_amount":' .. refund.amount .. ',"reason":' .. refund.reason
    .. string.sub(paid_body, split + 1)
end

-- Both times are ISO 8601 UTC to the second with a Z: as text they compare as times.
local function write_refund(refund, event_id, score, paid_at)
  local paid_body = redis.call('HGET', p .. 'event:' .. paid_event_id, 'body')
  if not paid_body or not REFUND_OF[event_type] then return false end
  -- What is refunded adds up to at most the order's amount, in at most MAX_KEPT_REFUNDS refunds:
  -- refund details are not signed, so a replayed notification with made-up refund ids sends at
  -- most that many events, and none past a full refund. A refund past the rest is the rest.
  local sent = redis.call('HMGET', KEYS[1], 'refunded_amount', 'refund_count')
  local left, count = doc.amount - (tonumber(sent[1]) or 0), tonumber(sent[2]) or 0
  if left <= 0 or count >= MAX_KEPT_REFUNDS then return false end
  if tonumber(refund.amount) > left then refund.amount = string.format('%d', left) end
  if paid_at and refund.at < paid_at then refund.at = paid_at end
  redis.call('HSET', KEYS[1], 'refund:' .. refund.key, event_id, 'webhook_status', 'pending',
    'refunded_amount', string.format('%d', doc.amount - left + tonumber(refund.amount)), 'refund_count', count + 1)
  write_event(p .. 'event:' .. event_id, event_id, refund_body(paid_body, refund), REFUND_OF[event_type], score)
  -- The order stays on the retention schedule: delete_finished.lua keeps it while this event is
  -- unfinished, and finish.lua never brings its deadline earlier (a dead-lettered payment keeps
  -- RELAY_DEAD_LETTER_RETENTION).
  return true
end

-- The refunds kept for the payment, oldest first (an order stored by an earlier version of this
-- script keeps one, as an object).
local function kept_refunds()
  if not found[7] then return {} end
  local kept = cjson.decode(found[7])
  if kept.key then return {kept} end
  return kept
end

if ARGV[2] == 'refunded' then
  local refund = {key = ARGV[16], at = ARGV[17], amount = ARGV[18], reason = ARGV[19]}
  -- At most the order's amount: a gateway whose amounts include the buyer's fees (the at_least
  -- rule) reports a full refund as more than the order was for.
  if tonumber(refund.amount) > doc.amount then refund.amount = stored end
  if redis.call('HEXISTS', KEYS[1], 'refund:' .. refund.key) == 1 then return {'unchanged', status, 0} end
  if not paid_event_id then  -- kept, each refund once, and sent when the settlement arrives
    local kept = kept_refunds()
    for _, each in ipairs(kept) do
      if each.key == refund.key then return {'unchanged', status, 0} end
    end
    if #kept < MAX_KEPT_REFUNDS then
      kept[#kept + 1] = refund
      redis.call('HSET', KEYS[1], 'pending_refund', cjson.encode(kept))
    end
    if status == 'refunded' then return {'unchanged', status, 0} end
    redis.call('HSET', KEYS[1], 'status', 'refunded', 'updated_at', ARGV[3])
    redis.call('ZADD', KEYS[7], ARGV[14], 'o:' .. doc.order_id)
    if found[9] then  -- unpaid and finished: its units are for sale again (a payment takes them back)
      redis.call('HDEL', KEYS[1], 'reserved')
      if redis.call('EXISTS', found[10]) == 1 then redis.call('INCRBY', found[10], found[9]) end
    end
    return {'applied', 'refunded', 0}
  end
  redis.call('HSET', KEYS[1], 'status', 'refunded', 'updated_at', ARGV[3])
  if not write_refund(refund, ARGV[6], ARGV[9], found[8]) then return {'applied', 'refunded', 0} end
  enqueue_job()
  return {'applied', 'refunded', 1}
end

local settles = ARGV[2] == 'paid' and not paid_event_id
if not settles and RANK[ARGV[2]] <= RANK[status] then return {'unchanged', status, 0} end
local head, tail, metadata = found[4], found[5], found[6]
if settles and not (head and (tail or metadata)) then return {'no_template', '', 0} end
if RANK[ARGV[2]] > RANK[status] then status = ARGV[2] end
redis.call('HSET', KEYS[1], 'status', status, 'updated_at', ARGV[3])
if not settles then
  if status ~= 'pending' and not paid_event_id then
    redis.call('ZADD', KEYS[7], ARGV[14], 'o:' .. doc.order_id)
    if found[9] then  -- failed or expired unpaid: its units are for sale again
      redis.call('HDEL', KEYS[1], 'reserved')
      if redis.call('EXISTS', found[10]) == 1 then redis.call('INCRBY', found[10], found[9]) end
    end
  end
  return {'applied', status, 0}
end

local code, paid_at = 'applied', ARGV[7]
local created = string.sub(doc.created_at, 1, 19) .. 'Z'  -- the same form, so they compare as text
if paid_at < created then code, paid_at = 'clamped', created end
if found[9] then  -- its reserved units are sold
  redis.call('HDEL', KEYS[1], 'reserved')
elseif found[10] and redis.call('EXISTS', found[10]) == 1 then  -- given back when it expired: take them again
  local units = doc.quantity or 1
  if (tonumber(redis.call('GET', found[10])) or 0) >= units then
    redis.call('DECRBY', found[10], units)
  else
    redis.call('HSET', KEYS[1], 'oversold', units)
    code = 'oversold'
  end
end
local period_start, period_end = doc.period_start, doc.period_end
local paid_part = paid_at
local first_payment = doc.subscription_id and not period_start
if first_payment then  -- the period starts now
  period_start, period_end = paid_at, add_interval(paid_at, doc.interval, doc.interval_count or 1)
  paid_part = period_start .. '","period_end":"' .. period_end .. '","paid_at":"' .. paid_at
end
local body
if tail then  -- a purchase stored before its metadata had a field of its own: the tail holds it
  body = head .. paid_part .. tail
else
  body = head .. paid_part .. METADATA_JOIN .. metadata .. BODY_END
end
local event_id = ARGV[6]
redis.call('HSET', KEYS[1], 'paid_at', paid_at, 'event_id', event_id, 'webhook_status', 'pending')
redis.call('HDEL', KEYS[1], 'event_head', 'event_tail')
write_event(KEYS[2], event_id, body, event_type, ARGV[9])
paid_event_id = event_id
if found[1] ~= 'pending' then redis.call('ZREM', KEYS[7], 'o:' .. doc.order_id) end  -- it was finished
enqueue_job()
local written = 1
-- The refunds that came first: sent now, after the payment they refund (the first as
-- {event id}_refund, the next as {event id}_refund2, ...).
for index, refund in ipairs(kept_refunds()) do
  local suffix = index == 1 and '' or tostring(index)
  if write_refund(refund, event_id .. '_refund' .. suffix, ARGV[9], paid_at) then written = written + 1 end
end
if found[7] then redis.call('HDEL', KEYS[1], 'pending_refund') end

if doc.subscription_id then
  local sub_key = p .. 'subscription:' .. doc.subscription_id
  local sub = redis.call('HMGET', sub_key, 'status', 'current_period_end', 'cancel_at_period_end')
  -- A renewal paid out of order (an older period's invoice) never moves the period back. The paid
  -- period runs whatever the subscription's status (the money arrived), but a cancel stands: a
  -- canceling or canceled subscription runs the period paid and then ends. Any invoice still open
  -- was for this period or an earlier one: none is pending now.
  if sub[1] and (not sub[2] or sub[2] == '' or period_end > sub[2]) then
    local canceling = (sub[1] == 'canceled' or sub[3] == '1') and '1' or ''
    redis.call('HSET', sub_key, 'status', 'active', 'current_period_start', period_start,
      'current_period_end', period_end, 'cancel_at_period_end', canceling, 'order_id', doc.order_id,
      'paid_at', paid_at, 'updated_at', ARGV[3])
    redis.call('HDEL', sub_key, 'pending_order_id', 'invoice_url')
    if first_payment then redis.call('HSET', sub_key, 'anchor', period_start) end
    redis.call('HINCRBY', sub_key, 'version', 1)
    redis.call('ZADD', p .. 'subscriptions:due', iso_ms(period_end) - tonumber(ARGV[20]), doc.subscription_id)
  end
end
return {code, 'paid', written}
