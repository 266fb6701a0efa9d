-- Claim due arq jobs (workers.arq_compat.BatchWorker): what arq's start_jobs does for one job at a
-- time (WATCH the in-progress key, EXISTS it, ZSCORE the job, MULTI/PSETEX/EXEC), for up to
-- ARGV[4] jobs at once, atomically, so two workers never claim the same job.
--
-- A claimed job leaves the queue for the leases (job id -> when its claim runs out): the queue then
-- holds only jobs waiting, and a claim reads just the jobs it takes, however many are running.
-- The job's finish clears its lease (workers.arq_compat.MergingPipeline, in arq's own finish
-- transaction). A lease that runs out first belongs to a worker that died (SIGKILL): its job goes
-- back to the queue, due now, and runs again (its event's seq fences a run that is stale). A job
-- found queued with an in-progress key (put back while still marked running) is leased until that
-- key expires instead of being read again at every claim.
--
-- arq runs on one Redis (no cluster), so each job's in-progress and job keys are built here from
-- its id, as arq builds them, rather than declared in KEYS.
--
-- KEYS[1] the arq queue    KEYS[2] the leases
-- ARGV[1] the in-progress key prefix    ARGV[2] now (ms)    ARGV[3] in-progress ttl (ms)
-- ARGV[4] most jobs to claim    ARGV[5] the job key prefix    ARGV[6] most run-out leases to settle
--
-- Returns the claimed job ids and their scores, flat: {id, score, id, score, ...}.

local prefix, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, ARGV[6])
for _, job_id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], job_id)
  local left = redis.call('PTTL', prefix .. job_id)
  if left > 0 then
    redis.call('ZADD', KEYS[2], now + left, job_id)  -- still marked running: wait for the mark
  elseif redis.call('EXISTS', ARGV[5] .. job_id) == 1 then
    redis.call('ZADD', KEYS[1], now, job_id)  -- its worker died: run it again
  end
end

local claimed = {}
if tonumber(ARGV[4]) < 1 then return claimed end  -- only settling leases
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[4])
for i = 1, #due, 2 do
  local job_id, score = due[i], due[i + 1]
  local key = prefix .. job_id
  local left = redis.call('PTTL', key)
  if left > 0 then
    redis.call('ZREM', KEYS[1], job_id)
    redis.call('ZADD', KEYS[2], now + left, job_id)
  elseif tonumber(score) > 0 then
    redis.call('ZREM', KEYS[1], job_id)
    redis.call('PSETEX', key, ttl, '1')
    redis.call('ZADD', KEYS[2], now + ttl, job_id)
    claimed[#claimed + 1] = job_id
    claimed[#claimed + 1] = score
  end
end
return claimed
