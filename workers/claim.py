"""``BatchWorker``: arq's ``Worker`` with jobs claimed, started and finished in batches.

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
- arq's own transactions (starting a job: GET it, INCR its retry count; finishing it: delete its
  keys, remove it from the queue) go through ``MergedTransactionsArqRedis``: those issued while
  one is in flight are merged into one MULTI/EXEC, so the jobs a claim starts together, or that
  finish together, share a round trip. Each job's commands are arq's, and still atomic.
"""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker

from workers.autopipeline import MergedTransactionsArqRedis

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


class BatchWorker(Worker):
    """Takes arq's ``Worker`` arguments; ``redis_pool`` is required (the claim script needs it now)."""

    def __init__(self, *args: Any, redis_pool: ArqRedis, **kwargs: Any) -> None:
        self._merged = MergedTransactionsArqRedis(redis_pool)
        super().__init__(*args, redis_pool=self._merged, **kwargs)
        self._claim = self._merged.register_script(CLAIM_LUA)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self._merged.aclose()  # its connection; arq's close closed the shared pool

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
