-- wrk script: POST each line of a file (one signed JSON notification per line) once, in order;
-- without a file, send the request as given (a GET, with the headers of -H).
-- Usage: wrk -t1 -c64 -d5s -s wrk_bodies.lua URL -- bodies.jsonl
--        wrk -t1 -c64 -d5s -s wrk_bodies.lua -H 'Authorization: Bearer ...' URL
-- Prints one JSON line at the end (the harness parses it).
local bodies = {}
local idx = 0

function init(args)
  if args[1] == nil then
    return
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = line
  end
end

function request()
  if #bodies == 0 then
    return wrk.format()
  end
  idx = idx + 1
  if idx > #bodies then
    idx = 1
  end
  return wrk.format(nil, nil, nil, bodies[idx])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"status_errors":%d,"connect":%d,"read":%d,"write":%d,'
      .. '"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
