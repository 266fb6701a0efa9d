-- Claim due arq jobs (workers.arq_compat.BatchWorker): what arq's start_jobs does for one job at a
-- time (WATCH the in-progress key, EXISTS it, ZSCORE the job, MULTI/PSETEX/EXEC), for up to
-- ARGV[4] jobs at once. Reads the queue as arq's poll does; skips a job that is running elsewhere
-- (its in-progress key exists) or no longer due; gives any other arq's in-progress key. Atomic,
-- as arq's WATCH/MULTI is for each job, so two workers never claim the same job.
--
-- arq runs on one Redis (no cluster), so each job's in-progress key is built here from its id,
-- as arq builds it, rather than declared in KEYS.
--
-- KEYS[1] the arq queue
-- ARGV[1] the in-progress key prefix    ARGV[2] now (ms)    ARGV[3] in-progress ttl (ms)
-- ARGV[4] most jobs to claim    ARGV[5] most queue entries to read
--
-- Returns the claimed job ids and their scores, flat: {id, score, id, score, ...}.

local prefix, now, ttl, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[5])
local claimed = {}
for i = 1, #due, 2 do
  if #claimed >= 2 * limit then break end
  local job_id, score = due[i], due[i + 1]
  local key = prefix .. job_id
  if tonumber(score) > 0 and redis.call('EXISTS', key) == 0 then
    redis.call('PSETEX', key, ttl, '1')
    claimed[#claimed + 1] = job_id
    claimed[#claimed + 1] = score
  end
end
return claimed
