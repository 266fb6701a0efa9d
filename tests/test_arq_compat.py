"""``workers.arq_compat`` held to stock arq's behaviour, on a real Redis: relay writes a delivery
job byte for byte as ``ArqRedis.enqueue_job`` does and stock arq runs it; every private attribute of
arq's ``Worker`` relay relies on exists, and BatchWorker refuses to start naming any that is gone;
BatchWorker claims jobs as arq does (never a job running elsewhere, never one not yet due, never more
than its free slots, never one twice across workers), a dead worker's job runs again once its
in-progress key expires, and a finished job leaves nothing behind; it borrows its pool, never closes
it; and it runs on the embedded store (fakeredis, no INFO)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import arq.connections as arq_connections
import fakeredis
import pytest
from arq.connections import ArqRedis
from arq.constants import default_queue_name, in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.jobs import deserialize_job
from arq.utils import timestamp_ms
from arq.worker import Retry, Worker, func
from fakeredis.aioredis import FakeAsyncRedisConnection
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ResponseError

from relay.models import new_event_id
from relay.schema import Keys
from relay.stores import make_stores
from tests.helpers import eventually, make_outcome, make_purchase, make_settings
from workers.arq_compat import (
    ARQ_WORKER_INTERNALS,
    DELIVER,
    BatchWorker,
    JobWrite,
    enqueue_delivery,
    job_write,
    missing_arq_internals,
)
from workers.lifetime import stop_task

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


async def run_until(
    worker: BatchWorker, arq: ArqRedis, runs: Counter[str], expected: dict[str, int], *, what: str
) -> float:
    """Run ``worker`` (not in burst mode) until the jobs have run as ``expected`` and finished (no
    lease left); the seconds it took."""
    started = time.monotonic()
    task = asyncio.ensure_future(worker.async_run())
    try:

        async def finished() -> bool:
            return runs == expected and await arq.zcard(Keys.arq_leases(default_queue_name)) == 0

        await eventually(finished, timeout=10, what=what)
    finally:
        await stop_task(task)
    return time.monotonic() - started


@pytest.mark.timeout(30)
@pytest.mark.parametrize("queued", [False, True], ids=["leased", "queued"])
async def test_a_dead_workers_job_runs_once_its_claim_runs_out(
    arq: ArqRedis, make_worker: MakeWorker, queued: bool
) -> None:
    """What a SIGKILLed worker leaves: the job in its lease (or, put back meanwhile, in the queue),
    its in-progress key counting down. Nobody runs it before that, and one worker runs it after."""
    runs, job = recorder()
    await enqueue(arq, "orphan")
    await arq.set(in_progress_key_prefix + "orphan", b"1", px=500)
    if not queued:
        await arq.zrem(default_queue_name, "orphan")
        await arq.zadd(Keys.arq_leases(default_queue_name), {"orphan": timestamp_ms() + 500})
    worker = make_worker(arq, job)
    took = await run_until(worker, arq, runs, {"orphan": 1}, what="the orphan's run")
    assert took >= 0.45


async def test_a_running_job_is_out_of_the_queue_and_a_claim_reads_only_what_it_takes(
    arq: ArqRedis, make_worker: MakeWorker
) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def slow(ctx: dict[str, Any], name: str) -> None:
        started.append(name)
        await release.wait()

    await enqueue(arq, *(f"job-{n}" for n in range(5)))
    worker = make_worker(arq, slow, max_jobs=3)
    await worker.start_jobs([b"job-0"])
    await eventually(lambda: _true(len(started) == 3), what="three jobs running")
    leases = Keys.arq_leases(default_queue_name)
    assert await arq.zcard(leases) == 3
    assert sorted(await arq.zrange(default_queue_name, 0, -1)) == [b"job-3", b"job-4"]
    release.set()
    await asyncio.gather(*worker.tasks.values())
    assert await arq.zcard(leases) == 0  # arq's finish cleared them


async def _true(value: bool) -> bool:
    return value


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


# --- the job format: relay's writes are enqueue_job's -------------------------------------------

# A fixed enqueue time, in the past so the job is due: 2026-01-01T00:00:00Z.
NOW_MS = 1_767_225_600_000
NOW = datetime.fromtimestamp(NOW_MS / 1000, UTC)
# Two PTTLs read right after two writes differ only by how long each read took.
PTTL_SLACK_MS = 50


@dataclass
class ArqWrites:
    """Every key under arq's names: each string's raw bytes and PTTL, each sorted set's scores."""

    strings: dict[str, bytes]
    expiries: dict[str, int]
    sets: dict[str, dict[bytes, float]]


