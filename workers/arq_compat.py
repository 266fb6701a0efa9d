"""Everything relay knows about arq's internals, in one bounded place.

arq (in maintenance mode) is relay's job runner. Relay goes past its public API in four ways, all
here, each held to arq's own behaviour by ``tests/test_arq_compat.py``:

- **The job format.** ``job_write`` builds the writes ``ArqRedis.enqueue_job`` makes for a delivery
  job (same keys, payload, score and expiry), so the ingest script can enqueue a callback's first
  delivery in the same atomic step that stores the event. The contract test compares the bytes
  with stock ``enqueue_job``.
- **Claiming jobs in batches, and leases.** ``BatchWorker.start_jobs`` claims a poll's due jobs in
  one script (``relay/lua/claim.lua``) with arq's checks and arq's in-progress keys, instead of four
  round trips per job, and moves each claimed job from the queue to its leases (``arq:queue:leases``)
  so that the queue holds only waiting jobs and a claim costs the same however many are running.
  arq's finish transaction clears the lease (``MergingPipeline``); a lease that runs out (its
  worker died) puts the job back in the queue.
- **Merged transactions.** arq starts and finishes each job in a MULTI/EXEC of its own;
  ``MergedTransactionsArqRedis`` sends those issued together as one MULTI/EXEC.
- **Private attributes.** ``BatchWorker`` reads and sets attributes of arq's ``Worker`` that arq does
  not document (``ARQ_WORKER_INTERNALS``); it refuses to start, naming them, if an arq upgrade
  removes any.

Pools have one owner each: ``relay.connections.Connections`` opens them and closes them. A worker
borrows the arq pool, and closing the worker (arq closes its pool with ``close_connection_pool=True``)
closes only what the worker itself opened.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from arq.worker import Worker
from redis.asyncio.client import Pipeline

from relay import lua
from relay.autopipeline import MAX_BATCH, Batcher
from relay.schema import Keys

DELIVER = "deliver"
SWEEP = "sweep"

# What BatchWorker and the worker's supervisor use of arq's Worker beyond its documented
# arguments and run methods. Checked when a BatchWorker is made, and by the tests.
ARQ_WORKER_INTERNALS = (
    "_poll_iteration",  # calls start_jobs with each poll's due job ids
    "start_jobs",
    "finish_job",  # overridden: a job not finished goes back to the queue from its lease
    "run_job",
    "_release_sem_dec_counter_on_complete",
    "sem",
    "job_counter",
    "max_jobs",
    "tasks",
    "loop",
    "queue_name",
    "queue_read_limit",
    "in_progress_timeout_s",
    "allow_pick_jobs",
    "main_task",
    "on_shutdown",
    "ctx",
)


def job_id(event_id: str, seq: int) -> str:
    """The first attempt's job id is the event id itself; each later scheduling gets ``:{seq}``."""
    return event_id if seq == 0 else f"{event_id}:{seq}"


async def enqueue_delivery(arq: ArqRedis, event_id: str, seq: int, *, at: datetime | None = None) -> bool:
    """Enqueue the job for ``(event_id, seq)``; False when that job is already queued or running.
    Every attempt is its own job, so no job lives longer than one backoff step (arq's job keys
    expire about a day after their due time)."""
    job = await arq.enqueue_job(DELIVER, event_id, seq, _job_id=job_id(event_id, seq), _defer_until=at)
    return job is not None


@dataclass(frozen=True)
class JobWrite:
    """The writes ``arq.enqueue_job`` makes for one job, for a script that enqueues atomically with
    its own writes (ingest: the event and its first delivery in one round trip instead of four)."""

    job_key: str
    result_key: str
    queue: str
    job_id: str
    payload: bytes
    score: int
    expires_ms: int


def job_write(arq: ArqRedis, event_id: str, seq: int, *, now_ms: int | None = None) -> JobWrite:
    """What ``enqueue_delivery(arq, event_id, seq)`` would write, built as ``enqueue_job`` builds it
    for a job due now (``now_ms``, default arq's clock)."""
    job = job_id(event_id, seq)
    now = timestamp_ms() if now_ms is None else now_ms
    payload = serialize_job(DELIVER, (event_id, seq), {}, None, now, serializer=arq.job_serializer)
    return JobWrite(
        job_key=Keys.arq_job(job),
        result_key=Keys.arq_result(job),
        queue=arq.default_queue_name,
        job_id=job,
        payload=payload,
        score=now,
        expires_ms=arq.expires_extra_ms,
    )


