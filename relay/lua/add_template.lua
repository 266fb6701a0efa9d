-- Add an event template (relay.store.Store.add_event_template): give a purchase that has none (made
-- before purchases carried one, or expired and its template dropped) its template again, only if
-- the purchase still exists and has no event. Checked and written in one step: a purchase deleted
-- meanwhile by retention is not brought back as a fragment, and one paid meanwhile keeps its event.
--
-- KEYS[1] purchase
-- ARGV[1..] the template's fields, field and value after field and value
--
-- Returns 1 when written, 0 when the purchase is gone or already has its event.

local found = redis.call('HMGET', KEYS[1], 'status', 'event_id')
if not found[1] or (found[2] and found[2] ~= '') then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
redis.call('HDEL', KEYS[1], 'event_tail')
return 1