async def arq_writes(arq: ArqRedis) -> ArqWrites:
    found = ArqWrites({}, {}, {})
    for raw_key in sorted(await arq.keys("arq:*")):
        key = raw_key.decode()
        if await arq.type(key) == b"zset":
            found.sets[key] = dict(await arq.zrange(key, 0, -1, withscores=True))
        else:
            found.strings[key] = await arq.get(key)
            found.expiries[key] = await arq.pttl(key)
    return found


async def ingest_with_job(redis: Redis, redis_url: str, job: JobWrite, *, event_id: str) -> None:
    """A purchase moved to paid by the ingest script, which also writes ``job`` (as apply_outcome does)."""
    store = make_stores(redis, make_settings(redis_url=redis_url)).store
    await store.create_purchase(make_purchase("order-1", created_at=NOW))
    applied = await store.ingest(make_outcome("order-1"), now=NOW, paid_at=NOW, event_id=event_id, job=job)
    assert applied == ("applied", "paid", 1)


async def test_the_ingest_script_writes_a_delivery_job_byte_for_byte_as_enqueue_job_does(
    arq: ArqRedis, redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    event_id = new_event_id()
    monkeypatch.setattr(arq_connections, "timestamp_ms", lambda: NOW_MS)
    assert await arq.enqueue_job(DELIVER, event_id, 0, _job_id=event_id) is not None
    stock = await arq_writes(arq)
    await arq.flushdb()

    await ingest_with_job(redis, redis_url, job_write(arq, event_id, 0, now_ms=NOW_MS), event_id=event_id)
    relays = await arq_writes(arq)

    assert list(stock.strings) == list(relays.strings) == [f"arq:job:{event_id}"]
    assert stock.strings == relays.strings
    assert stock.sets == relays.sets == {"arq:queue": {event_id.encode(): NOW_MS}}
    [(stock_pttl, relay_pttl)] = zip(stock.expiries.values(), relays.expiries.values(), strict=True)
    assert abs(stock_pttl - relay_pttl) <= PTTL_SLACK_MS
    assert 0 < relay_pttl <= arq.expires_extra_ms


async def test_a_later_attempt_is_the_job_event_id_colon_seq(
    arq: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    event_id = new_event_id()
    monkeypatch.setattr(arq_connections, "timestamp_ms", lambda: NOW_MS)
    assert await enqueue_delivery(arq, event_id, 2)
    assert not await enqueue_delivery(arq, event_id, 2)  # already queued

    written = job_write(arq, event_id, 2, now_ms=NOW_MS)
    assert written.job_id == f"{event_id}:2"
    job = await arq_writes(arq)
    assert job.strings == {f"arq:job:{event_id}:2": written.payload}
    assert job.sets == {"arq:queue": {f"{event_id}:2".encode(): NOW_MS}}
    assert deserialize_job(written.payload).args == (event_id, 2)


async def test_stock_arq_runs_the_job_the_ingest_script_wrote(
    arq: ArqRedis, redis: Redis, redis_url: str
) -> None:
    event_id = new_event_id()
    await ingest_with_job(redis, redis_url, job_write(arq, event_id, 0, now_ms=NOW_MS), event_id=event_id)
    runs: list[tuple[str, int]] = []

    async def deliver(ctx: dict[str, Any], event_id: str, seq: int) -> None:
        runs.append((event_id, seq))

    # Stock arq owns the pool it is given: its close() closes it.
    worker = Worker(
        functions=[func(deliver, name=DELIVER)],
        redis_pool=ArqRedis(ConnectionPool.from_url(redis_url)),
        burst=True,
        poll_delay=0,
        handle_signals=False,
        keep_result=0,
    )
    try:
        await worker.async_run()
    finally:
        await worker.close()
    assert runs == [(event_id, 0)]
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)


# --- private attributes -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ARQ_WORKER_INTERNALS)
async def test_stock_arqs_worker_has_what_relay_relies_on(arq: ArqRedis, name: str) -> None:
    worker = Worker(functions=[func(recorder()[1], name=JOB)], redis_pool=arq, handle_signals=False)
    assert hasattr(worker, name)
    assert missing_arq_internals(worker) == []


async def test_a_batch_worker_refuses_to_start_naming_what_arq_no_longer_has(
    arq: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(Worker, "_poll_iteration")
    with pytest.raises(RuntimeError, match=r"relies on: _poll_iteration$"):
        BatchWorker(functions=[func(recorder()[1], name=JOB)], redis_pool=arq, handle_signals=False)


# --- pool ownership -----------------------------------------------------------------------------


@pytest.mark.parametrize("runs_a_job", [False, True])
async def test_a_batch_worker_borrows_its_pool_and_closes_only_its_own(
    redis: Redis, redis_url: str, runs_a_job: bool
) -> None:
    clients_before = len(await redis.client_list())
    owner = ArqRedis(ConnectionPool.from_url(redis_url))
    held = await owner.connection_pool.get_connection()  # a connection of the borrowed pool
    await owner.connection_pool.release(held)
    runs, job = recorder()
    worker = BatchWorker(
        functions=[func(job, name=JOB)], redis_pool=owner, handle_signals=False, burst=True, poll_delay=0
    )
    if runs_a_job:
        await enqueue(owner, "one")
        await worker.async_run()
        assert runs == {"one": 1}
    await worker.close()

    assert held.is_connected
    assert await owner.ping()
    await owner.aclose(close_connection_pool=True)  # the owner closes its pool
    assert not held.is_connected

    async def all_closed() -> bool:
        return len(await redis.client_list()) == clients_before

    await eventually(all_closed, timeout=2, what="every connection of the pool and the worker closed")


# --- the embedded store -------------------------------------------------------------------------


@pytest.fixture
async def embedded_arq() -> AsyncIterator[ArqRedis]:
    # What relay.connections builds for the embedded store, with the class fakeredis's deprecated
    # FakeConnection factory returns (its DeprecationWarning is an error here).
    connections = ConnectionPool(connection_class=FakeAsyncRedisConnection, server=fakeredis.FakeServer())
    pool = ArqRedis(connections)
    yield pool
    await pool.aclose(close_connection_pool=True)


async def test_a_batch_worker_runs_on_the_embedded_store(
    embedded_arq: ArqRedis, make_worker: MakeWorker
) -> None:
    runs, job = recorder()
    await enqueue(embedded_arq, "one")
    await make_worker(embedded_arq, job, burst=True, embedded=True).async_run()
    assert runs == {"one": 1}


async def test_without_embedded_arqs_info_at_start_fails_on_the_embedded_store(
    embedded_arq: ArqRedis, make_worker: MakeWorker
) -> None:
    runs, job = recorder()
    await enqueue(embedded_arq, "one")
    with pytest.raises(ResponseError, match="unknown command 'info'"):
        await make_worker(embedded_arq, job, burst=True).async_run()
    assert runs == {}


async def test_a_job_arq_retries_goes_back_to_the_queue_and_leaves_no_lease(
    arq: ArqRedis, make_worker: MakeWorker
) -> None:
    """arq's own retry (the job raises Retry: finish without finishing, ZINCRBY on the queue) puts
    the job back in the queue; its lease goes in the same transaction."""
    runs: Counter[str] = Counter()

    async def flaky(ctx: dict[str, Any], name: str) -> None:
        runs[name] += 1
        if runs[name] == 1:
            raise Retry(defer=0.05)

    await enqueue(arq, "flaky")
    worker = make_worker(arq, flaky)
    await run_until(worker, arq, runs, {"flaky": 2}, what="the retried run")
    assert await arq.zcard(default_queue_name) == 0
