-- Store an answer (relay.idempotency.Idempotency): replace a request's in-flight claim on an
-- Idempotency-Key with its answer, only if the claim is still that request's (its token fences a
-- request that outlived its claim).
--
-- KEYS[1] the record    ARGV[1] the claim, as stored    ARGV[2] the answer    ARGV[3] its expiry (s)
--
-- Returns 1 when the claim was still ours and is now the answer, else 0 (nothing written).

if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
