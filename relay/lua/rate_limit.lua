-- Count one public purchase (relay.ratelimit.PurchaseLimit): per client and source address, under
-- a per-client ceiling. A request refused for its address does not count towards the ceiling, so
-- one address's flood cannot lock out the client's other buyers.
--
-- KEYS[1] the address's counter of this window    KEYS[2] the client's counter of this window
-- ARGV[1] the address limit    ARGV[2] the client ceiling    ARGV[3] the counters' expiry (s)
--
-- Returns 0 when counted, 1 when the address is at its limit, 2 when the client is at its ceiling.

local address = tonumber(redis.call('GET', KEYS[1]) or '0')
if address >= tonumber(ARGV[1]) then return 1 end
local client = tonumber(redis.call('GET', KEYS[2]) or '0')
if client >= tonumber(ARGV[2]) then return 2 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 0