# --- merged transactions --------------------------------------------------------------------------


class MergingPipeline(Pipeline):
    """A transaction whose commands, unless it WATCHes, join the next merged MULTI/EXEC. Where arq
    takes a job out of the queue or puts it back (its finish: ``ZREM`` or ``ZINCRBY`` on the queue),
    the job's lease is cleared in the same transaction."""

    def __init__(self, transactions: Batcher, client: ArqRedis, shard_hint: str | None) -> None:
        super().__init__(client.connection_pool, client.response_callbacks, True, shard_hint)
        self.transactions = transactions
        self.queue = client.default_queue_name

    def _clear_leases(self) -> None:
        """Add a ``ZREM`` of the leases of the jobs arq's commands take out of the queue or put back."""
        jobs: list[Any] = []
        for args, _ in self.command_stack:
            if len(args) < 3 or args[1] != self.queue:
                continue
            command = str(args[0]).upper()
            if command == "ZREM":
                jobs += args[2:]
            elif command == "ZINCRBY" and len(args) >= 4:
                jobs.append(args[3])
        if jobs:
            self.zrem(Keys.arq_leases(self.queue), *jobs)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.watching or self.explicit_transaction or self.scripts or not self.command_stack:
            return await super().execute(raise_on_error)
        self._clear_leases()
        stack = self.command_stack
        try:
            replies = await self.transactions.execute(stack)
        finally:
            await self.reset()  # type: ignore[no-untyped-call]
        if raise_on_error:
            self.raise_first_error(stack, replies)
        return replies


