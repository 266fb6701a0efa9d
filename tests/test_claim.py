"""``workers.claim.BatchWorker`` against a real Redis: it claims jobs as arq does (never a job
running elsewhere, never one not yet due, never more than its free slots, never one twice across
workers), a dead worker's job runs again once its in-progress key expires, and a finished job
leaves nothing behind."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import default_queue_name, in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.worker import func
from redis.asyncio import ConnectionPool

from workers.arq_compat import BatchWorker

JOB = "job"


@pytest.fixture
async def arq(redis_url: str) -> AsyncIterator[ArqRedis]:
    pool = ArqRedis(ConnectionPool.from_url(redis_url))
    yield pool
    await pool.aclose(close_connection_pool=True)


Job = Callable[..., Awaitable[Any]]
MakeWorker = Callable[..., BatchWorker]


@pytest.fixture
async def make_worker() -> AsyncIterator[MakeWorker]:
    """``make_worker(arq, job, **options)``: a BatchWorker running ``job``, closed after the test."""
    made: list[BatchWorker] = []

    def make(arq: ArqRedis, job: Job, **options: Any) -> BatchWorker:
        worker = BatchWorker(
            functions=[func(job, name=JOB)],
            redis_pool=arq,
            handle_signals=False,
            poll_delay=0,
            keep_result=0,
            job_timeout=5,
            **options,
        )
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.close()


async def enqueue(arq: ArqRedis, *job_ids: str, defer: float | None = None) -> None:
    for job_id in job_ids:
        deferred = timedelta(seconds=defer) if defer else None
        assert await arq.enqueue_job(JOB, job_id, _job_id=job_id, _defer_by=deferred) is not None


def recorder() -> tuple[Counter[str], Job]:
    runs: Counter[str] = Counter()

    async def job(ctx: dict[str, Any], name: str) -> None:
        runs[name] += 1
        await asyncio.sleep(0.01)

    return runs, job


async def test_claims_due_jobs_and_skips_running_deferred_and_finished_ones(
    arq: ArqRedis, make_worker: MakeWorker
) -> None:
    runs, job = recorder()
    await enqueue(arq, "due-1", "due-2", "running")
    await enqueue(arq, "later", defer=60)
    await arq.set(in_progress_key_prefix + "running", b"1", px=60_000)  # another worker has it
    worker = make_worker(arq, job)

    await worker.start_jobs([b"due-1", b"running", b"later", b"gone", b"due-2"])
    assert sorted(worker.tasks) == ["due-1", "due-2"]
    # Claimed as arq claims: the in-progress key, for the job timeout + 10 s.
    for job_id in ("due-1", "due-2"):
        ttl = await arq.pttl(in_progress_key_prefix + job_id)
        assert 14_000 < ttl <= 15_000
    assert not await arq.exists(in_progress_key_prefix + "later")
    assert not await arq.exists(in_progress_key_prefix + "gone")
    await asyncio.gather(*worker.tasks.values())
    assert runs == {"due-1": 1, "due-2": 1}


async def test_claims_no_more_than_the_free_slots(arq: ArqRedis, make_worker: MakeWorker) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def job(ctx: dict[str, Any], name: str) -> None:
        started.set()
        await release.wait()

    ids = [f"job-{n}" for n in range(5)]
    await enqueue(arq, *ids)
    worker = make_worker(arq, job, max_jobs=3)
    await worker.start_jobs([job_id.encode() for job_id in ids])
    assert list(worker.tasks) == ids[:3]
    await started.wait()
    await worker.start_jobs([job_id.encode() for job_id in ids])  # full: claims nothing
    assert list(worker.tasks) == ids[:3]
    claimed = [await arq.exists(in_progress_key_prefix + job_id) for job_id in ids]
    assert claimed == [1, 1, 1, 0, 0]
    release.set()
    await asyncio.gather(*worker.tasks.values())


@pytest.mark.timeout(30)
async def test_two_workers_never_run_the_same_job(
    arq: ArqRedis, redis_url: str, make_worker: MakeWorker
) -> None:
    runs, job = recorder()
    ids = [f"job-{n}" for n in range(300)]
    await enqueue(arq, *ids)
    other = ArqRedis(ConnectionPool.from_url(redis_url))
    workers = [
        make_worker(arq, job, burst=True, max_jobs=40),
        make_worker(other, job, burst=True, max_jobs=40),
    ]
    try:
        await asyncio.gather(*(worker.async_run() for worker in workers))
    finally:
        for worker in workers:  # before the pool they borrow
            await worker.close()
        await other.aclose(close_connection_pool=True)
    assert [worker.jobs_complete for worker in workers] != [300, 0]  # both took a share
    assert sum(worker.jobs_complete for worker in workers) == 300
    assert runs == dict.fromkeys(ids, 1)


@pytest.mark.timeout(30)
async def test_a_dead_workers_job_runs_once_its_in_progress_key_expires(
    arq: ArqRedis, make_worker: MakeWorker
) -> None:
    runs, job = recorder()
    await enqueue(arq, "orphan")
    # What a SIGKILLed worker leaves: the job still queued, its in-progress key counting down.
    await arq.set(in_progress_key_prefix + "orphan", b"1", px=500)
    started = time.monotonic()
    worker = make_worker(arq, job, burst=True)
    await worker.async_run()
    assert runs == {"orphan": 1}
    assert time.monotonic() - started >= 0.45


async def test_a_finished_job_leaves_no_keys(arq: ArqRedis, make_worker: MakeWorker) -> None:
    runs, job = recorder()
    await enqueue(arq, "done")
    worker = make_worker(arq, job, burst=True)
    await worker.async_run()
    assert runs == {"done": 1}
    assert await arq.zcard(default_queue_name) == 0
    for prefix in (in_progress_key_prefix, job_key_prefix, retry_key_prefix):
        assert not await arq.exists(prefix + "done")


async def test_a_full_worker_claims_again_as_slots_free_not_at_the_next_poll(
    arq: ArqRedis, make_worker: MakeWorker
) -> None:
    runs, job = recorder()  # each job takes 10 ms
    ids = [f"job-{n}" for n in range(12)]
    await enqueue(arq, *ids)
    worker = make_worker(arq, job, max_jobs=3)
    await worker.start_jobs([job_id.encode() for job_id in ids[:3]])  # one poll
    assert sorted(worker.tasks) == sorted(ids)  # every job started within that poll, 3 at a time
    await asyncio.gather(*worker.tasks.values())
    assert runs == dict.fromkeys(ids, 1)
