-- Ingest: the one atomic step of a gateway callback (relay.store.Store.ingest).
--
-- Reads the purchase; checks the gateway, the currency, the amount and the status ladder (RANK,
-- the table of relay.models.RANK, and the text joining an event body, METADATA_JOIN and BODY_END of
-- relay.event_body, are defined ahead of this text when the script is loaded); then moves the
-- status and, on the purchase's first settlement, writes the event (its body from the template
-- stored with the purchase), its outbox entry and, given one, its first arq job as arq's
-- enqueue_job writes it (job key with its expiry, queue entry), unless that job id exists. One
-- round trip, no read-then-write race.
--
-- The first settlement writes the event even when the purchase is already refunded (a refund or
-- chargeback that arrived first, reordered or forged, must not swallow a real payment); the status
-- stays refunded. A purchase with an event never gets a second one.
--
-- KEYS[1] purchase        KEYS[2] event             KEYS[3] outbox
-- KEYS[4] arq job key     KEYS[5] arq result key    KEYS[6] arq queue    KEYS[7] retention
-- ARGV[1] gateway         ARGV[2] new status        ARGV[3] now (ISO 8601)
-- ARGV[4] amount as integer text ('' matches nothing)            ARGV[5] amount rule: exact | at_least
-- ARGV[6] event id        ARGV[7] paid_at (ISO 8601 UTC to the second, with Z; at most now)
-- ARGV[8] the currency the callback states ('' when it states none)
-- ARGV[9] outbox score (ms)
-- ARGV[10] job id ('' for none)   ARGV[11] job payload   ARGV[12] job score (ms)   ARGV[13] job expiry (ms)
-- ARGV[14] the retention deadline (ms)    ARGV[15] the project key prefix (``{p}:project:``)
--
-- Returns {code, detail}: {'applied', status} | {'unknown_order', ''} | {'other_gateway', gateway}
--   | {'currency_mismatch', stored currency} | {'amount_mismatch', stored amount}
--   | {'unchanged', status} | {'no_template', ''} (nothing written: store the template and run again)
--   | {'clamped', 'paid'}: applied, with paid_at raised to the order's creation (it was earlier).
-- {'applied', 'paid'} and {'clamped', 'paid'} mean the event was written.

local found = redis.call('HMGET', KEYS[1], 'status', 'doc', 'event_id', 'event_head', 'event_tail', 'metadata')
local status = found[1]
if not status then return {'unknown_order', ''} end
local doc = cjson.decode(found[2])
if doc.gateway ~= ARGV[1] then return {'other_gateway', doc.gateway} end
if ARGV[8] ~= '' and string.upper(ARGV[8]) ~= string.upper(doc.currency) then
  return {'currency_mismatch', doc.currency}
end
local amount = tonumber(ARGV[4])
local stored = string.format('%d', doc.amount)
if amount == nil or (ARGV[5] == 'at_least' and amount < doc.amount)
    or (ARGV[5] ~= 'at_least' and ARGV[4] ~= stored) then
  return {'amount_mismatch', stored}
end
local settles = ARGV[2] == 'paid' and (not found[3] or found[3] == '')
if not settles and RANK[ARGV[2]] <= RANK[status] then return {'unchanged', status} end
local head, tail, metadata = found[4], found[5], found[6]
if settles and not (head and (tail or metadata)) then return {'no_template', ''} end
if RANK[ARGV[2]] > RANK[status] then status = ARGV[2] end
redis.call('HSET', KEYS[1], 'status', status, 'updated_at', ARGV[3])
if not settles then
  if status ~= 'pending' and (not found[3] or found[3] == '') then
    redis.call('ZADD', KEYS[7], ARGV[14], 'o:' .. doc.order_id)
  end
  return {'applied', status}
end

local code, paid_at = 'applied', ARGV[7]
local created = string.sub(doc.created_at, 1, 19) .. 'Z'  -- the same form, so they compare as text
if paid_at < created then code, paid_at = 'clamped', created end
local body
if tail then  -- a purchase stored before its metadata had a field of its own: the tail holds it
  body = head .. paid_at .. tail
else
  body = head .. paid_at .. METADATA_JOIN .. metadata .. BODY_END
end
local event_id = ARGV[6]
redis.call('HSET', KEYS[1], 'paid_at', paid_at, 'event_id', event_id, 'webhook_status', 'pending')
redis.call('HDEL', KEYS[1], 'event_head', 'event_tail')
redis.call('HSET', KEYS[2], 'id', event_id, 'project_id', doc.project_id, 'order_id', doc.order_id,
  'item_id', doc.item_id, 'body', body, 'state', 'pending',
  'seq', '0', 'attempts', '0', 'created_at', ARGV[3], 'next_attempt_at', '', 'dead_at', '')
redis.call('ZADD', KEYS[3], ARGV[9], event_id)
redis.call('ZADD', ARGV[15] .. doc.project_id .. ':events', ARGV[9], event_id)
if found[1] ~= 'pending' then redis.call('ZREM', KEYS[7], 'o:' .. doc.order_id) end  -- it was finished
if ARGV[10] ~= '' and redis.call('EXISTS', KEYS[4], KEYS[5]) == 0 then
  redis.call('PSETEX', KEYS[4], ARGV[13], ARGV[11])
  redis.call('ZADD', KEYS[6], ARGV[12], ARGV[10])
end
return {code, 'paid'}
