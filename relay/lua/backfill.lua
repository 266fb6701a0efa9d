-- Backfill (relay.retention.Retention.backfill): put orders stored before retention existed on
-- the schedules new orders are put on when they are made or finished. An order already on one is
-- left alone, so running it again changes nothing. A pending order without an event expires
-- RELAY_PURCHASE_EXPIRY after it was made (its score in the project's purchases); a finished one
-- is deleted after the retention counted from now; one whose event is still being delivered is
-- put on the schedule when that ends, as any other. Each order's event also joins the project's
-- events (by its creation, unless it is there already), which the window replay reads.
--
-- Purchase and event keys are built here from ids, as relay.schema.Keys builds them under the
-- prefix ARGV[1] (``{p}:``); relay runs on one Redis, no cluster.
--
-- KEYS[1] expiry    KEYS[2] retention    KEYS[3] the project's purchases    KEYS[4] the project's events
-- ARGV[1] the key prefix with its colon    ARGV[2] the retention deadline (ms)
-- ARGV[3] the dead-letter retention deadline (ms)    ARGV[4] the purchase expiry (ms)
-- ARGV[5..] per order, three: its id, its event's id ('' for none), the event's creation (ms)
--
-- Returns {put on the expiry schedule, put on the retention schedule}.

local p = ARGV[1]
local expiring, retained = 0, 0
for i = 5, #ARGV, 3 do
  local order_id = ARGV[i]
  local member = 'o:' .. order_id
  if ARGV[i + 1] ~= '' then redis.call('ZADD', KEYS[4], 'NX', ARGV[i + 2], ARGV[i + 1]) end
  if not redis.call('ZSCORE', KEYS[1], order_id) and not redis.call('ZSCORE', KEYS[2], member) then
    local found = redis.call('HMGET', p .. 'purchase:' .. order_id, 'status', 'event_id')
    local event_id = found[2]
    if event_id == '' then event_id = false end
    if event_id then
      local state = redis.call('HGET', p .. 'event:' .. event_id, 'state')
      if state == 'delivered' or state == 'no_endpoint' then
        redis.call('ZADD', KEYS[2], ARGV[2], member)
        retained = retained + 1
      elseif state == 'failed' then
        redis.call('ZADD', KEYS[2], ARGV[3], member)
        retained = retained + 1
      end
    elseif found[1] == 'pending' then
      local created = tonumber(redis.call('ZSCORE', KEYS[3], order_id) or '0')
      redis.call('ZADD', KEYS[1], created + tonumber(ARGV[4]), order_id)
      expiring = expiring + 1
    elseif found[1] then
      redis.call('ZADD', KEYS[2], ARGV[2], member)
      retained = retained + 1
    end
  end
end
return {expiring, retained}
