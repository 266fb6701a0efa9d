-- Remember an invoice (relay.store.Store.remember_invoice): keep an order's invoice URL, only while
-- the order exists (a deleted one is not brought back as a hash without its doc).
--
-- KEYS[1] purchase
-- ARGV[1] the invoice URL
--
-- Returns 1 when kept, 0 when the order is gone.

if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'invoice_url', ARGV[1])
return 1
