"""P2 baseline (b): a bare aiohttp client loop POSTing pre-signed webhooks at a fixed concurrency,
one connection pool, no bookkeeping: the network part of a delivery and nothing else.

    python -m tests.perf.client_loop --requests requests.jsonl --concurrency 100

Each line of the file is ``[url, headers, body]``. Prints ``{"sent", "ok", "elapsed"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


async def run(requests: list[list[object]], concurrency: int) -> dict[str, float]:
    queue = iter(requests)
    ok = 0

    async def lane(http: aiohttp.ClientSession) -> None:
        nonlocal ok
        for url, headers, body in queue:
            async with http.post(str(url), data=str(body).encode(), headers=dict(headers)) as response:  # type: ignore[call-overload]
                await response.read()
                ok += 200 <= response.status < 300

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False) as http:
        started = time.monotonic()
        await asyncio.gather(*(lane(http) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"sent": len(requests), "ok": ok, "elapsed": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", required=True)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    with open(args.requests) as lines:
        requests = [json.loads(line) for line in lines]
    print(json.dumps(asyncio.run(run(requests, args.concurrency))))


if __name__ == "__main__":
    main()
