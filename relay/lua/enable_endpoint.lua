-- Enable an endpoint (relay.endpoints.Endpoints.enable): clear its disabled mark and its failing
-- streak, and take it out of its project's disabled endpoints (a STRING of digests, comma-separated,
-- kept by finish.lua), in one step.
--
-- KEYS[1] the endpoint's health    KEYS[2] the project's disabled endpoints
-- ARGV[1] the endpoint's digest
--
-- Returns the health's fields url, last_success_at, last_failure_at, failing_since, disabled_at,
-- last_error (relay.endpoints.FIELDS; each false when unset).

redis.call('HDEL', KEYS[1], 'disabled_at', 'failing_since', 'failing_since_ms')
local kept = {}
for each in string.gmatch(redis.call('GET', KEYS[2]) or '', '[^,]+') do
  if each ~= ARGV[1] then kept[#kept + 1] = each end
end
if #kept == 0 then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], table.concat(kept, ',')) end
return redis.call('HMGET', KEYS[1], 'url', 'last_success_at', 'last_failure_at', 'failing_since',
  'disabled_at', 'last_error')
