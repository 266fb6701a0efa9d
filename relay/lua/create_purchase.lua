-- Create a purchase (relay.store.Store.create_purchase), only if its order id is new: the check and
-- the writes are one step, so a colliding order id can never overwrite a purchase (a paid one
-- turned back to pending). The purchase goes on the expiry schedule (expire.lua) and is counted.
--
-- A shop payment also names the merchant's own order id (KEYS[5]: its project's key of it ->
-- the gateway's order id): created only if that id is new in the project too.
--
-- An item with stock (KEYS[6], the units left) has ARGV[4] of them reserved for the order in the
-- same step, or the order is not made: two buyers can never both take the last unit. The order
-- remembers what it holds (reserved, stock_key), which expire.lua and ingest.lua give back when it
-- fails or expires and drop when it is paid.
--
-- KEYS[1] purchase        KEYS[2] the project's purchases    KEYS[3] expiry    KEYS[4] stats
-- KEYS[5] the merchant's order id of a shop payment ('-' for any other order)
-- KEYS[6] the item's stock ('-' for an order that reserves none)
-- ARGV[1] order id        ARGV[2] created at (ms)    ARGV[3] expires at (ms)
-- ARGV[4] units to reserve ('0' for none)
-- ARGV[5..] the purchase hash, field and value after field and value
--
-- Returns 1 when created, 0 when the order id (or the merchant's) is taken, -1 when the stock is
-- short (nothing written either way).

if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if KEYS[5] ~= '-' and redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
local reserve = tonumber(ARGV[4])
if KEYS[6] ~= '-' and reserve > 0 then
  if (tonumber(redis.call('GET', KEYS[6])) or 0) < reserve then return -1 end
  redis.call('DECRBY', KEYS[6], reserve)
end
if KEYS[5] ~= '-' then redis.call('SET', KEYS[5], ARGV[1]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if KEYS[6] ~= '-' and reserve > 0 then
  redis.call('HSET', KEYS[1], 'reserved', ARGV[4], 'stock_key', KEYS[6])
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'orders', 1)
return 1
