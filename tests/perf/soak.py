"""relay's soak: does memory reach a plateau under steady load once retention deletes finished orders?

Starts a throwaway ``redis-server`` (or uses ``--redis-url``, FLUSHED at start and end), the merchant
(tests/perf/merchant.py, which also plays Midtrans Snap), one ``relay serve`` and one ``relay
worker`` with short lifetimes: RELAY_RETENTION=20, RELAY_DEAD_LETTER_RETENTION=20,
RELAY_PURCHASE_EXPIRY=10, RELAY_SWEEP_INTERVAL=1. Then, open loop, ``--rate`` orders a second for
``--minutes``: each order is a purchase through the public API; 80% are paid with a signed Midtrans
settlement on /callbacks/midtrans, the rest are left to expire; 5% are for an item whose webhook
answers 410 Gone, so they are dead-lettered. An order due while ``--concurrency`` are in flight is
shed, one sent more than 0.1 s behind its time is late; both are counted and reported beside the
failed requests, so a slow relay cannot quietly lower the offered rate.

Every ``--sample-every`` seconds (10) it prints and keeps a sample: Redis INFO used_memory,
DBSIZE, the arq queue, VmRSS of the worker and of serve, orders created / paid, merchant receipts.
At the end it compares the medians of the last third of the samples with the middle third: a
figure has plateaued when it grew less than 10% (the slope over the last third is reported too).
Exit code 0 when Redis (used_memory and DBSIZE) and worker RSS plateaued and the load was held
(at least 95% of the offered orders created), 1 otherwise. Samples and verdict go to ``--out``.

    python -m tests.perf.soak                      # 10 minutes at 100 orders/s
    python -m tests.perf.soak --quick              # 2 minutes at 50 orders/s: a smoke run
    python -m tests.perf.soak --minutes 30 --rate 200 --out /tmp/soak.json
    python -m tests.perf.soak --product /tmp/head   # relay/ and workers/ from another copy, e.g.
                                                    # git archive HEAD relay workers | tar -x -C /tmp/head

Needs redis-server on PATH unless ``--redis-url`` is given. Not collected by pytest
(tests/perf/conftest.py ignores every module here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from arq.constants import default_queue_name
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from relay.gateways.midtrans import JAKARTA, sign_notification
from tests.perf.bench import SOAK_SECTION, machine, parse_with_product, used_memory, vm
from tests.perf.harness import (
    ADMIN_TOKEN,
    PREFIX,
    PYTHON,
    RELAY,
    SERVER_KEY,
    Processes,
    cores,
    free_port,
    get_json,
    relay_env,
    wait_http,
)

HERE = Path(__file__).parent
LOAD, SERVER = ("0", "1") if cores() else (None, None)
LIFETIMES = {
    "RELAY_RETENTION": "20",
    "RELAY_DEAD_LETTER_RETENTION": "20",
    "RELAY_PURCHASE_EXPIRY": "10",
    "RELAY_SWEEP_INTERVAL": "1",
    "RELAY_ALLOW_PRIVATE_TARGETS": "true",
}
PAID_SHARE = 0.8
GONE_SHARE = 0.05
LATE_AFTER = 0.1  # seconds behind its time before a sent order counts as late
PLATEAU_GROWTH = 0.10  # last third's median over the middle third's, at most
LOAD_HELD = 0.95  # created / offered, at least
JSON = {"content-type": "application/json"}


@dataclass
class Tally:
    offered: int = 0
    created: int = 0
    paid: int = 0
    unpaid: int = 0
    late: int = 0
    shed: int = 0
    in_flight: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # "purchase 500", "callback TimeoutError"

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


@dataclass
class Catalogue:
    client_id: str
    item: str  # webhooks to the merchant's /hook (the project's webhook URL)
    gone_item: str  # webhooks to the merchant's /gone/hook: 410, dead-lettered at once


async def catalogue(url: str, merchant: str) -> Catalogue:
    """A project and its two items, made through relay's builder API like any integrator would."""
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession(base_url=url, headers=headers, raise_for_status=True) as http:

        async def put(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.put(path, json=body) as response:
                answer: dict[str, Any] = await response.json()
                return answer

        shop = await put("/api/platform/projects", {"name": "Soak shop", "webhook_url": f"{merchant}/hook"})
        project = shop["project"]
        item = {"project_id": project["id"], "name": "Premium Template", "price": 50000, "currency": "IDR"}
        healthy = await put("/api/platform/items", item)
        gone = await put("/api/platform/items", item | {"webhook_url": f"{merchant}/gone/hook"})
    return Catalogue(project["client_id"], healthy["item"]["id"], gone["item"]["id"])


def settlement(order_id: str, amount: int, currency: str) -> str:
    """A signed Midtrans settlement notification for one order (the fields harness.Data.notification
    sends, built from the purchase API's answer rather than a stored Purchase)."""
    local = datetime.now(JAKARTA).strftime("%Y-%m-%d %H:%M:%S")
    payload = {
        "transaction_time": local,
        "settlement_time": local,
        "transaction_status": "settlement",
        "transaction_id": f"soak-{order_id}",
        "status_code": "200",
        "payment_type": "bank_transfer",
        "order_id": order_id,
        "gross_amount": f"{amount}.00",
        "fraud_status": "accept",
        "currency": currency,
    }
    return json.dumps(sign_notification(payload, SERVER_KEY), separators=(",", ":"))


class Load:
    """The open-loop load: order i is due at start + i / rate, whatever happened to order i - 1."""

    def __init__(
        self, http: aiohttp.ClientSession, url: str, catalogue: Catalogue, *, concurrency: int
    ) -> None:
        self.http, self.url, self.catalogue = http, url, catalogue
        self.concurrency = concurrency
        self.tally = Tally()
        self.random = random.Random(5)  # which orders are paid and which item: not a secret

    async def run(self, *, rate: float, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        running: set[asyncio.Task[None]] = set()
        for index in range(round(rate * seconds)):
            behind = loop.time() - (start + index / rate)
            if behind < 0:
                await asyncio.sleep(-behind)
            self.tally.offered += 1
            if self.tally.in_flight >= self.concurrency:
                self.tally.shed += 1
                continue
            if behind > LATE_AFTER:
                self.tally.late += 1
            gone = self.random.random() < GONE_SHARE
            item = self.catalogue.gone_item if gone else self.catalogue.item
            task = asyncio.create_task(self.order(item, pay=self.random.random() < PAID_SHARE))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)

    async def order(self, item_id: str, *, pay: bool) -> None:
        self.tally.in_flight += 1
        try:
            body = {
                "client_id": self.catalogue.client_id,
                "item_id": item_id,
                "buyer_email": "buyer@example.com",
            }
            created = await self.post("purchase", "/api/platform/public-items/purchase", json.dumps(body))
            if created is None:
                return
            self.tally.created += 1
            if not pay:
                self.tally.unpaid += 1
                return
            paid = settlement(created["order_id"], created["amount"], created["currency"])
            if await self.post("callback", "/callbacks/midtrans", paid):
                self.tally.paid += 1
        finally:
            self.tally.in_flight -= 1

    async def post(self, kind: str, path: str, body: str) -> dict[str, Any] | None:
        """The answer's JSON on 200; None, with the failure counted, on anything else."""
        try:
            async with self.http.post(self.url + path, data=body, headers=JSON) as response:
                if response.status != 200:
                    self.tally.failures[f"{kind} {response.status}"] += 1
                    return None
                answer: dict[str, Any] = await response.json()
                return answer
        except (aiohttp.ClientError, TimeoutError) as error:
            self.tally.failures[f"{kind} {type(error).__name__}"] += 1
            return None


@dataclass
class Soak:
    redis: Redis
    merchant: str
    worker: subprocess.Popen[bytes]
    serve: subprocess.Popen[bytes]
    samples: list[dict[str, Any]] = field(default_factory=list)

    async def sample(self, t: float, tally: Tally) -> dict[str, Any]:
        for name, process in (("worker", self.worker), ("serve", self.serve)):
            if process.poll() is not None:
                raise RuntimeError(f"relay {name} exited with {process.returncode}")
        stats = await get_json(f"{self.merchant}/stats")
        row = {
            "t": round(t, 1),
            "used_memory": await used_memory(self.redis),
            "dbsize": int(await self.redis.dbsize()),
            "stored": int(await self.redis.hget(f"{PREFIX}:stats", "orders") or 0),
            "queued": int(await self.redis.zcard(default_queue_name)),
            "worker_rss_kib": vm(self.worker.pid, "VmRSS"),
            "serve_rss_kib": vm(self.serve.pid, "VmRSS"),
            "offered": tally.offered,
            "created": tally.created,
            "paid": tally.paid,
            "failed": tally.failed,
            "late": tally.late,
            "shed": tally.shed,
            "receipts": stats["count"],
            "gone": stats["gone"],
        }
        print(line(row), flush=True)
        return row

    async def watch(self, tally: Tally, *, every: float, seconds: float) -> None:
        """A sample every ``every`` seconds from the start of the load to its end."""
        start = time.monotonic()
        for step in range(1, int(seconds // every) + 1):
            await asyncio.sleep(max(0.0, start + step * every - time.monotonic()))
            self.samples.append(await self.sample(time.monotonic() - start, tally))


def line(row: dict[str, Any]) -> str:
    return (
        f"t={row['t']:5.0f}s  used_memory {row['used_memory'] / 1e6:7.2f} MB  keys {row['dbsize']:>8,}  "
        f"orders stored {row['stored']:>6,}  "
        f"queued {row['queued']:>5,}  worker {row['worker_rss_kib'] / 1024:6.1f} MiB  "
        f"serve {row['serve_rss_kib'] / 1024:6.1f} MiB  created {row['created']:>7,}  "
        f"paid {row['paid']:>7,}  receipts {row['receipts']:>7,}  gone {row['gone']:>5,}  "
        f"failed {row['failed']}  late {row['late']}  shed {row['shed']}"
    )


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per minute."""
    if len(points) < 2:
        return 0.0
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread if spread else 0.0


def plateau(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The last third's median against the middle third's: flat when it grew less than 10%."""
    third = len(samples) // 3
    if third == 0:
        return {"plateau": False, "reason": f"{len(samples)} samples: too few for thirds"}
    middle = [s[key] for s in samples[third : 2 * third]]
    last = samples[2 * third :]
    middle_median, last_median = statistics.median(middle), statistics.median(s[key] for s in last)
    growth = (last_median - middle_median) / middle_median if middle_median else float("inf")
    return {
        "middle_median": middle_median,
        "last_median": last_median,
        "growth": growth,
        "slope_per_minute": slope_per_minute([(s["t"], s[key]) for s in last]),
        "plateau": growth < PLATEAU_GROWTH,
    }


def judge(
    samples: list[dict[str, Any]], baseline: dict[str, Any], tally: Tally, rate: float
) -> dict[str, Any]:
    verdict: dict[str, Any] = {
        key: plateau(samples, key) for key in ("used_memory", "dbsize", "worker_rss_kib", "serve_rss_kib")
    }
    held = tally.created / tally.offered if tally.offered else 0.0
    verdict["load_held"] = {"created_share": held, "held": held >= LOAD_HELD}
    verdict["redis_plateau"] = verdict["used_memory"]["plateau"] and verdict["dbsize"]["plateau"]
    verdict["worker_plateau"] = verdict["worker_rss_kib"]["plateau"]
    verdict["pass"] = verdict["redis_plateau"] and verdict["worker_plateau"] and held >= LOAD_HELD
    if "last_median" in verdict["used_memory"]:
        grown = verdict["used_memory"]["last_median"] - baseline["used_memory"]
        verdict["bytes_per_order_rate"] = grown / rate
        stored = statistics.median(row["stored"] for row in samples[-max(1, len(samples) // 3) :])
        verdict["stored_orders"] = stored
        verdict["bytes_per_stored_order"] = grown / stored if stored else None
    return verdict


def render(
    command: str,
    plan: dict[str, Any],
    baseline: dict[str, Any],
    verdict: dict[str, Any],
    tally: Tally,
    ignored: list[str],
) -> str:
    def figure(key: str, unit: str, scale: float, digits: int = 2) -> str:
        found = verdict[key]
        if "last_median" not in found:
            return f"n/a | {found['reason']}"
        word = "plateau" if found["plateau"] else "**GROWING**"
        growth = f"{found['growth']:+.1%} on the middle third"
        slope = f"{found['slope_per_minute'] / scale:+,.{digits}f} {unit}/min over the last third"
        return f"{found['last_median'] / scale:,.{digits}f} {unit} | {word}: {growth}, {slope}"

    per_rate = verdict.get("bytes_per_order_rate")
    per_rate_text = "n/a" if per_rate is None else f"{per_rate:,.0f}"
    per_order = verdict.get("bytes_per_stored_order")
    per_order_text = "n/a" if per_order is None else f"{per_order:,.0f}"
    held = verdict["load_held"]
    failures = ", ".join(f"{name}: {n}" for name, n in sorted(tally.failures.items())) or "none"
    lifetimes = ", ".join(f"{k}={v}" for k, v in LIFETIMES.items() if k != "RELAY_ALLOW_PRIVATE_TARGETS")
    redis_word = "plateaued" if verdict["redis_plateau"] else "grew"
    worker_word = "plateaued" if verdict["worker_plateau"] else "grew"
    return "\n".join(
        [
            f"### relay soak: {plan['minutes']:g} min at {plan['rate']:g} orders/s "
            f"({PAID_SHARE:.0%} paid, the rest expire; {GONE_SHARE:.0%} to a 410 endpoint)",
            "",
            f"Command: `{command}`; {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; {lifetimes}",
            "",
            "| figure | at plateau (median of the last third) | verdict |",
            "|---|---|---|",
            f"| Redis bytes at plateau (INFO used_memory) | {figure('used_memory', 'MB', 1e6)} |",
            f"| Redis keys (DBSIZE) | {figure('dbsize', 'keys', 1, 0)} |",
            f"| bytes per (order/s) of load: (plateau - baseline {baseline['used_memory']:,} B) / rate "
            f"| {per_rate_text} | |",
            f"| orders stored at plateau (relay_retained_orders), Redis bytes per stored order "
            f"| {verdict.get('stored_orders', 0):,.0f} orders, {per_order_text} B each | |",
            f"| worker RSS | {figure('worker_rss_kib', 'MiB', 1024, 1)} |",
            f"| serve RSS (reported, not judged) | {figure('serve_rss_kib', 'MiB', 1024, 1)} |",
            f"| orders offered / created / paid / left unpaid "
            f"| {tally.offered:,} / {tally.created:,} / {tally.paid:,} / {tally.unpaid:,} "
            f"| {'held' if held['held'] else '**NOT HELD**'}: {held['created_share']:.1%} created |",
            f"| orders late / shed / failed | {tally.late:,} / {tally.shed:,} / {tally.failed:,} "
            f"| {failures} |",
            "",
            f"**{'PASS' if verdict['pass'] else 'FAIL'}**: Redis {redis_word}, worker RSS {worker_word}.",
        ]
        + (
            [f"The relay under test ignored {', '.join(ignored)} (not settings of its version)."]
            if ignored
            else []
        )
    )


def ignored_settings(procs: Processes) -> list[str]:
    """The lifetimes a relay without retention does not know: it warns as it starts and carries on
    (the warnings head its log), so memory cannot plateau and the report says why."""
    found: set[str] = set()
    for name in ("serve", "worker"):
        with (procs.logs / f"{name}.log").open("rb") as log:
            head = log.read(65536).decode(errors="replace")
        found.update(key for key in LIFETIMES if f"{key} is not a relay setting" in head)
    return sorted(found)


async def start_redis(procs: Processes) -> str:
    """A throwaway redis-server on a free loopback port, no persistence; its URL once it answers."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    process = procs.start("redis", [*argv, "--dir", str(procs.logs)], core=None, env=env)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    async with Redis.from_url(url) as probe:
        while True:
            try:
                await probe.ping()
                return url
            except RedisConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {procs.tail('redis')}") from None
                await asyncio.sleep(0.05)


async def main_async(args: argparse.Namespace) -> int:
    minutes, rate = (2.0, 50.0) if args.quick else (args.minutes, args.rate)
    plan = {
        "minutes": minutes,
        "rate": rate,
        "sample_every": args.sample_every,
        "concurrency": args.concurrency,
    }
    if minutes * 60 < 3 * args.sample_every:
        print("soak: the run must hold at least three samples", file=sys.stderr)
        return 2
    if not args.redis_url and not shutil.which("redis-server"):
        print("soak: redis-server is not installed; pass --redis-url", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="relay-soak-"))
    print(f"soak: {minutes:g} min at {rate:g} orders/s; logs in {work}", flush=True)
    procs = Processes(work)
    redis: Redis | None = None
    try:
        redis_url = args.redis_url or await start_redis(procs)
        redis = Redis.from_url(redis_url)
        await redis.flushdb()
        port = free_port()
        argv = [PYTHON, "-m", "tests.perf.merchant", "--port", str(port)]
        merchant_process = procs.start("merchant", argv, core=LOAD, env=relay_env(redis_url))
        merchant = f"http://127.0.0.1:{port}"
        await wait_http(f"{merchant}/stats", process=merchant_process)
        # The merchant also plays Midtrans Snap, which the purchase API asks for an invoice.
        env = relay_env(redis_url, **LIFETIMES, RELAY_MIDTRANS_API_BASE=merchant)
        serve_port = free_port()
        serve = procs.start("serve", [RELAY, "serve", "--port", str(serve_port)], core=SERVER, env=env)
        url = f"http://127.0.0.1:{serve_port}"
        await wait_http(f"{url}/readyz", process=serve)
        shop = await catalogue(url, merchant)
        worker = procs.start("worker", [RELAY, "worker"], core=SERVER, env=env)
        await asyncio.sleep(3)  # the worker's imports and first sweep
        ignored = ignored_settings(procs)
        if ignored:
            print(f"soak: the relay under test ignores {', '.join(ignored)}: expect growth", flush=True)
        soak = Soak(redis, merchant, worker, serve)
        baseline = await soak.sample(0.0, Tally())
        seconds = minutes * 60
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            load = Load(http, url, shop, concurrency=args.concurrency)
            await asyncio.gather(
                load.run(rate=rate, seconds=seconds),
                soak.watch(load.tally, every=args.sample_every, seconds=seconds),
            )
    finally:
        for _, process in reversed(list(procs.running.values())):  # Redis, started first, last
            await procs.stop(process, grace=3)
        if redis is not None:
            if args.redis_url:
                await redis.flushdb()
            await redis.aclose()
    command = " ".join(["python -m tests.perf.soak", *sys.argv[1:]])
    verdict = judge(soak.samples, baseline, load.tally, rate)
    tally = asdict(load.tally) | {"failures": dict(load.tally.failures)}
    out = {
        "command": command,
        "machine": machine(),
        "plan": plan,
        "lifetimes": LIFETIMES,
        "ignored_settings": ignored,
        "logs": str(work),
        "baseline": baseline,
        "samples": soak.samples,
        "load": tally,
        "verdict": verdict,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    report = render(command, plan, baseline, verdict, load.tally, ignored)
    print("\n" + report + f"\n\nSamples and verdict: {args.out}")
    if not (args.quick or args.product):
        write_results(report)
    return 0 if verdict["pass"] else 1


def write_results(report: str) -> None:
    """Replace the soak's section of tests/perf/RESULTS.md (the benchmark keeps it when it rewrites
    its table)."""
    results = HERE / "RESULTS.md"
    text = results.read_text() if results.exists() else ""
    at = text.find(SOAK_SECTION)
    head = (text if at < 0 else text[:at]).rstrip("\n")
    results.write_text(f"{head}\n\n{SOAK_SECTION}\n\n{report}\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the steady load (default 10)")
    parser.add_argument("--rate", type=float, default=100.0, help="orders offered per second (default 100)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 minutes at 50 orders/s")
    parser.add_argument(
        "--redis-url",
        default="",
        help="use this Redis, FLUSHED at start and end (default: a throwaway redis-server)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "soak.json", help="samples and verdict (JSON)")
    parser.add_argument(
        "--sample-every", type=float, default=10.0, help="seconds between samples (default 10)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=200, help="orders in flight at most; more are shed"
    )
    args = parse_with_product(parser)
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
