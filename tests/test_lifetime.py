"""workers/lifetime.py: a worker is supervised through Redis outages and stops when asked, whatever
Redis does; closing it always runs its on_shutdown."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.processes import Processes, free_port, relay_env
from workers.lifetime import close_worker, supervise_worker


class StoppedShort:
    """An arq worker whose close() raises ``error`` before reaching on_shutdown."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.ctx: dict[str, Any] = {}
        self.shut = 0

    async def on_shutdown(self, ctx: dict[str, Any]) -> None:
        self.shut += 1

    async def close(self) -> None:
        raise self.error


async def test_a_close_cut_short_by_redis_still_shuts_down() -> None:
    worker = StoppedShort(RedisConnectionError("gone"))
    await close_worker(worker)  # type: ignore[arg-type]
    assert worker.shut == 1


async def test_a_cancelled_close_still_shuts_down_and_stays_cancelled() -> None:
    worker = StoppedShort(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await close_worker(worker)  # type: ignore[arg-type]
    assert worker.shut == 1


class LostRedis:
    """A worker whose Redis is gone: its run fails at once, as arq's does."""

    def __init__(self) -> None:
        self.ctx: dict[str, Any] = {}
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.allow_pick_jobs = True
        self.on_shutdown = None
        self.closed = False

    async def async_run(self) -> None:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    async def close(self) -> None:
        self.closed = True


async def test_a_stop_during_the_backoff_between_two_workers_ends_the_supervisor_at_once() -> None:
    made: list[LostRedis] = []

    def make() -> Any:
        made.append(LostRedis())
        return made[-1]

    stop = asyncio.Event()
    supervisor = asyncio.create_task(supervise_worker(make, stop=stop, drain=30))
    while len(made) < 3:  # restarting: 0.5 s, then 1 s between workers
        await asyncio.sleep(0.05)
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(supervisor, timeout=2)
    assert time.monotonic() - started < 0.5
    assert all(worker.closed for worker in made)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.timeout(60)
async def test_relay_worker_stops_within_seconds_while_redis_is_down(tmp_path: Path, sig: int) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = relay_env(
        nowhere, RELAY_WORKER_METRICS_PORT=str(free_port()), RELAY_WORKER_METRICS_HOST="127.0.0.1"
    )
    processes = Processes(tmp_path, env)
    try:
        worker = await processes.start("worker", "worker")
        log = tmp_path / "worker.log"
        deadline = time.monotonic() + 30
        while log.read_text(errors="replace").count("worker_lost_redis") < 2:  # in its restart loop
            assert worker.returncode is None, processes.tail()
            assert time.monotonic() < deadline, processes.tail()
            await asyncio.sleep(0.1)
        started = time.monotonic()
        worker.send_signal(sig)
        code = await asyncio.wait_for(worker.wait(), timeout=10)
        assert time.monotonic() - started < 5, processes.tail()
        assert code == 0, processes.tail()
        assert "Traceback" not in log.read_text(errors="replace"), processes.tail()
    finally:
        await processes.kill_all()
