"""Benchmark plumbing: pinned subprocesses, the relay environment, and data made through relay's own
store and domain code (projects, items, purchases, signed Midtrans notifications, ingested events)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from arq.connections import ArqRedis
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from relay.connections import Connections, open_connections
from relay.gateways.midtrans import Midtrans, settlement_payload, sign_notification
from relay.ingest import apply_outcome
from relay.models import (
    Item,
    OrderKind,
    Plan,
    Project,
    Purchase,
    Subscription,
    new_client_id,
    new_order_id,
    new_payment_order_id,
    new_subscription_id,
    utcnow,
)
from relay.periods import Interval
from relay.settings import Settings
from relay.signing import new_webhook_secret, webhook_headers
from relay.stores import make_stores
from relay.subscriptions import subscription_to

PYTHON = sys.executable
RELAY = str(Path(sys.executable).with_name("relay"))
CELERY = str(Path(sys.executable).with_name("celery"))
ADMIN_TOKEN = "bench-admin-token-0123456789"
SERVER_KEY = "bench-midtrans-server-key"
PREFIX = "bench"
ENCRYPTION_KEY = Fernet.generate_key().decode()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def cores() -> list[str]:
    """``taskset -c`` prefixes for (load side, server side); empty when pinning is impossible."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["0", "1"]
    return []


def pinned(core: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *argv] if core is not None and cores() else argv


# Where the subprocesses import relay from: this checkout, or (``bench --product DIR``) another
# copy of relay/ and workers/, e.g. ``git archive HEAD relay workers`` for a before/after run.
REPO = Path(__file__).resolve().parents[2]
PRODUCT: list[str] = []


def relay_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RELAY_")}
    return env | {
        "PYTHONPATH": os.pathsep.join([*PRODUCT, str(REPO)]),
        "RELAY_REDIS_URL": redis_url,
        "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "RELAY_ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "RELAY_MIDTRANS_SERVER_KEY": SERVER_KEY,
        "RELAY_ALLOW_PRIVATE_TARGETS": "true",
        "RELAY_PURCHASE_RATE_LIMIT": "0",
        "RELAY_LOG_FORMAT": "json",
        "RELAY_KEY_PREFIX": PREFIX,
        "RELAY_WORKER_MAX_JOBS": "100",
        "RELAY_WORKER_POLL_DELAY": "0.05",
        "RELAY_WORKER_METRICS_HOST": "127.0.0.1",
        "RELAY_WORKER_METRICS_PORT": str(free_port()),
        "RELAY_RETRY_SCHEDULE": "3600",
        **extra,
    }


def settings_for(redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        admin_token=ADMIN_TOKEN,
        encryption_keys=ENCRYPTION_KEY,
        midtrans_server_key=SERVER_KEY,
        allow_private_targets=True,
        key_prefix=PREFIX,
        log_format="json",
    )


