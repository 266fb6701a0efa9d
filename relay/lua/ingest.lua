-- Ingest: the one atomic step of a gateway callback (relay.store.Store.ingest).
--
-- Reads the purchase; checks the gateway, the amount and the status ladder (RANK, the table of
-- relay.models.RANK, is defined ahead of this text when the script is loaded); then moves the
-- status and, on the move to paid, writes the event (its body from the template stored with the
-- purchase), its outbox entry and, given one, its first arq job as arq's enqueue_job writes it
-- (job key with its expiry, queue entry), unless that job id exists. One round trip, no
-- read-then-write race.
--
-- KEYS[1] purchase        KEYS[2] event             KEYS[3] outbox
-- KEYS[4] arq job key     KEYS[5] arq result key    KEYS[6] arq queue
-- ARGV[1] gateway         ARGV[2] new status        ARGV[3] now (ISO 8601)
-- ARGV[4] amount as integer text ('' matches nothing)            ARGV[5] amount rule: exact | at_least
-- ARGV[6] event id        ARGV[7] paid_at (ISO, stored)          ARGV[8] paid_at (the body's form)
-- ARGV[9] outbox score (ms)
-- ARGV[10] job id ('' for none)   ARGV[11] job payload   ARGV[12] job score (ms)   ARGV[13] job expiry (ms)
--
-- Returns {code, detail}: {'applied', status} | {'unknown_order', ''} | {'other_gateway', gateway}
--   | {'amount_mismatch', stored amount} | {'unchanged', status}
--   | {'no_template', ''} (nothing written: store the template and run again)

local found = redis.call('HMGET', KEYS[1], 'status', 'doc', 'event_head', 'event_tail')
if not found[1] then return {'unknown_order', ''} end
local doc = cjson.decode(found[2])
if doc.gateway ~= ARGV[1] then return {'other_gateway', doc.gateway} end
local amount = tonumber(ARGV[4])
local stored = string.format('%d', doc.amount)
if amount == nil or (ARGV[5] == 'at_least' and amount < doc.amount)
    or (ARGV[5] ~= 'at_least' and ARGV[4] ~= stored) then
  return {'amount_mismatch', stored}
end
if RANK[ARGV[2]] <= RANK[found[1]] then return {'unchanged', found[1]} end
local paid = ARGV[2] == 'paid'
if paid and not found[3] then return {'no_template', ''} end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[3])
if paid then
  local event_id = ARGV[6]
  redis.call('HSET', KEYS[1], 'paid_at', ARGV[7], 'event_id', event_id, 'webhook_status', 'pending')
  redis.call('HDEL', KEYS[1], 'event_head', 'event_tail')
  redis.call('HSET', KEYS[2], 'id', event_id, 'project_id', doc.project_id, 'order_id', doc.order_id,
    'item_id', doc.item_id, 'body', found[3] .. ARGV[8] .. found[4], 'state', 'pending',
    'seq', '0', 'attempts', '0', 'created_at', ARGV[3], 'next_attempt_at', '', 'dead_at', '')
  redis.call('ZADD', KEYS[3], ARGV[9], event_id)
  if ARGV[10] ~= '' and redis.call('EXISTS', KEYS[4], KEYS[5]) == 0 then
    redis.call('PSETEX', KEYS[4], ARGV[13], ARGV[11])
    redis.call('ZADD', KEYS[6], ARGV[12], ARGV[10])
  end
end
return {'applied', ARGV[2]}