class LocalInfoPipeline(Pipeline):
    """A pipeline that answers INFO itself. arq's worker sends INFO once at start, to log the Redis
    version and memory; the embedded store (fakeredis) has no INFO command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local_info: list[int] = []  # where each INFO reply goes in the replies

    def info(self, section: str | None = None, *args: Any, **kwargs: Any) -> LocalInfoPipeline:
        self._local_info.append(len(self.command_stack) + len(self._local_info))
        return self

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        answered, self._local_info = self._local_info, []
        replies = await super().execute(raise_on_error) if self.command_stack else []
        for position in answered:
            replies.insert(position, {"redis_version": "embedded, not durable"})
        return replies


class MergedTransactionsArqRedis(ArqRedis):
    """``ArqRedis`` over a borrowed pool (same serializers and queue) whose plain transactions
    (``pipeline()`` with no WATCH: arq's job start and job finish) are merged with the others issued
    meanwhile into one MULTI/EXEC. Each transaction's commands stay atomic: they run inside a larger
    atomic block. ``embedded``: answer INFO locally (``LocalInfoPipeline``)."""

    def __init__(self, arq: ArqRedis, *, embedded: bool = False, max_batch: int = MAX_BATCH) -> None:
        super().__init__(
            arq.connection_pool,
            job_serializer=arq.job_serializer,
            job_deserializer=arq.job_deserializer,
            default_queue_name=arq.default_queue_name,
            expires_extra_ms=arq.expires_extra_ms,
        )
        self.embedded = embedded
        self.transactions = Batcher(self, transaction=True, max_batch=max_batch)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the batches' own connection, never the borrowed pool (its owner closes it), even
        when arq's ``Worker.close`` asks for ``close_connection_pool=True``."""
        await self.transactions.aclose()
        await super().aclose(close_connection_pool=False)

    async def zcard(self, name: Any) -> int:
        """arq's burst mode stops when its queue is empty: count the running jobs (their leases)
        with it, as they were counted when they stayed in the queue."""
        queued = int(await super().zcard(name))
        if name == self.default_queue_name:
            queued += int(await super().zcard(Keys.arq_leases(name)))
        return queued

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        if transaction:
            return MergingPipeline(self.transactions, self, shard_hint)
        if self.embedded:
            return LocalInfoPipeline(self.connection_pool, self.response_callbacks, False, shard_hint)
        return super().pipeline(transaction, shard_hint)


# --- claiming jobs in batches ---------------------------------------------------------------------

# How long one poll keeps claiming jobs as slots free (BatchWorker.start_jobs).
CLAIM_WINDOW = 1.0
# Run-out leases one claim puts back in the queue, and how often an idle worker looks for them.
LEASES_SETTLED = 100
LEASE_CHECK = 1.0


def missing_arq_internals(worker: Worker) -> list[str]:
    """The names of ``ARQ_WORKER_INTERNALS`` this arq's Worker lacks."""
    return [name for name in ARQ_WORKER_INTERNALS if not hasattr(worker, name)]


class BatchWorker(Worker):
    """arq's ``Worker`` with jobs claimed, started and finished in batches; everything else is arq's
    (lifecycle, cron jobs, health check, retries, timeouts, job and retry keys).

    - ``start_jobs`` claims up to the free slots' worth of due jobs in one script (claim.lua): a
      job whose in-progress key exists (running elsewhere) is skipped, as is one no longer due; any
      other gets its in-progress key for ``in_progress_timeout_s``, exactly the key arq sets, and
      moves from the queue to its lease for as long. Two workers never claim the same job; a
      SIGKILLed worker's lease runs out and the job goes back to the queue and runs again (an idle
      worker checks for run-out leases every LEASE_CHECK seconds).
    - arq's own transactions go through ``MergedTransactionsArqRedis``.

    Takes arq's ``Worker`` arguments; ``redis_pool`` is required and borrowed, not owned.
    """

    def __init__(self, *args: Any, redis_pool: ArqRedis, embedded: bool = False, **kwargs: Any) -> None:
        self._merged = MergedTransactionsArqRedis(redis_pool, embedded=embedded)
        super().__init__(*args, redis_pool=self._merged, **kwargs)
        missing = missing_arq_internals(self)
        if missing:
            raise RuntimeError(f"this arq no longer has what relay's worker relies on: {', '.join(missing)}")
        self._claim = self._merged.register_script(lua.source("claim"))
        self._leases_settled = 0.0  # loop time of the last claim, which settles run-out leases
        self._scores: dict[str, int] = {}  # each running job's score in the queue when claimed

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self._merged.aclose()  # when arq's close stopped short of closing its pool

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim and start up to the free slots' worth of due jobs, in one script. ``job_ids`` is
        the poll's read of the queue: the script reads the queue again at the moment it claims, so
        the ids need not be sent back.

        When a claim fills every slot, more jobs are likely due: as slots free, claim again at
        once rather than at the next poll, ``poll_delay`` later (stock arq likewise starts a poll's
        jobs as slots free). For at most ``CLAIM_WINDOW`` seconds, after which arq's poll iteration
        goes on (heartbeat, finished tasks); never once arq stops picking jobs (SIGTERM)."""
        if not job_ids:
            # An idle poll: the queue may be empty because a dead worker's jobs sit in their
            # leases. Settle run-out leases now and then (the claim settles them too).
            if self.allow_pick_jobs and self.loop.time() - self._leases_settled >= LEASE_CHECK:
                await self._claim_and_start(0)
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

    def _ended(self, job_id: str, _: object) -> None:
        self._scores.pop(job_id, None)
        self._release_sem_dec_counter_on_complete()

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
        """arq's finish; but a job it does not finish (cancelled at shutdown, or raising Retry) goes
        back to the queue from its lease, at its score plus arq's deferral, as stock arq leaves it
        in the queue (arq's ZINCRBY would put it at the deferral alone, in 1970)."""
        score = self._scores.get(job_id)
        if finish or score is None:
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
        async with self.pool.pipeline(transaction=True) as tr:
            in_progress = Keys.arq_in_progress(job_id)
            if keep_in_progress is None:
                tr.delete(in_progress)
            else:
                tr.pexpire(in_progress, int(keep_in_progress * 1000))
            tr.zrem(Keys.arq_leases(self.queue_name), job_id)
            tr.zadd(self.queue_name, {job_id: score + (incr_score or 0)})
            await tr.execute()

    async def _claim_and_start(self, free: int) -> int:
        """Claim up to ``free`` due jobs in one script and start them; how many were claimed.
        Claimed jobs leave the queue for their leases, so the script reads only what it takes."""
        self._leases_settled = self.loop.time()
        claimed = await self._claim(
            keys=[self.queue_name, Keys.arq_leases(self.queue_name)],
            args=[
                Keys.arq_in_progress_prefix,
                timestamp_ms(),
                int(self.in_progress_timeout_s * 1000),
                free,
                Keys.arq_job_prefix,
                LEASES_SETTLED,
            ],
        )
        for raw_id, raw_score in zip(claimed[::2], claimed[1::2], strict=True):
            await self.sem.acquire()  # never waits: at most ``free`` jobs were claimed
            self.job_counter += 1
            job_id = raw_id.decode()
            score = self._scores[job_id] = int(float(raw_score))
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(functools.partial(self._ended, job_id))
            self.tasks[job_id] = task
        return len(claimed) // 2