class Processes:
    """The subprocesses this benchmark started; each is stopped by its own pid, nothing else."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}

    def start(
        self, name: str, argv: list[str], *, core: str | None, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                pinned(core, argv), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.logs
            )
        self.running[process.pid] = (name, process)
        return process

    async def stop(self, process: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if process.poll() is None:
                process.kill()
        process.wait()
        self.running.pop(process.pid, None)

    async def stop_all(self) -> None:
        for _, process in list(self.running.values()):
            await self.stop(process, grace=3)

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


async def wait_http(url: str, *, process: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{process.args} exited with {process.returncode} before answering {url}")
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return await response.json()


async def post(url: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(url) as response:
        await response.read()


@dataclass
class Catalogue:
    project: Project
    items: list[Item]


class Data:
    """Relay's store, event store and arq pool on the benchmark database."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.settings = settings_for(redis_url)
        self.connections: Connections = open_connections(self.settings)
        self.redis: Redis = self.connections.redis
        self.arq: ArqRedis = self.connections.arq
        stores = make_stores(self.redis, self.settings)
        self.store, self.events, self.subscriptions = stores.store, stores.events, stores.subscriptions
        self.gateway = Midtrans(server_key=SERVER_KEY)

    async def close(self) -> None:
        await self.connections.close()

    async def flush(self) -> None:
        await self.redis.flushdb()

    async def catalogue(self, webhook_urls: list[str], *, project_id: str = "bench") -> Catalogue:
        now = utcnow()
        project = Project(
            id=project_id,
            name="Benchmark shop",
            client_id=new_client_id(),
            webhook_secret=new_webhook_secret(),
            created_at=now,
            updated_at=now,
        )
        await self.store.put_project(project)
        items = []
        for index, url in enumerate(webhook_urls):
            item = Item(
                id=f"item{index:04d}-{project_id}",
                project_id=project.id,
                name=f"Premium Template {index}",
                price=50000,
                currency="IDR",
                webhook_url=url,
                created_at=now,
                updated_at=now,
            )
            await self.store.put_item(item, set_stock=True)
            items.append(item)
        return Catalogue(project, items)

    async def purchases(self, items: list[Item], count: int, *, width: int = 200) -> list[Purchase]:
        """``count`` pending purchases, spread over ``items`` round-robin (item i of every len(items))."""
        now = utcnow()
        made = [
            Purchase(
                order_id=new_order_id(item.id),
                item_id=item.id,
                project_id=item.project_id,
                item_name=item.name,
                amount=item.price,
                currency=item.currency,
                buyer_email="buyer@example.com",
                buyer_name="John Doe",
                metadata={"ref": "campaign-42"},
                created_at=now,
                updated_at=now,
            )
            for item in (items[index % len(items)] for index in range(count))
        ]
        for start in range(0, count, width):
            await asyncio.gather(*(self.store.create_purchase(p) for p in made[start : start + width]))
        return made

    async def orders(
        self, kind: OrderKind, catalogue: Catalogue, count: int, *, width: int = 200
    ) -> list[Purchase]:
        """``count`` pending orders of ``kind``: item purchases (``purchases``), shop payments, or
        subscriptions' first orders (each with its subscription, to a plan of the catalogue's
        project whose webhook URL is its first item's)."""
        if kind is OrderKind.ITEM:
            return await self.purchases(catalogue.items, count, width=width)
        now, project = utcnow(), catalogue.project
        made: list[Purchase] = []
        subscriptions: list[Subscription] = []
        if kind is OrderKind.PAYMENT:
            for _ in range(count):
                merchant_order = f"INV-{os.urandom(8).hex()}"
                made.append(
                    Purchase(
                        order_id=new_payment_order_id(),
                        kind=OrderKind.PAYMENT,
                        event_type="payment.paid",
                        project_id=project.id,
                        merchant_order_id=merchant_order,
                        description="Custom logo design",
                        amount=50000,
                        currency="IDR",
                        buyer_email="buyer@example.com",
                        buyer_name="John Doe",
                        metadata={"ref": "campaign-42"},
                        created_at=now,
                        updated_at=now,
                    )
                )
            for start in range(0, count, width):
                await asyncio.gather(*(self.store.create_purchase(p) for p in made[start : start + width]))
            return made
        plan = Plan(
            id=f"plan-{project.id}",
            project_id=project.id,
            name="Pro Monthly",
            price=50000,
            interval=Interval.MONTH,
            webhook_url=catalogue.items[0].webhook_url,
            created_at=now,
            updated_at=now,
        )
        await self.store.put_plan(plan)
        for _ in range(count):
            subscription, order = subscription_to(
                plan,
                subscription_id=new_subscription_id(),
                buyer_email="buyer@example.com",
                buyer_name="John Doe",
                user_id="user-1",
                metadata={"ref": "campaign-42"},
                gateway="midtrans",
                now=now,
            )
            subscriptions.append(subscription)
            made.append(order)
        for start in range(0, count, width):
            pairs = zip(subscriptions[start : start + width], made[start : start + width], strict=True)
            await asyncio.gather(*(self.subscriptions.create(sub, order) for sub, order in pairs))
        return made

    def notification(self, purchase: Purchase) -> str:
        payload = settlement_payload(purchase, now=datetime.now(UTC))
        return json.dumps(sign_notification(payload, SERVER_KEY), separators=(",", ":"))

    async def ingest(self, purchases: list[Purchase], *, width: int = 100) -> None:
        """Settle ``purchases`` through relay's own verify -> normalise -> apply_outcome (one
        event, its outbox entry and its arq job each), as ingress would, without HTTP."""

        async def one(purchase: Purchase) -> None:
            payload = self.gateway.verify(self.notification(purchase).encode(), {})
            result = await apply_outcome(self.store, self.arq, self.gateway.normalise(payload), clock=utcnow)
            if result != "paid":
                raise RuntimeError(f"ingest of {purchase.order_id} gave {result}")

        for start in range(0, len(purchases), width):
            await asyncio.gather(*(one(p) for p in purchases[start : start + width]))

    async def signed_requests(self, catalogue: Catalogue, purchases: list[Purchase]) -> list[list[Any]]:
        """``[url, headers, body]`` for each purchase's event, signed as the worker signs it."""
        urls = {item.id: item.webhook_url for item in catalogue.items}
        rows = []
        for purchase in purchases:
            stored = await self.store.get_purchase(purchase.order_id)
            assert stored is not None
            assert stored.event_id is not None
            event = await self.events.get(stored.event_id)
            assert event is not None
            now = utcnow()
            headers = webhook_headers(
                catalogue.project.signing_secrets(now), msg_id=event.id, timestamp=now, body=event.body
            )
            rows.append([urls[purchase.item_id], headers, event.body])
        return rows
