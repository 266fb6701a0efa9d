"""``BatchWorker``: arq's ``Worker`` with jobs claimed, and finished, in batches.

Stock arq claims the jobs of a poll one at a time, four round trips each (WATCH the job's
in-progress key, EXISTS it, ZSCORE the job, MULTI/PSETEX/EXEC), and finishes each job in a
transaction of its own. At a thousand jobs a second those round trips cost more CPU than the jobs.
``BatchWorker`` keeps everything else of arq (its lifecycle, signals, cron jobs, health check,
retries, timeouts, job and retry keys) and changes two steps, with arq's semantics for each job:

- ``start_jobs`` claims the poll's jobs in one Lua script, up to the free slots: a job whose
  in-progress key exists (running elsewhere), or whose queue score is missing (finished) or in the
  future (re-enqueued with a delay), is skipped; any other gets its in-progress key for
  ``in_progress_timeout_s``, exactly the key arq sets. The script is atomic, which is what arq's
  WATCH/MULTI gives each job, so two workers never claim the same job; a SIGKILLed worker's key
  expires and the job runs again, as with arq.
- ``finish_job`` for a job that ends normally (the relay's case: no result kept, not a cron job)
  is one Lua script, the same deletions and removals arq's transaction makes, sent on an
  auto-pipelined client so that the jobs finishing in one loop turn share a round trip. Every
  other ending (a retry, a kept result, a cron job's in-progress key) is arq's own.
"""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker

from workers.autopipeline import AutoPipelineRedis

# KEYS: the queue, then each job's in-progress key. ARGV: now (ms), in-progress ttl (ms), most jobs
# to claim, then the job ids in KEYS' order. Returns the claimed ids and their scores, flat.
CLAIM_LUA = """
local now, ttl, limit = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local claimed = {}
for i = 2, #KEYS do
  if #claimed >= 2 * limit then break end
  local job_id = ARGV[i + 2]
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local score = redis.call('ZSCORE', KEYS[1], job_id)
    local due = score and tonumber(score)
    if due and due > 0 and due <= now then
      redis.call('PSETEX', KEYS[i], ttl, '1')
      claimed[#claimed + 1] = job_id
      claimed[#claimed + 1] = score
    end
  end
end
return claimed
"""

# arq's finish_job for a finished job with no result kept. KEYS: in-progress, retry, job, abort
# set, queue. ARGV: job id.
FINISH_LUA = """
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
"""


class BatchWorker(Worker):
    """Takes arq's ``Worker`` arguments; ``redis_pool`` is required (the scripts need it now)."""

    def __init__(self, *args: Any, redis_pool: ArqRedis, **kwargs: Any) -> None:
        super().__init__(*args, redis_pool=redis_pool, **kwargs)
        self._claim = redis_pool.register_script(CLAIM_LUA)
        self._finish = AutoPipelineRedis(redis_pool.connection_pool).register_script(FINISH_LUA)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim up to the free slots' worth of ``job_ids`` in one script and start them."""
        free = self.max_jobs - self.job_counter
        if free <= 0 or not job_ids:
            return
        ids = [job_id.decode() for job_id in job_ids]
        claimed = await self._claim(
            keys=[self.queue_name, *(in_progress_key_prefix + job_id for job_id in ids)],
            args=[timestamp_ms(), int(self.in_progress_timeout_s * 1000), free, *ids],
        )
        for raw_id, raw_score in zip(claimed[::2], claimed[1::2], strict=True):
            await self.sem.acquire()  # never waits: at most ``free`` jobs were claimed
            self.job_counter += 1
            job_id = raw_id.decode()
            task = self.loop.create_task(self.run_job(job_id, int(float(raw_score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        if not finish or result_data is not None or keep_in_progress is not None:
            await super().finish_job(
                job_id,
                finish,
                result_data,
                result_timeout_s,
                keep_result_forever,
                incr_score,
                keep_in_progress,
            )
            return
        await self._finish(
            keys=[
                in_progress_key_prefix + job_id,
                retry_key_prefix + job_id,
                job_key_prefix + job_id,
                abort_jobs_ss,
                self.queue_name,
            ],
            args=[job_id],
        )
