"""relay's performance benchmark (issue 5). Starts everything on loopback, pinned with ``taskset``
(load generator, merchant and baselines' clients on core 0; the process under test on core 1),
measures each figure beside a baseline taken in the same run, repeats, and prints medians.

    python -m tests.perf.bench            # 3 repetitions, about 5 minutes
    python -m tests.perf.bench --quick    # 1 repetition, smaller N, about a minute

Needs: Redis (``--redis-url``, default db 10 of 127.0.0.1:6379, FLUSHED), ``wrk`` (apt-get install
wrk) and the ``bench`` extra (``pip install -e '.[bench]'``: celery, requests). Writes the table
to tests/perf/RESULTS.md unless ``--only`` is given. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import arq
from redis.asyncio import Redis

from relay.errors import REDIS_DOWN
from relay.models import OrderKind
from tests.perf import harness
from tests.perf.harness import (
    ADMIN_TOKEN,
    CELERY,
    PYTHON,
    RELAY,
    Data,
    Processes,
    cores,
    free_port,
    get_json,
    pinned,
    post,
    relay_env,
    wait_http,
)

HERE = Path(__file__).parent
LUA = HERE / "wrk_bodies.lua"
LOAD, SERVER = ("0", "1") if cores() else (None, None)
# P2, P3, P5 and end-to-end measure one merchant taking everything: lift the per-endpoint cap to
# max_jobs there (P2 also runs once with the default cap, and P4 measures the cap's purpose).
UNCAPPED = {"RELAY_WORKER_HOST_CONCURRENCY": "100"}
WORKER_COUNTS = (1, 2, 4)  # P6: workers draining the backlog
# P4: hanging hosts, each its own address on loopback (one merchant process listens on them all).
HANGING_HOSTS = [f"127.0.1.{n}" for n in range(1, 51)] + [f"127.0.2.{n}" for n in range(1, 21)]
# P4's cases of many hanging endpoints: (name, hosts, one project for them all), 10 events each.
HANGING_CASES = (
    ("1 host", HANGING_HOSTS[:1], False),
    ("15 hosts, 15 projects", HANGING_HOSTS[:15], False),
    ("50 hosts, 50 projects", HANGING_HOSTS[:50], False),
    ("20 hostnames, 1 project", HANGING_HOSTS[50:], True),
)
HANGING_EVENTS = 10
# P6: the commands a delivery sends to Redis (scripts and transactions count what runs in them).
OUTER_COMMANDS = ("evalsha", "eval", "exec", "hgetall", "mget")


@dataclass
class Plan:
    reps: int
    p1_seconds: int
    p1_connections: int
    p1_bodies: int  # per measured run: more than the relay can take in p1_seconds
    p1_warm: int
    p2_events: int
    p4_events: int
    p4_timeout: float
    p5_events: int
    e2e_rate: float
    e2e_count: int


FULL = Plan(3, 5, 64, 40000, 1500, 5000, 3000, 5.0, 10000, 20.0, 200)
QUICK = Plan(1, 3, 64, 24000, 1000, 2000, 2000, 5.0, 3000, 20.0, 60)


@dataclass
class Bench:
    plan: Plan
    redis_url: str
    data: Data
    procs: Processes
    work: Path
    merchant: str = ""
    hang_merchant: str = ""
    hang_port: int = 0
    samples: dict[str, list[float]] = field(default_factory=dict)

    def busy(self) -> None:
        """Other work on the machine (1-minute load average, taken as each repetition starts): the
        ratios are taken within a run, but a neighbour that starts mid-run still skews them."""
        self.add("load_average_1m", os.getloadavg()[0])

    def add(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)
        print(f"    {name} = {value:,.3f}", flush=True)

    def add_latency(self, name: str, result: dict[str, Any]) -> None:
        """``name``_p50_ms and ``name``_p99_ms of a ``wrk`` result."""
        self.add(f"{name}_p50_ms", result["p50_us"] / 1000)
        self.add(f"{name}_p99_ms", result["p99_us"] / 1000)

    def env(self, **extra: str) -> dict[str, str]:
        return relay_env(self.redis_url, **extra)

    # --- helpers ----------------------------------------------------------------------------

    async def wrk(
        self,
        url: str,
        bodies: Path | None,
        seconds: int,
        *,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST each of ``bodies``' lines in turn, or without them GET ``url``, with ``headers``."""
        argv = ["wrk", "-t1", f"-c{self.plan.p1_connections}", f"-d{seconds}s"]
        argv += ["--timeout", "10s"]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        argv += ["-s", str(LUA), url, *(["--", str(bodies)] if bodies is not None else [])]
        process = await asyncio.create_subprocess_exec(
            *pinned(LOAD, argv), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await process.communicate()
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if process.returncode != 0 or not lines:
            raise RuntimeError(f"wrk failed: {err.decode()[-500:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        errors = sum(result[key] for key in ("status_errors", "connect", "read", "write", "timeout"))
        result["ok"] = result["requests"] - errors
        result["rps"] = result["ok"] / (result["duration_us"] / 1e6)
        return result

    async def merchant_stats(self, base: str | None = None) -> dict[str, Any]:
        stats: dict[str, Any] = await get_json(f"{base or self.merchant}/stats")
        return stats

    async def wait_merchant(self, count: int, *, process: subprocess.Popen[bytes], timeout: float) -> float:
        """Wait until the merchant has ``count`` webhooks; deliveries per second first -> last."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.merchant_stats()
            if stats["count"] >= count:
                return (stats["count"] - 1) / max(stats["last"] - stats["first"], 1e-9)
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[:4]} exited: {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"merchant has {stats['count']}/{count} after {timeout}s")
            await asyncio.sleep(0.05)

    def write_lines(self, name: str, lines: list[str]) -> Path:
        path = self.work / name
        path.write_text("\n".join(lines) + "\n")
        return path

    async def start_relay(
        self, command: str, *, name: str, **env: str
    ) -> tuple[subprocess.Popen[bytes], str]:
        if command == "serve":
            port = free_port()
            process = self.procs.start(
                name, [RELAY, "serve", "--port", str(port)], core=SERVER, env=self.env(**env)
            )
            url = f"http://127.0.0.1:{port}"
            await wait_http(f"{url}/readyz", process=process)
            return process, url
        process = self.procs.start(name, [RELAY, "worker"], core=SERVER, env=self.env(**env))
        return process, ""

    # --- P1 ingress ---------------------------------------------------------------------------

    async def p1(self) -> None:
        """The floor once per repetition, and ``relay serve`` settling each kind of order: item
        purchases (the P1 of the table), shop payments and subscriptions' first payments."""
        plan = self.plan
        print("P1 ingress: relay serve (each order kind) vs bare aiohttp + one SET, same wrk", flush=True)
        catalogue = await self.data.catalogue([f"{self.merchant}/hook"])
        for rep in range(plan.reps):
            self.busy()
            files: dict[str, tuple[Path, Path]] = {}
            for kind in OrderKind:
                warm = await self.data.orders(kind, catalogue, plan.p1_warm)
                measured = await self.data.orders(kind, catalogue, plan.p1_bodies)
                files[kind.value] = (
                    self.write_lines(
                        f"p1-{kind}-warm-{rep}.jsonl", [self.data.notification(p) for p in warm]
                    ),
                    self.write_lines(f"p1-{kind}-{rep}.jsonl", [self.data.notification(p) for p in measured]),
                )
            runs = ["floor", *(kind.value for kind in OrderKind)]
            results: dict[str, dict[str, Any]] = {}
            for which in runs if rep % 2 == 0 else runs[::-1]:
                warm_file, body_file = files["item" if which == "floor" else which]
                if which != "floor":
                    process, url = await self.start_relay("serve", name=f"p1-serve-{which}-{rep}")
                else:
                    process, url = await self.start_floor(f"p1-floor-{rep}")
                await self.wrk(f"{url}/callbacks/midtrans", warm_file, 1)
                before = await self.data.events.outbox_size()
                result = await self.wrk(f"{url}/callbacks/midtrans", body_file, plan.p1_seconds)
                await asyncio.sleep(0.3)
                await self.procs.stop(process)
                if which != "floor" and result["requests"] > plan.p1_bodies:
                    # (the floor may wrap around: it does the same parse and SET either way)
                    print("    warning: relay used every body (some were duplicates); raise p1_bodies")
                if which != "floor":
                    stored = await self.data.events.outbox_size() - before
                    if stored < result["ok"]:
                        raise RuntimeError(f"relay answered {result['ok']} ok but stored {stored} events")
                results[which] = result
            self.add("p1_relay_rps", results["item"]["rps"])
            self.add("p1_floor_rps", results["floor"]["rps"])
            self.add("p1_ratio", results["item"]["rps"] / results["floor"]["rps"])
            for kind in ("payment", "subscription"):
                self.add(f"p1_{kind}_rps", results[kind]["rps"])
                self.add(f"p1_{kind}_ratio", results[kind]["rps"] / results["floor"]["rps"])
            self.add_latency("p1_relay", results["item"])
            self.add_latency("p1_floor", results["floor"])

    # --- P1 with acknowledgements replicated (RELAY_REDIS_MIN_REPLICAS_ACK=1) ---------------------

    async def p1_replicated(self) -> None:
        """P1's item settlements with a replica of the bench Redis attached: the floor, ``relay
        serve`` as P1 runs it, and ``relay serve`` answering 200 only once the replica confirmed
        (RELAY_REDIS_MIN_REPLICAS_ACK=1: a WAIT per round of callbacks), in alternating order."""
        plan = self.plan
        print("P1 replicated: relay serve with RELAY_REDIS_MIN_REPLICAS_ACK=1 vs 0 vs the floor", flush=True)
        replica = await self.start_replica()
        try:
            catalogue = await self.data.catalogue([f"{self.merchant}/hook"])
            runs = ["floor", "ack0", "ack1"]
            for rep in range(plan.reps):
                self.busy()
                results: dict[str, dict[str, Any]] = {}
                for which in runs if rep % 2 == 0 else runs[::-1]:
                    warm = await self.data.orders(OrderKind.ITEM, catalogue, plan.p1_warm)
                    measured = await self.data.orders(OrderKind.ITEM, catalogue, plan.p1_bodies)
                    warm_file = self.write_lines(
                        f"p1r-{which}-warm-{rep}.jsonl", [self.data.notification(p) for p in warm]
                    )
                    body_file = self.write_lines(
                        f"p1r-{which}-{rep}.jsonl", [self.data.notification(p) for p in measured]
                    )
                    if which == "floor":
                        process, url = await self.start_floor(f"p1r-floor-{rep}")
                    else:
                        process, url = await self.start_relay(
                            "serve", name=f"p1r-serve-{which}-{rep}", RELAY_REDIS_MIN_REPLICAS_ACK=which[-1]
                        )
                    await self.wrk(f"{url}/callbacks/midtrans", warm_file, 1)
                    result = await self.wrk(f"{url}/callbacks/midtrans", body_file, plan.p1_seconds)
                    await asyncio.sleep(0.3)
                    await self.procs.stop(process)
                    results[which] = result
                self.add("p1r_floor_rps", results["floor"]["rps"])
                self.add("p1r_ack0_rps", results["ack0"]["rps"])
                self.add("p1r_ack1_rps", results["ack1"]["rps"])
                self.add("p1r_ratio", results["ack1"]["rps"] / results["floor"]["rps"])
                self.add("p1r_wait_cost", results["ack1"]["rps"] / results["ack0"]["rps"])
                self.add_latency("p1r_ack1", results["ack1"])
                self.add_latency("p1r_ack0", results["ack0"])
        finally:
            await self.procs.stop(replica)

    async def start_floor(self, name: str) -> tuple[subprocess.Popen[bytes], str]:
        """The ingress floor (``tests/perf/floor.py``) on the server core, once it answers."""
        port = free_port()
        argv = [PYTHON, "-m", "tests.perf.floor", "--port", str(port), "--redis", self.redis_url]
        process = self.procs.start(name, argv, core=SERVER, env=self.env())
        url = f"http://127.0.0.1:{port}"
        await wait_http(f"{url}/readyz", process=process)
        return process, url

    async def start_replica(self) -> subprocess.Popen[bytes]:
        """A ``redis-server`` replicating the bench Redis, on core 0 with the load generator, once
        it is in sync. (It replicates the whole server, every database.)"""
        parts = urlsplit(self.redis_url)
        port, place = free_port(), self.work / "replica"
        place.mkdir(exist_ok=True)
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(place)]
        argv += ["--save", "", "--appendonly", "no"]
        argv += ["--replicaof", parts.hostname or "127.0.0.1", str(parts.port or 6379)]
        if parts.password:
            argv += ["--masterauth", unquote(parts.password)]
        process = self.procs.start("replica", argv, core=LOAD, env=self.env())
        deadline = time.monotonic() + 60
        async with Redis(port=port, decode_responses=True) as replica:
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    if (await replica.info("replication")).get("master_link_status") == "up":
                        return process
                except REDIS_DOWN:  # still starting
                    pass
                await asyncio.sleep(0.2)
        tail = self.procs.tail("replica")
        raise RuntimeError(f"the bench Redis's replica did not sync within 60 s:\n{tail}")

    # --- P7 builder read, by credential -------------------------------------------------------

    async def p7(self) -> None:
        """``GET /api/platform/projects/{id}`` on one ``relay serve`` with the admin token and with
        one of the project's API keys (made through the API), alternating which goes first; on P1's
        connections, every request of which must answer 200."""
        plan = self.plan
        print(
            f"P7 builder read: project API key vs admin token, same relay, wrk -c{plan.p1_connections}",
            flush=True,
        )
        await self.data.flush()
        project = (await self.data.catalogue([f"{self.merchant}/hook"])).project
        for rep in range(plan.reps):
            self.busy()
            process, url = await self.start_relay("serve", name=f"p7-serve-{rep}")
            read = f"{url}/api/platform/projects/{project.id}"
            tokens = {"admin": ADMIN_TOKEN, "key": await self.api_key(url, project.id)}
            runs = list(tokens) if rep % 2 == 0 else list(tokens)[::-1]
            results: dict[str, dict[str, Any]] = {}
            for which in runs:
                headers = {"Authorization": f"Bearer {tokens[which]}"}
                await self.builder_read(read, headers)
                await self.wrk(read, None, 1, headers=headers)
                results[which] = await self.wrk(read, None, plan.p1_seconds, headers=headers)
                if results[which]["ok"] < results[which]["requests"]:
                    raise RuntimeError(f"P7 {which}: {results[which]} (requests that were not 200)")
            await self.procs.stop(process)
            self.add("p7_admin_rps", results["admin"]["rps"])
            self.add("p7_key_rps", results["key"]["rps"])
            self.add("p7_ratio", results["key"]["rps"] / results["admin"]["rps"])
            self.add_latency("p7_admin", results["admin"])
            self.add_latency("p7_key", results["key"])

    async def api_key(self, url: str, project_id: str) -> str:
        """A new API key of the project, made with the admin token (its ``rk_...`` material)."""
        made = f"{url}/api/platform/projects/{project_id}/api-keys"
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.post(made, json={"name": "bench"}) as response,
        ):
            if response.status != 200:
                raise RuntimeError(f"creating an API key answered {response.status}: {await response.text()}")
            key: str = (await response.json())["api_key"]["key"]
            return key

    async def builder_read(self, url: str, headers: dict[str, str]) -> None:
        """One read of ``url`` with ``headers``, which must answer 200."""
        async with aiohttp.ClientSession(headers=headers) as http, http.get(url) as response:
            if response.status != 200:
                raise RuntimeError(f"GET {url} answered {response.status}: {await response.text()}")

    # --- P2 delivery, P3 peer -------------------------------------------------------------------

    async def p2_p3(self) -> None:
        plan = self.plan
        n = plan.p2_events
        print(
            f"P2/P3 delivery of {n} queued events: relay worker, arq no-op, aiohttp loop, Celery", flush=True
        )
        for rep in range(plan.reps):
            self.busy()
            await self.data.flush()
            catalogue = await self.data.catalogue([f"{self.merchant}/hook"])
            purchases = await self.data.purchases(catalogue.items, n)
            await self.data.ingest(purchases)
            rows = await self.data.signed_requests(catalogue, purchases)
            request_file = self.write_lines(f"p2-requests-{rep}.jsonl", [json.dumps(row) for row in rows])

            await post(f"{self.merchant}/reset")
            worker, _ = await self.start_relay("worker", name=f"p2-worker-{rep}", **UNCAPPED)
            relay_rate = await self.wait_merchant(n, process=worker, timeout=120)
            await self.procs.stop(worker)

            # The same again with the default per-endpoint cap (RELAY_WORKER_HOST_CONCURRENCY):
            # one merchant taking the whole backlog is one endpoint.
            await self.data.flush()
            catalogue = await self.data.catalogue([f"{self.merchant}/hook"])
            await self.data.ingest(await self.data.purchases(catalogue.items, n))
            await post(f"{self.merchant}/reset")
            worker, _ = await self.start_relay("worker", name=f"p2-capped-{rep}")
            capped_rate = await self.wait_merchant(n, process=worker, timeout=180)
            await self.procs.stop(worker)

            await self.data.flush()
            noop_rate = await self.arq_noop(n, rep)

            await post(f"{self.merchant}/reset")
            argv = [PYTHON, "-m", "tests.perf.client_loop", "--requests", str(request_file)]
            argv += ["--concurrency", "100"]
            loop = self.procs.start(f"p2-client-{rep}", argv, core=SERVER, env=self.env())
            client_rate = await self.wait_merchant(n, process=loop, timeout=120)
            await self.procs.stop(loop)

            await self.data.flush()
            celery_rate = await self.celery(rows, rep, catalogue.project.webhook_secret)

            self.add("p2_relay_rate", relay_rate)
            self.add("p2_capped_rate", capped_rate)
            self.add("p2_ratio_capped", capped_rate / relay_rate)
            self.add("p2_noop_rate", noop_rate)
            self.add("p2_client_rate", client_rate)
            self.add("p3_celery_rate", celery_rate)
            self.add("p2_ratio_noop", relay_rate / noop_rate)
            self.add("p2_ratio_client", relay_rate / client_rate)
            self.add("p3_ratio", relay_rate / celery_rate)

    # --- P6 Redis cost per delivery, by the number of workers -------------------------------------

    async def p6(self) -> None:
        """Redis's own cost of delivering a backlog with 1, 2 and 4 `relay worker` processes: its
        main thread's CPU time (INFO cpu) and its command statistics (INFO commandstats, reset
        before the drain) per delivered event."""
        n = self.plan.p2_events
        print(f"P6 Redis cost per delivery: {n} queued events drained by 1, 2 and 4 workers", flush=True)
        redis = self.data.redis
        for rep in range(self.plan.reps):
            for count in WORKER_COUNTS:
                self.busy()
                await self.data.flush()
                catalogue = await self.data.catalogue([f"{self.merchant}/hook"])
                await self.data.ingest(await self.data.purchases(catalogue.items, n))
                await post(f"{self.merchant}/reset")
                await redis.config_resetstat()
                cpu_before = redis_cpu(await redis.info("cpu"))
                workers = [
                    (await self.start_relay("worker", name=f"p6-{count}-{index}-{rep}", **UNCAPPED))[0]
                    for index in range(count)
                ]
                await self.wait_merchant(n, process=workers[0], timeout=180)
                cpu = redis_cpu(await redis.info("cpu")) - cpu_before
                stats = await redis.info("commandstats")
                for worker in workers:
                    await self.procs.stop(worker)
                usec = sum(int(row["usec"]) for row in stats.values())
                scripts = sum(
                    int(stats[name]["usec"]) for name in ("cmdstat_evalsha", "cmdstat_eval") if name in stats
                )
                exists = int(stats.get("cmdstat_exists", {}).get("calls", 0))
                top = sorted(stats.items(), key=lambda row: -int(row[1]["usec"]))[:10]
                breakdown = ", ".join(
                    f"{name.removeprefix('cmdstat_')} {int(row['calls']) / n:.2f}x "
                    f"{int(row['usec']) / n:.1f} us"
                    for name, row in top
                )
                print(f"    {count} worker(s), per delivery: {breakdown}", flush=True)
                # Each command once: scripts and transactions with what runs inside them, and the
                # delivery's reads sent on their own (the event, its project and item).
                outer = sum(int(stats.get(f"cmdstat_{name}", {}).get("usec", 0)) for name in OUTER_COMMANDS)
                self.add(f"p6_outer_us_{count}w", outer / n)
                self.add(f"p6_cpu_us_{count}w", cpu * 1e6 / n)
                self.add(f"p6_commandstats_us_{count}w", usec / n)
                self.add(f"p6_script_us_{count}w", scripts / n)
                self.add(f"p6_exists_calls_{count}w", exists / n)

    async def arq_noop(self, n: int, rep: int) -> float:
        pool = self.data.arq
        for start in range(0, n, 200):
            await asyncio.gather(*(pool.enqueue_job("bench_noop") for _ in range(start, min(n, start + 200))))
        out = self.work / f"noop-{rep}.json"
        argv = [PYTHON, "-m", "tests.perf.arq_noop", "--expect", str(n), "--out", str(out)]
        process = self.procs.start(f"p2-noop-{rep}", argv, core=SERVER, env=self.env())
        deadline = time.monotonic() + 120
        while not out.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"arq no-op worker did not finish: {self.procs.tail(f'p2-noop-{rep}')}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        times = json.loads(out.read_text())
        await self.procs.stop(process)
        return (n - 1) / max(times["last"] - times["first"], 1e-9)

    async def celery(self, rows: list[list[Any]], rep: int, secret: str) -> float:
        env = self.env(BENCH_BROKER=self.redis_url)
        script = (
            "import json, sys\n"
            "from tests.perf.celery_peer import deliver\n"
            "for line in open(sys.argv[1]):\n"
            "    url, headers, body = json.loads(line)\n"
            "    deliver.apply_async((url, body, sys.argv[2], headers['webhook-id']))\n"
        )
        request_file = self.work / f"p2-requests-{rep}.jsonl"
        subprocess.run([PYTHON, "-c", script, str(request_file), secret], env=env, check=True)
        await post(f"{self.merchant}/reset")
        argv = [CELERY, "-A", "tests.perf.celery_peer", "worker", "--pool", "prefork", "--concurrency", "1"]
        argv += ["--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        worker = self.procs.start(f"p3-celery-{rep}", argv, core=SERVER, env=env)
        rate = await self.wait_merchant(len(rows), process=worker, timeout=300)
        await self.procs.stop(worker)
        return rate

    # --- P4 isolation -------------------------------------------------------------------------

    async def p4(self) -> None:
        plan = self.plan
        healthy_n = plan.p4_events * 9 // 10
        print(
            f"P4 isolation: {healthy_n} healthy events alone, then with {plan.p4_events - healthy_n} "
            f"to a hanging endpoint (RELAY_DELIVERY_TIMEOUT={plan.p4_timeout:g})",
            flush=True,
        )
        env = {"RELAY_DELIVERY_TIMEOUT": f"{plan.p4_timeout:g}"}
        for rep in range(plan.reps):
            rates = {}
            for mixed in (False, True):
                await self.data.flush()
                catalogue = await self.data.catalogue([f"{self.merchant}/hook", f"{self.hang_merchant}/hook"])
                healthy, hanging = catalogue.items
                items = [healthy] * 9 + [hanging] if mixed else [healthy]
                purchases = await self.data.purchases(items, plan.p4_events if mixed else healthy_n)
                await self.data.ingest(purchases)
                await post(f"{self.merchant}/reset")
                worker, _ = await self.start_relay("worker", name=f"p4-worker-{rep}-{int(mixed)}", **env)
                rates[mixed] = await self.wait_merchant(healthy_n, process=worker, timeout=300)
                await self.procs.stop(worker, grace=1)
            self.add("p4_alone_rate", rates[False])
            self.add("p4_mixed_rate", rates[True])
            self.add("p4_ratio", rates[True] / rates[False])
            for index, (name, hosts, one_project) in enumerate(HANGING_CASES):
                rate = await self.p4_hanging(hosts, one_project=one_project, healthy_n=healthy_n, rep=rep)
                print(f"    {name}: healthy {rate:,.0f}/s", flush=True)
                self.add(f"p4_case{index}_ratio", rate / rates[False])

    async def p4_hanging(self, hosts: list[str], *, one_project: bool, healthy_n: int, rep: int) -> float:
        """The healthy merchant's rate while ``hosts`` hang, HANGING_EVENTS events each, in projects
        of their own (or all in one), the events shuffled together."""
        await self.data.flush()
        healthy = (await self.data.catalogue([f"{self.merchant}/hook"])).items
        urls = [f"http://{host}:{self.hang_port}/hook" for host in hosts]
        if one_project:
            dead = (await self.data.catalogue(urls, project_id="dead")).items
        else:
            dead = [
                (await self.data.catalogue([url], project_id=f"dead{index}")).items[0]
                for index, url in enumerate(urls)
            ]
        purchases = await self.data.purchases(healthy, healthy_n)
        purchases += await self.data.purchases(dead, HANGING_EVENTS * len(dead))
        random.Random(rep).shuffle(purchases)
        await self.data.ingest(purchases)
        await post(f"{self.merchant}/reset")
        env = {"RELAY_DELIVERY_TIMEOUT": f"{self.plan.p4_timeout:g}"}
        worker, _ = await self.start_relay("worker", name=f"p4-hosts-{len(hosts)}-{rep}", **env)
        rate = await self.wait_merchant(healthy_n, process=worker, timeout=300)
        await self.procs.stop(worker, grace=1)
        return rate

    # --- P5 footprint -------------------------------------------------------------------------

    async def p5(self) -> None:
        n = self.plan.p5_events
        print(f"P5 footprint: {n} queued events, then one worker draining them", flush=True)
        redis = self.data.redis
        await self.data.flush()
        catalogue = await self.data.catalogue([f"{self.merchant}/hook"])
        purchases = await self.data.purchases(catalogue.items, n)
        sample = purchases[:: max(1, n // 200)]
        purchase_before = [await memory(redis, self.data.store.keys.purchase(p.order_id)) for p in sample]
        used_before = await used_memory(redis)
        await self.data.ingest(purchases)
        used_after = await used_memory(redis)
        keys = self.data.store.keys
        event_ids = [(await self.data.store.get_purchase(p.order_id)).event_id for p in sample]  # type: ignore[union-attr]
        purchase_after = [await memory(redis, keys.purchase(p.order_id)) for p in sample]
        event_bytes = [await memory(redis, keys.event(e)) for e in event_ids if e]
        job_bytes = [await memory(redis, f"arq:job:{e}") for e in event_ids if e]
        attempts = [await memory(redis, keys.attempts(e)) for e in event_ids if e]
        outbox = await memory(redis, keys.outbox)
        queue = await memory(redis, "arq:queue")
        parts = {
            "event hash": statistics.mean(event_bytes),
            "purchase hash growth": statistics.mean(purchase_after) - statistics.mean(purchase_before),
            "attempt log (none yet)": statistics.mean(attempts),
            "outbox ZSET share": outbox / n,
            "arq job key": statistics.mean(job_bytes),
            "arq queue ZSET share": queue / n,
        }
        per_event = sum(parts.values())
        self.add("p5_bytes_per_event", per_event)
        self.add("p5_used_memory_per_event", (used_after - used_before) / n)
        self.footprint = parts
        await post(f"{self.merchant}/reset")
        worker, _ = await self.start_relay("worker", name="p5-worker", **UNCAPPED)
        peak, deadline = 0, time.monotonic() + 300
        while (await self.merchant_stats())["count"] < n:
            peak = max(peak, vm(worker.pid, "VmRSS"))
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker exited during P5")
            await asyncio.sleep(0.05)
        hwm = vm(worker.pid, "VmHWM")
        await self.procs.stop(worker)
        self.add("p5_worker_rss_mib", max(peak, hwm) / 1024)

    # --- end to end ---------------------------------------------------------------------------

    async def e2e(self) -> None:
        plan = self.plan
        print(
            f"E2E: {plan.e2e_count} callbacks at {plan.e2e_rate:g}/s, callback -> merchant receipt",
            flush=True,
        )
        await self.data.flush()
        catalogue = await self.data.catalogue([f"{self.merchant}/hook"])
        purchases = await self.data.purchases(catalogue.items, plan.e2e_count)
        bodies = [self.data.notification(p) for p in purchases]
        serve, url = await self.start_relay("serve", name="e2e-serve")
        worker, _ = await self.start_relay("worker", name="e2e-worker", **UNCAPPED)
        await asyncio.sleep(2)  # the worker's startup (imports, first poll)
        await post(f"{self.merchant}/reset")
        sent: dict[str, float] = {}
        async with aiohttp.ClientSession() as http:

            async def one(purchase_order: str, body: str) -> None:
                sent[purchase_order] = time.monotonic()
                async with http.post(
                    f"{url}/callbacks/midtrans", data=body, headers={"content-type": "application/json"}
                ) as response:
                    if response.status != 200:
                        raise RuntimeError(f"callback answered {response.status}")

            tasks = []
            start = time.monotonic()
            for index, (purchase, body) in enumerate(zip(purchases, bodies, strict=True)):
                await asyncio.sleep(max(0.0, start + index / plan.e2e_rate - time.monotonic()))
                tasks.append(asyncio.create_task(one(purchase.order_id, body)))
            await asyncio.gather(*tasks)
        await self.wait_merchant(len(purchases), process=worker, timeout=60)
        receipts = await get_json(f"{self.merchant}/receipts")
        latencies = sorted((receipts[order] - sent[order]) * 1000 for order in sent)
        await self.procs.stop(worker)
        await self.procs.stop(serve)
        self.add("e2e_p50_ms", percentile(latencies, 50))
        self.add("e2e_p99_ms", percentile(latencies, 99))


def redis_cpu(info: dict[str, Any]) -> float:
    """Seconds of CPU Redis's main thread has used (where commands run)."""
    user = info.get("used_cpu_user_main_thread", info["used_cpu_user"])
    system = info.get("used_cpu_sys_main_thread", info["used_cpu_sys"])
    return float(user) + float(system)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def memory(redis: Redis, key: str) -> int:
    return int(await redis.memory_usage(key, samples=0) or 0)


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


def vm(pid: int, field_name: str) -> int:
    """A /proc/<pid>/status field in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


# --- report -----------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    redis_version = (
        subprocess.run(["redis-cli", "--version"], capture_output=True, text=True, check=False).stdout.strip()
        if shutil.which("redis-cli")
        else "?"
    )
    import aiohttp as aiohttp_module
    import redis as redis_module

    return (
        f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {redis_version}, aiohttp {aiohttp_module.__version__}, "
        f"arq {arq.VERSION}, redis-py {redis_module.__version__}"
    )


def table(bench: Bench) -> str:
    m: Callable[[str], float] = lambda name: statistics.median(bench.samples[name])  # noqa: E731
    have = bench.samples.keys()
    rows = [
        "| metric | relay | baseline | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]

    def verdict(ok: bool) -> str:
        return "pass" if ok else "**FAIL**"

    if "p1_ratio" in have:
        rows.append(
            "| P1 ingress: verified, stored Midtrans settlements/s (1 `relay serve`) "
            f"| {m('p1_relay_rps'):,.0f} "
            f"| {m('p1_floor_rps'):,.0f} (floor: bare aiohttp + 1 SET) | {m('p1_ratio'):.2f} | >= 0.8 "
            f"| {verdict(m('p1_ratio') >= 0.8)} |"
        )
        for kind, what in (("payment", "shop payments"), ("subscription", "subscriptions' first payments")):
            rows.append(
                f"| P1 ingress, {what}: settlements/s (each sends its own event type) "
                f"| {m(f'p1_{kind}_rps'):,.0f} | {m('p1_floor_rps'):,.0f} (the same floor) "
                f"| {m(f'p1_{kind}_ratio'):.2f} | >= 0.8 | {verdict(m(f'p1_{kind}_ratio') >= 0.8)} |"
            )
        rows.append(
            f"| P1 latency p50 / p99 at {bench.plan.p1_connections} connections (ms) "
            f"| {m('p1_relay_p50_ms'):.1f} / {m('p1_relay_p99_ms'):.1f} "
            f"| {m('p1_floor_p50_ms'):.1f} / {m('p1_floor_p99_ms'):.1f} | | | |"
        )
    if "p1r_ratio" in have:
        rows.append(
            "| P1 replicated: settlements/s answered once a replica confirmed them "
            f"(RELAY_REDIS_MIN_REPLICAS_ACK=1) | {m('p1r_ack1_rps'):,.0f} "
            f"| {m('p1r_floor_rps'):,.0f} (the floor, the replica attached) | {m('p1r_ratio'):.2f} | >= 0.7 "
            f"| {verdict(m('p1r_ratio') >= 0.7)} |"
        )
        rows.append(
            "| P1 replicated: the WAIT's cost, RELAY_REDIS_MIN_REPLICAS_ACK=1 vs 0 "
            f"| {m('p1r_ack1_rps'):,.0f} | {m('p1r_ack0_rps'):,.0f} (=0, the replica attached) "
            f"| {m('p1r_wait_cost'):.2f} | report | |"
        )
        rows.append(
            f"| P1 replicated latency p50 / p99 at {bench.plan.p1_connections} connections, =1 / =0 (ms) "
            f"| {m('p1r_ack1_p50_ms'):.1f} / {m('p1r_ack1_p99_ms'):.1f} "
            f"| {m('p1r_ack0_p50_ms'):.1f} / {m('p1r_ack0_p99_ms'):.1f} | | | |"
        )
    if "p7_ratio" in have:
        rows.append(
            "| P7 builder read: `GET /api/platform/projects/{id}`/s with a project API key (`rk_...`) "
            f"| {m('p7_key_rps'):,.0f} | {m('p7_admin_rps'):,.0f} (admin token, the same relay) "
            f"| {m('p7_ratio'):.2f} | >= 0.8 | {verdict(m('p7_ratio') >= 0.8)} |"
        )
        rows.append(
            f"| P7 latency p50 / p99 at {bench.plan.p1_connections} connections, key / admin (ms) "
            f"| {m('p7_key_p50_ms'):.1f} / {m('p7_key_p99_ms'):.1f} "
            f"| {m('p7_admin_p50_ms'):.1f} / {m('p7_admin_p99_ms'):.1f} | | | |"
        )
    if "p2_ratio_noop" in have:
        rows.append(
            f"| P2 delivery: deliveries/s, 1 `relay worker` (max_jobs 100) | {m('p2_relay_rate'):,.0f} "
            f"| {m('p2_noop_rate'):,.0f} (a: arq no-op job, same settings) | {m('p2_ratio_noop'):.2f} "
            f"| >= 0.8 | {verdict(m('p2_ratio_noop') >= 0.8)} |"
        )
        rows.append(
            "| P2 delivery with the default per-endpoint cap (RELAY_WORKER_HOST_CONCURRENCY=10) "
            f"| {m('p2_capped_rate'):,.0f} | {m('p2_relay_rate'):,.0f} (cap 100) "
            f"| {m('p2_ratio_capped'):.2f} "
            "| report | |"
        )
        rows.append(
            f"| P2 delivery vs (b) bare aiohttp client loop, concurrency 100 | {m('p2_relay_rate'):,.0f} "
            f"| {m('p2_client_rate'):,.0f} (b) | {m('p2_ratio_client'):.2f} | report | "
            f"{1 / m('p2_ratio_client'):.1f}x slower than (b) |"
        )
        rows.append(
            f"| P3 peer: deliveries/s per worker process | {m('p2_relay_rate'):,.0f} "
            f"| {m('p3_celery_rate'):,.0f} (Celery prefork c=1 + requests) | {m('p3_ratio'):.1f} | >= 3 "
            f"| {verdict(m('p3_ratio') >= 3)} |"
        )
    if "p4_ratio" in have:
        rows.append(
            "| P4 isolation: healthy deliveries/s with 10% to a hanging endpoint "
            f"| {m('p4_mixed_rate'):,.0f} "
            f"| {m('p4_alone_rate'):,.0f} (healthy alone) | {m('p4_ratio'):.2f} | >= 0.8 "
            f"| {verdict(m('p4_ratio') >= 0.8)} |"
        )
    for index, (name, _, _) in enumerate(HANGING_CASES):
        if f"p4_case{index}_ratio" in have:
            ratio = m(f"p4_case{index}_ratio")
            rows.append(
                f"| P4 healthy rate with {name} hanging ({HANGING_EVENTS} events each), vs alone "
                f"| | | {ratio:.2f} | >= 0.8 | {verdict(ratio >= 0.8)} |"
            )
    if "p5_bytes_per_event" in have:
        rows.append(
            f"| P5 Redis bytes per queued event (MEMORY USAGE of its keys) | {m('p5_bytes_per_event'):,.0f} "
            f"| {m('p5_used_memory_per_event'):,.0f} (INFO used_memory delta / event) | | <= 2048 "
            f"| {verdict(m('p5_bytes_per_event') <= 2048)} |"
        )
        rows.append(
            f"| P5 worker RSS draining a {bench.plan.p5_events:,} backlog (MiB, peak) "
            f"| {m('p5_worker_rss_mib'):.0f} | | | report | |"
        )
    if "p6_cpu_us_1w" in have:
        one, four = m("p6_cpu_us_1w"), m("p6_cpu_us_4w")
        rows.append(
            f"| P6 Redis CPU (main thread) per delivery, 1 / 2 / 4 workers (us) "
            f"| {one:.0f} / {m('p6_cpu_us_2w'):.0f} / {four:.0f} | 4 workers vs 1 | {four / one:.2f} "
            f"| <= 1.2 | {verdict(four / one <= 1.2)} |"
        )
        outer_one, outer_four = m("p6_outer_us_1w"), m("p6_outer_us_4w")
        rows.append(
            f"| P6 INFO commandstats us per delivery, 1 / 2 / 4 workers: the delivery's commands "
            f"(EVALSHA and EXEC with what runs in them, HGETALL, MGET) | {outer_one:.0f} / "
            f"{m('p6_outer_us_2w'):.0f} / {outer_four:.0f} | every command counted (a script's own "
            f"commands twice): {m('p6_commandstats_us_1w'):.0f} / {m('p6_commandstats_us_2w'):.0f} / "
            f"{m('p6_commandstats_us_4w'):.0f} | {outer_four / outer_one:.2f} | <= 80, 4 vs 1 <= 1.2 "
            f"| {verdict(max(outer_one, outer_four) <= 80 and outer_four / outer_one <= 1.2)} |"
        )
        rows.append(
            f"| P6 EXISTS calls per delivery, 1 / 2 / 4 workers | {m('p6_exists_calls_1w'):.1f} / "
            f"{m('p6_exists_calls_2w'):.1f} / {m('p6_exists_calls_4w'):.1f} | | | report | |"
        )
    if "e2e_p50_ms" in have:
        rows.append(
            f"| End-to-end callback -> merchant receipt at {bench.plan.e2e_rate:g}/s, p50 / p99 (ms) "
            f"| {m('e2e_p50_ms'):.1f} / {m('e2e_p99_ms'):.1f} | | | report | |"
        )
    return "\n".join(rows)


async def main_async(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    if args.reps:
        plan.reps = args.reps
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    print(f"bench: logs and data in {work}; pinning: {'load core 0, server core 1' if LOAD else 'none'}")
    data = Data(args.redis_url)
    await data.flush()
    procs = Processes(work)
    bench = Bench(plan, args.redis_url, data, procs, work)
    only = set(args.only.split(",")) if args.only else {"p1", "p1r", "p7", "p2", "p4", "p5", "p6", "e2e"}
    try:
        port, hang_port = free_port(), free_port("127.0.0.2")
        merchant = procs.start(
            "merchant", [PYTHON, "-m", "tests.perf.merchant", "--port", str(port)], core=LOAD, env=bench.env()
        )
        bench.merchant = f"http://127.0.0.1:{port}"
        argv = [
            PYTHON,
            "-m",
            "tests.perf.merchant",
            "--host",
            ",".join(["127.0.0.2", *HANGING_HOSTS]),
            "--port",
            str(hang_port),
            "--hang",
        ]
        hang = procs.start("hang-merchant", argv, core=LOAD, env=bench.env())
        bench.hang_merchant = f"http://127.0.0.2:{hang_port}"
        bench.hang_port = hang_port
        await wait_http(f"{bench.merchant}/stats", process=merchant)
        await wait_http(f"{bench.hang_merchant}/stats", process=hang)
        started = time.monotonic()
        if "p1" in only:
            await bench.p1()
        if "p1r" in only:
            await bench.p1_replicated()
        if "p7" in only:
            await bench.p7()
        if "p2" in only:
            await bench.p2_p3()
        if "p4" in only:
            await bench.p4()
        if "p5" in only:
            await bench.p5()
        if "p6" in only:
            await bench.p6()
        if "e2e" in only:
            await bench.e2e()
        elapsed = time.monotonic() - started
    finally:
        await procs.stop_all()
        await data.flush()
        await data.close()
    command = "python -m tests.perf.bench" + (" --quick" if args.quick else "")
    command += f" --reps {args.reps}" if args.reps else ""
    command += f" --product {args.product}" if args.product else ""
    report = render(bench, command, elapsed)
    print("\n" + report)
    if not args.only:
        results = HERE / ("RESULTS.md" if not args.product else "RESULTS-product.md")
        results.write_text(report + kept_soak_section(results))
    return 0


SOAK_SECTION = "## Soak: memory plateau"  # written by tests.perf.soak, kept when the table is rewritten
# Sections of RESULTS.md written by hand or by the soak, below the table: kept when it is rewritten.
KEPT_SECTIONS = ("## P4: ", "## P6: ", SOAK_SECTION)


def kept_soak_section(results: Path) -> str:
    """The sections of ``results`` below the table (KEPT_SECTIONS), to keep below a rewritten one
    ("" when it has none)."""
    text = results.read_text() if results.exists() else ""
    found = [at for at in (text.find(marker) for marker in KEPT_SECTIONS) if at >= 0]
    return "" if not found else "\n" + text[min(found) :]


def render(bench: Bench, command: str, elapsed: float) -> str:
    footprint = getattr(bench, "footprint", None)
    lines = [
        "# relay benchmark results",
        "",
        f"Command: `{command}` ({bench.plan.reps} repetition(s), medians; took {elapsed:.0f} s)  ",
        f"Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}  ",
        f"Machine: {machine()}  ",
        "Pinning: load generator (wrk), merchant and baseline clients on core 0; the process under "
        "test on core 1 (taskset); Redis unpinned.",
        "",
        table(bench),
    ]
    if footprint:
        lines += ["", "P5 bytes per queued event, by key (MEMORY USAGE, SAMPLES 0):", ""]
        lines += [f"- {name}: {value:,.0f}" for name, value in footprint.items()]
    lines += ["", "Every run (each figure's samples):", ""]
    lines += [
        f"- {name}: " + ", ".join(f"{v:,.2f}" for v in values) for name, values in bench.samples.items()
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 repetition, smaller N")
    parser.add_argument("--reps", type=int, default=0, help="repetitions (default 3, --quick 1)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated subset: p1,p1r,p7,p2,p4,p5,p6,e2e (p2 includes P3; p1r: P1 with a replica)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10", help="FLUSHED at start and end")
    args = parse_with_product(parser)
    sys.exit(asyncio.run(main_async(args)))


def parse_with_product(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments, with ``--product DIR``: the relay processes run from that copy of relay/ and
    workers/ (a before/after run)."""
    parser.add_argument(
        "--product",
        default="",
        help="run the relay processes from this copy of relay/ and workers/ (a before/after run)",
    )
    args = parser.parse_args()
    if args.product:
        harness.PRODUCT[:] = [str(Path(args.product).resolve())]
    return args


if __name__ == "__main__":
    main()
