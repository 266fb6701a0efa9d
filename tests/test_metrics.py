"""/metrics on the ingress and on a worker (its own port) move during a real end-to-end run."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from relay.metrics import Metrics
from relay.models import to_ms
from relay.schema import Keys
from tests.helpers import (
    ADMIN,
    ADMIN_TOKEN,
    Api,
    Merchant,
    StartRelay,
    eventually,
    make_settings,
    midtrans_key_of,
)
from tests.processes import Processes, free_port, relay_env
from workers.arq_compat import SWEEP


@pytest.fixture
async def processes(redis_url: str, tmp_path: Path) -> AsyncIterator[Processes]:
    found = Processes(tmp_path, relay_env(redis_url, RELAY_RETRY_SCHEDULE="0.1"))
    try:
        yield found
    finally:
        await found.kill_all()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name and ",".join(sorted((match[2] or "").split(","))) == wanted:
            return float(match[3])
    return 0.0


def promtool_check(text: str) -> None:
    """``promtool check metrics`` (Debian's prometheus package; .ci/run installs it) finds no
    problem in an exposition."""
    if shutil.which("promtool") is None:
        pytest.fail("no promtool: apt-get install prometheus (.ci/run does)")
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


async def scrape(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url, headers=ADMIN) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain")
        return await response.text()


async def wait_scrapes(http: aiohttp.ClientSession, *urls: str) -> None:
    async def up() -> bool:
        try:
            for url in urls:
                await scrape(http, url)
        except aiohttp.ClientError:
            return False
        return True

    await eventually(up, timeout=20, what=f"metrics at {', '.join(urls)}")


@pytest.mark.timeout(90)
async def test_metrics_move_on_ingress_and_worker(
    processes: Processes, merchant: Merchant, redis_url: str
) -> None:
    port, metrics_port = free_port(), free_port()
    await processes.start("serve", "serve", "--port", str(port))
    processes.env = processes.env | {
        "RELAY_WORKER_METRICS_PORT": str(metrics_port),
        "RELAY_WORKER_METRICS_HOST": "127.0.0.1",
    }
    await processes.start("worker", "worker")
    ingress, worker = f"http://127.0.0.1:{port}/metrics", f"http://127.0.0.1:{metrics_port}/metrics"
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
        await wait_scrapes(http, ingress, worker)
        settings = make_settings(redis_url=redis_url)
        key = await midtrans_key_of(redis_url, settings)
        api = Api(http, settings, f"http://127.0.0.1:{port}", midtrans_key=key)
        merchant.script["/flaky"] = [500, 200]
        merchant.script["/down"] = [503]
        project = await api.project(webhook_url=f"{merchant.url}/flaky")
        flaky = await api.item(project["id"])
        down = await api.item(project["id"], webhook_url=f"{merchant.url}/down")
        for item in (flaky, down):
            await api.pay(await api.buy(project["client_id"], item["id"]))
        await api.call("POST", "/callbacks/midtrans", auth=False, data=b"{", expect=400)

        async def settled() -> bool:
            text = await scrape(http, worker)
            return sample(text, "relay_attempts_per_event_count") >= 2

        await eventually(settled, timeout=30, what="both events to settle")
        front, back = await scrape(http, ingress), await scrape(http, worker)
    assert ADMIN_TOKEN not in front + back
    assert sample(front, "relay_callbacks_total", gateway="midtrans", result="paid", error="") == 2
    assert (
        sample(front, "relay_callbacks_total", gateway="midtrans", result="refused", error="InvalidInput")
        == 1
    )
    assert sample(front, "relay_events_created_total") == 2
    assert sample(front, "relay_purchases_created_total") == 2
    assert sample(front, "relay_dead_letters") == 1
    assert sample(back, "relay_dead_letters") == 1
    assert sample(back, "relay_deliveries_total", outcome="delivered", status_class="2xx") == 1
    assert sample(back, "relay_deliveries_total", outcome="retrying", status_class="5xx") == 2
    assert sample(back, "relay_deliveries_total", outcome="dead_lettered", status_class="5xx") == 1
    assert sample(back, "relay_delivery_duration_seconds_count") == 4
    assert sample(back, "relay_attempts_per_event_sum") == 4
    for text in (front, back):
        assert "relay_queue_depth " in text
        assert "relay_oldest_pending_age_seconds " in text
        assert "relay_outbox_events " in text
        # Prometheus's conventions: no _created series, the process's and Python's collectors, and
        # promtool's own lint finds nothing.
        names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
        assert not [name for name in names if name.endswith("_created")]
        for collected in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
            assert collected in text
        promtool_check(text)
    # Requests by route template, method and status; durations by route.
    assert (
        sample(front, "relay_http_requests_total", route="/callbacks/{gateway}", method="POST", status="200")
        == 2
    )
    assert (
        sample(front, "relay_http_requests_total", route="/callbacks/{gateway}", method="POST", status="400")
        == 1
    )
    assert sample(front, "relay_http_request_duration_seconds_count", route="/callbacks/{gateway}") == 3


async def test_the_ingress_metrics_need_the_admin_token(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    for headers in ({}, {"Authorization": "Bearer not-the-admin-token-0123"}):
        async with running.api.http.get("/metrics", headers=headers) as response:
            assert response.status == 401
            assert (await response.json())["error"] == "Unauthorized"
    async with running.api.http.get("/metrics", headers=ADMIN) as response:
        assert response.status == 200
        assert "relay_callbacks_total" in await response.text()


def test_the_worker_metrics_listen_on_loopback_unless_told() -> None:
    assert make_settings().worker_metrics_host == "127.0.0.1"


@pytest.mark.timeout(90)
async def test_retention_expiry_and_disabling_are_counted(
    processes: Processes, merchant: Merchant, redis_url: str
) -> None:
    port, metrics_port = free_port(), free_port()
    processes.env = processes.env | {
        "RELAY_RETRY_SCHEDULE": "0.3,0.3,0.3",
        "RELAY_RETENTION": "1",
        "RELAY_DEAD_LETTER_RETENTION": "P1D",
        "RELAY_PURCHASE_EXPIRY": "1",
        "RELAY_ENDPOINT_DISABLE_AFTER": "0.5",
        "RELAY_SWEEP_INTERVAL": "1",
        "RELAY_WORKER_METRICS_PORT": str(metrics_port),
        "RELAY_WORKER_METRICS_HOST": "127.0.0.1",
    }
    await processes.start("serve", "serve", "--port", str(port))
    await processes.start("worker", "worker")
    worker = f"http://127.0.0.1:{metrics_port}/metrics"
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
        await wait_scrapes(http, f"http://127.0.0.1:{port}/metrics", worker)
        settings = make_settings(redis_url=redis_url)
        api = Api(
            http,
            settings,
            f"http://127.0.0.1:{port}",
            midtrans_key=await midtrans_key_of(redis_url, settings),
        )
        merchant.script["/down"] = [503]
        project = await api.project(webhook_url=f"{merchant.url}/ok")
        fine = await api.item(project["id"])
        down = await api.item(project["id"], webhook_url=f"{merchant.url}/down")
        await api.pay(await api.buy(project["client_id"], fine["id"]))
        await api.pay(await api.buy(project["client_id"], down["id"]))
        await api.buy(project["client_id"], fine["id"])  # never paid: it expires

        async def counted() -> bool:
            text = await scrape(http, worker)
            return (
                sample(text, "relay_retention_deleted_total", kind="order") >= 2
                and sample(text, "relay_endpoints_disabled_total") == 1
            )

        await eventually(counted, timeout=40, what="the expiry, deletions and disabling counted")
        text = await scrape(http, worker)
    assert sample(text, "relay_purchases_expired_total") == 1
    # Left: the dead-lettered order (kept a day); the delivered and the expired ones are deleted.
    assert sample(text, "relay_retained_orders") == 1


async def test_the_queue_depth_counts_deliveries_not_the_sweepers_job(redis: Redis) -> None:
    keys, now = Keys("relay"), datetime.now(UTC)
    due = to_ms(now)
    sweep = f"{SWEEP}:{due}"  # arq's cron job id: its name and when it is due
    await redis.zadd(keys.arq_queue, {sweep: due, "evt_1": due - 5, "evt_2:1": due + 3_600_000})
    text = (await Metrics().render(redis, keys, now=now)).decode()
    assert sample(text, "relay_queue_depth") == 2
    await redis.zrem(keys.arq_queue, sweep)
    text = (await Metrics().render(redis, keys, now=now)).decode()
    assert sample(text, "relay_queue_depth") == 2
