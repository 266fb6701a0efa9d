-- Expire (relay.retention.Retention.expire): every purchase whose expiry is due and that is still
-- pending without an event becomes expired, drops its event template (a late settlement rebuilds
-- it: relay.store.Store.add_event_template), gives back the stock it reserved (create_purchase.lua)
-- and goes on the retention schedule. Any other purchase just leaves the expiry schedule. At most
-- ARGV[4] per run.
--
-- A purchase's key is built here from its order id (ARGV[1] is relay.schema.Keys.purchase(''));
-- relay runs on one Redis, no cluster.
--
-- KEYS[1] expiry    KEYS[2] retention
-- ARGV[1] the purchase key prefix    ARGV[2] now (ms)    ARGV[3] now (ISO)    ARGV[4] most to take
-- ARGV[5] the retention deadline (ms)
--
-- Returns {entries taken, purchases expired}.

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])
local expired = 0
for _, order_id in ipairs(due) do
  redis.call('ZREM', KEYS[1], order_id)
  local key = ARGV[1] .. order_id
  local found = redis.call('HMGET', key, 'status', 'event_id', 'reserved', 'stock_key')
  if found[1] == 'pending' and (not found[2] or found[2] == '') then
    redis.call('HSET', key, 'status', 'expired', 'updated_at', ARGV[3])
    redis.call('HDEL', key, 'event_head', 'event_tail', 'reserved')
    if found[3] and redis.call('EXISTS', found[4]) == 1 then  -- the item (still) counts its stock
      redis.call('INCRBY', found[4], found[3])
    end
    redis.call('ZADD', KEYS[2], ARGV[5], 'o:' .. order_id)
    expired = expired + 1
  end
end
return {#due, expired}
