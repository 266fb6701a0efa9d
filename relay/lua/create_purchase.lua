-- Create a purchase (relay.store.Store.create_purchase), only if its order id is new: the check and
-- the writes are one step, so a colliding order id can never overwrite a purchase (a paid one
-- turned back to pending). The purchase goes on the expiry schedule (expire.lua) and is counted.
--
-- A shop payment also names the merchant's own order id (KEYS[5]: its project's key of it ->
-- the gateway's order id): created only if that id is new in the project too.
--
-- KEYS[1] purchase        KEYS[2] the project's purchases    KEYS[3] expiry    KEYS[4] stats
-- KEYS[5] the merchant's order id of a shop payment ('-' for any other order)
-- ARGV[1] order id        ARGV[2] created at (ms)    ARGV[3] expires at (ms)
-- ARGV[4..] the purchase hash, field and value after field and value
--
-- Returns 1 when created, 0 when the order id (or the merchant's) is taken (nothing written).

if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if KEYS[5] ~= '-' then
  if redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
  redis.call('SET', KEYS[5], ARGV[1])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'orders', 1)
return 1
