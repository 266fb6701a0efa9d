"""``BatchWorker``: arq's ``Worker`` with jobs claimed, started and finished in batches.

Stock arq claims the jobs of a poll one at a time, four round trips each (WATCH the job's
in-progress key, EXISTS it, ZSCORE the job, MULTI/PSETEX/EXEC), and finishes each job in a
transaction of its own. At a thousand jobs a second those round trips cost more CPU than the jobs.
``BatchWorker`` keeps everything else of arq (its lifecycle, signals, cron jobs, health check,
retries, timeouts, job and retry keys) and changes two steps, with arq's semantics for each job:

- ``start_jobs`` claims the due jobs in one Lua script that reads the queue as arq's poll does,
  up to the free slots: a job whose in-progress key exists (running elsewhere) is skipped, as
  is one no longer due or gone from the queue (the script reads the queue at the moment it
  claims, where arq re-reads each job's score); any other gets its in-progress key for
  ``in_progress_timeout_s``, exactly the key arq sets. The script is atomic, which is what arq's
  WATCH/MULTI gives each job, so two workers never claim the same job; a SIGKILLed worker's key
  expires and the job runs again, as with arq.
- arq's own transactions (starting a job: GET it, INCR its retry count; finishing it: delete its
  keys, remove it from the queue) go through ``MergedTransactionsArqRedis``: those issued while
  one is in flight are merged into one MULTI/EXEC, so the jobs a claim starts together, or that
  finish together, share a round trip. Each job's commands are arq's, and still atomic.
"""

from __future__ import annotations

import asyncio
from typing import Any

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker

from relay.autopipeline import MergedTransactionsArqRedis

# KEYS: the queue. ARGV: the in-progress key prefix, now (ms), in-progress ttl (ms), most jobs to
# claim, most jobs to read. Returns the claimed ids and their scores, flat. arq runs on one Redis
# (no cluster), so each job's in-progress key is built here from its id, as arq builds it.
CLAIM_LUA = """
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
"""


# How long one poll keeps claiming jobs as slots free (BatchWorker.start_jobs).
CLAIM_WINDOW = 1.0


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
        """Claim and start up to the free slots' worth of due jobs, in one script. ``job_ids`` is
        the poll's read of the queue: the script reads the queue again at the moment it claims, so
        the ids need not be sent back.

        When a claim fills every slot, more jobs are likely due: as slots free, claim again at
        once rather than at the next poll, ``poll_delay`` later (stock arq likewise starts a poll's
        jobs as slots free). For at most ``CLAIM_WINDOW`` seconds, after which arq's poll iteration
        goes on (heartbeat, finished tasks); never once arq stops picking jobs (SIGTERM)."""
        if not job_ids:
            return
        window_ends = self.loop.time() + CLAIM_WINDOW
        while self.allow_pick_jobs:
            free = self.max_jobs - self.job_counter
            if free > 0:
                if await self._claim_and_start(free) < free:
                    return  # no more due jobs
                continue
            remaining = window_ends - self.loop.time()
            running = [task for task in self.tasks.values() if not task.done()]
            if remaining <= 0 or not running:
                return
            # Wait for a job to end (its done-callback frees its slot), then for the others
            # ending in the same turn.
            done, _ = await asyncio.wait(running, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                return
            await asyncio.sleep(0)

    async def _claim_and_start(self, free: int) -> int:
        """Claim up to ``free`` due jobs in one script and start them; how many were claimed.
        Running jobs stay in the queue until they finish, so the script reads past this worker's."""
        claimed = await self._claim(
            keys=[self.queue_name],
            args=[
                in_progress_key_prefix,
                timestamp_ms(),
                int(self.in_progress_timeout_s * 1000),
                free,
                self.queue_read_limit + self.job_counter,
            ],
        )
        for raw_id, raw_score in zip(claimed[::2], claimed[1::2], strict=True):
            await self.sem.acquire()  # never waits: at most ``free`` jobs were claimed
            self.job_counter += 1
            job_id = raw_id.decode()
            task = self.loop.create_task(self.run_job(job_id, int(float(raw_score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task
        return len(claimed) // 2
