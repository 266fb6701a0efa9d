-- Release a claim (relay.idempotency.Idempotency): delete a request's in-flight claim on an
-- Idempotency-Key, only if it is still that request's, so the client may retry with the key.
--
-- KEYS[1] the record    ARGV[1] the claim, as stored
--
-- Returns 1 when the claim was still ours and is now deleted, else 0 (nothing deleted).

if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
