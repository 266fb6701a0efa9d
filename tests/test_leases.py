"""Leases (relay/lua/claim.lua, workers/arq_compat.py) on arq's paths that do not finish a job: a
Retry with a deferral, a job cancelled at shutdown, and a burst worker with jobs in leases. Each
holds the job where stock arq, which leaves a running job in its queue, would have it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.constants import default_queue_name, in_progress_key_prefix, job_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Retry, func
from redis.asyncio import ConnectionPool

from relay.schema import Keys
from workers.arq_compat import BatchWorker

JOB = "job"
LEASES = Keys.arq_leases(default_queue_name)


@pytest.fixture
async def arq(redis_url: str) -> AsyncIterator[ArqRedis]:
    pool = ArqRedis(ConnectionPool.from_url(redis_url))
    await pool.flushdb()
    yield pool
    await pool.aclose(close_connection_pool=True)


def worker_for(arq: ArqRedis, job: Any, **options: Any) -> BatchWorker:
    return BatchWorker(
        functions=[func(job, name=JOB)],
        redis_pool=arq,
        handle_signals=False,
        poll_delay=0.01,
        keep_result=0,
        job_timeout=5,  # in-progress key / lease: 15 s
        **options,
    )


async def run_for(worker: BatchWorker, seconds: float) -> None:
    task = asyncio.ensure_future(worker.async_run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await worker.close()


# --- leases -------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_a_retry_with_a_deferral_waits_for_it(arq: ArqRedis) -> None:
    """arq's Retry(defer=5) adds the deferral to the job's score in the queue (ZINCRBY); the job is
    in its lease, not the queue, so BatchWorker.finish_job puts it back at its score plus that."""
    runs: list[float] = []

    async def flaky(ctx: dict[str, Any], name: str) -> None:
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise Retry(defer=5)

    assert await arq.enqueue_job(JOB, "flaky", _job_id="flaky") is not None
    worker = worker_for(arq, flaky)
    task = asyncio.ensure_future(worker.async_run())
    try:
        while not runs:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        score = await arq.zscore(default_queue_name, "flaky")
        assert len(runs) == 1, "re-run within 0.3 s of Retry(defer=5)"
        assert score is not None
        assert score > timestamp_ms() + 4000
        assert await arq.zscore(LEASES, "flaky") is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close()


@pytest.mark.timeout(30)
async def test_a_job_cancelled_at_shutdown_is_back_in_the_queue_at_once(arq: ArqRedis) -> None:
    """relay's stop cancels the jobs still running after the drain; arq does not finish them (it
    leaves them to run again). Out of their leases, back in the queue: another worker runs it at
    once, not when the lease would have run out."""
    started = asyncio.Event()

    async def slow(ctx: dict[str, Any], name: str) -> None:
        started.set()
        await asyncio.sleep(60)

    assert await arq.enqueue_job(JOB, "slow", _job_id="slow") is not None
    worker = worker_for(arq, slow)
    task = asyncio.ensure_future(worker.async_run())
    await started.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await worker.close()  # cancels the job: arq "cancelled, will be run again"
    state = {
        "queue": await arq.zscore(default_queue_name, "slow"),
        "lease_in_ms": (await arq.zscore(LEASES, "slow") or 0) - timestamp_ms(),
        "in_progress": await arq.exists(in_progress_key_prefix + "slow"),
        "job_key": await arq.exists(job_key_prefix + "slow"),
    }
    runs: Counter[str] = Counter()

    async def record(ctx: dict[str, Any], name: str) -> None:
        runs[name] += 1

    await run_for(worker_for(arq, record), 2.0)  # another worker, 2 s
    assert runs == {"slow": 1}, f"not re-run within 2 s; state was {state}"


@pytest.mark.timeout(30)
async def test_a_burst_worker_waits_for_jobs_in_leases(arq: ArqRedis) -> None:
    """A dead worker's job whose lease runs out in 0.5 s: arq's burst worker stops on an empty
    queue, so the leases count with it (as running jobs counted when they stayed in the queue)."""
    runs: Counter[str] = Counter()

    async def record(ctx: dict[str, Any], name: str) -> None:
        runs[name] += 1

    assert await arq.enqueue_job(JOB, "orphan", _job_id="orphan") is not None
    await arq.set(in_progress_key_prefix + "orphan", b"1", px=500)
    await arq.zrem(default_queue_name, "orphan")
    await arq.zadd(LEASES, {"orphan": timestamp_ms() + 500})
    worker = worker_for(arq, record, burst=True)
    try:
        await asyncio.wait_for(worker.async_run(), 5)
    finally:
        await worker.close()
    assert runs == {"orphan": 1}, f"burst ended with the job still leased: {await arq.zcard(LEASES)}"
