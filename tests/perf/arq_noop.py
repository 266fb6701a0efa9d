"""P2 baseline (a): arq's own throughput for a no-op job, with the relay worker's exact settings
(``workers.worker.arq_settings``: max_jobs, poll_delay, job_timeout, keep_result, ...), minus the
delivery. The job only counts; when the N-th job runs, the first and last job times are written
to ``--out`` (monotonic clock).

    RELAY_* env as for `relay worker` python -m tests.perf.arq_noop --expect N --out times.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from arq.worker import Worker, func

from relay.connections import open_connections
from relay.logs import configure_logging
from relay.settings import Settings
from tests.perf.loop import same_event_loop_as_relay

try:
    from workers.worker import arq_settings
except ImportError:  # `bench --product` with a copy from before arq_settings, which had worker_options
    arq_settings = None

NOOP = "bench_noop"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    settings = Settings()
    configure_logging(settings.log_format)
    seen = {"count": 0, "first": 0.0}

    async def noop(ctx: dict[str, Any]) -> None:
        now = time.monotonic()
        seen["count"] += 1
        if seen["count"] == 1:
            seen["first"] = now
        if seen["count"] == args.expect:
            Path(args.out).write_text(json.dumps({"first": seen["first"], "last": now}))

    async def run() -> None:
        connections = open_connections(settings)
        if arq_settings is not None:
            options = arq_settings(settings) | {"redis_pool": connections.arq}
        else:
            from workers.worker import worker_options  # type: ignore[attr-defined]

            options = worker_options(settings, connections)
        options |= {
            "functions": [func(noop, name=NOOP)],
            "cron_jobs": [],
            "on_startup": None,
            "on_shutdown": None,
        }
        worker = Worker(**options)
        try:
            with suppress(asyncio.CancelledError):
                await worker.async_run()
        finally:
            await worker.close()
            await connections.close()

    same_event_loop_as_relay()  # the same event loop as `relay worker`
    asyncio.run(run())


if __name__ == "__main__":
    main()
