"""Real relay processes for end-to-end tests: `relay serve` / `relay worker` as subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from relay.errors import REDIS_DOWN
from tests.helpers import ADMIN_TOKEN, TEST_ENCRYPTION_KEY, eventually, without_relay_variables

RELAY = str(Path(sys.executable).with_name("relay"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def relay_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The process environment minus any RELAY_* of the developer's, plus the test settings."""
    return without_relay_variables(os.environ) | {
        "RELAY_REDIS_URL": redis_url,
        "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "RELAY_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "RELAY_ALLOW_PRIVATE_TARGETS": "true",
        "RELAY_DELIVERY_TIMEOUT": "1",
        "RELAY_RETRY_SCHEDULE": "0.2,0.5,1,1,1",
        "RELAY_LOG_FORMAT": "json",
        "RELAY_PURCHASE_RATE_LIMIT": "0",  # tests buy many items from one client_id in seconds
        "PYTHONUNBUFFERED": "1",  # logs reach the file before a SIGKILL
        **extra,
    }


class Processes:
    """Subprocesses started by one test; every one is SIGKILLed (by its own pid) at the end."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.started: list[tuple[str, asyncio.subprocess.Process]] = []

    async def start(self, name: str, *args: str, program: str = RELAY) -> asyncio.subprocess.Process:
        log = (self.logs / f"{name}.log").open("ab")
        try:
            process = await asyncio.create_subprocess_exec(
                program, *args, env=self.env, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        finally:
            log.close()
        self.started.append((name, process))
        return process

    async def kill(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            process.kill()
        await process.wait()

    async def kill_all(self) -> None:
        for _, process in self.started:
            await self.kill(process)

    def tail(self, lines: int = 15) -> str:
        parts = []
        for name, _ in self.started:
            text = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
            parts.append(f"--- {name} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)


REDIS_SERVER = shutil.which("redis-server") or "redis-server"


class PrivateRedis:
    """A redis-server of the test's own (with AOF unless ``appendonly=False``), that the test can
    kill, start again, or misconfigure."""

    def __init__(
        self,
        processes: Processes,
        directory: Path,
        *,
        appendonly: bool = True,
        name: str = "redis",
        options: tuple[str, ...] = (),
    ) -> None:
        self.processes = processes
        self.directory = directory
        self.appendonly = appendonly
        self.name = name
        self.options = options
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await self.processes.start(
            self.name,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--dir",
            str(self.directory),
            *self.options,
            program=REDIS_SERVER,
        )

        async def answers() -> bool:
            client = Redis.from_url(self.url)
            try:
                return bool(await client.ping())
            except REDIS_DOWN:  # refused, or still loading the AOF
                return False
            finally:
                await client.aclose()

        await eventually(answers, timeout=10, what="the private redis-server")

    async def crash(self) -> None:
        """SIGKILL: no clean shutdown; only what the AOF had fsynced survives."""
        assert self.process is not None
        await self.processes.kill(self.process)

    def pause(self) -> None:
        """SIGSTOP: it holds its connections and answers nothing until ``resume``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class RedisCell:
    """A primary ``redis-server`` with ``replicas`` replicas, watched by ``sentinels`` Sentinels
    (``redis-server --sentinel``, quorum a majority) as the service ``relay``: all the test's own
    processes on loopback, each in its own directory under ``directory``."""

    SERVICE = "relay"

    def __init__(
        self,
        processes: Processes,
        directory: Path,
        *,
        replicas: int = 2,
        sentinels: int = 3,
        down_after_ms: int = 1000,
    ) -> None:
        self.processes = processes
        self.directory = directory
        self.down_after_ms = down_after_ms
        # A replica syncs at once (Redis waits 5 s for more replicas to share a diskless sync).
        prompt = ("--repl-diskless-sync-delay", "0")
        self.nodes = [self._node("redis-primary", prompt)]
        primary = (*prompt, "--replicaof", "127.0.0.1", str(self.nodes[0].port))
        self.nodes += [self._node(f"redis-replica-{n}", primary) for n in range(1, replicas + 1)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]

    def _node(self, name: str, options: tuple[str, ...]) -> PrivateRedis:
        place = self.directory / name
        place.mkdir(parents=True)
        return PrivateRedis(self.processes, place, name=name, options=options)

    @property
    def sentinels(self) -> str:
        """RELAY_REDIS_SENTINELS for this cell."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    async def start(self) -> None:
        for node in self.nodes:
            await node.start()
        await eventually(self._replicated, timeout=20, what="every replica to sync with the primary")
        quorum = len(self.sentinel_ports) // 2 + 1
        for n, port in enumerate(self.sentinel_ports, 1):
            place = self.directory / f"sentinel-{n}"
            place.mkdir()
            conf = place / "sentinel.conf"  # a Sentinel rewrites its own file: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {place}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.nodes[0].port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.SERVICE} 10000\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
            )
            await self.processes.start(f"sentinel-{n}", str(conf), "--sentinel", program=REDIS_SERVER)
        await eventually(self._watched, timeout=20, what="the Sentinels to see the primary and every replica")

    async def _replicated(self) -> bool:
        async with Redis(port=self.nodes[0].port, decode_responses=True) as primary:
            info = await primary.info("replication")
        online = [key for key, value in info.items() if key.startswith("slave") and "online" in str(value)]
        return len(online) == len(self.nodes) - 1

    async def _watched(self) -> bool:
        for port in self.sentinel_ports:
            try:
                async with Redis(port=port, decode_responses=True) as sentinel:
                    replicas = await sentinel.execute_command("SENTINEL", "REPLICAS", self.SERVICE)
                    others = await sentinel.execute_command("SENTINEL", "SENTINELS", self.SERVICE)
            except REDIS_DOWN:
                return False
            if len(replicas) < len(self.nodes) - 1 or len(others) < len(self.sentinel_ports) - 1:
                return False
        return True

    async def primary_port(self) -> int:
        """The port of the primary the first Sentinel names."""
        async with Redis(port=self.sentinel_ports[0], decode_responses=True) as sentinel:
            _, port = await sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE)
        return int(port)

    def node(self, port: int) -> PrivateRedis:
        [found] = [node for node in self.nodes if node.port == port]
        return found


async def wait_until_answering(
    http: aiohttp.ClientSession, path: str = "/healthz", *, timeout: float = 20, what: str = "the relay"
) -> None:
    """Wait until ``path`` answers 200 (a process just started, or Redis just came back)."""

    async def answers() -> bool:
        try:
            async with http.get(path) as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(answers, timeout=timeout, what=f"{what} to answer {path}")


# --- the relay command line, as a subprocess ---------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


async def relay_cli(*args: str, **env: str) -> Result:
    """Run the ``relay`` console script with only the given RELAY_* variables set."""
    clean = without_relay_variables(os.environ)
    process = await asyncio.create_subprocess_exec(
        RELAY,
        *args,
        env=clean | env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:  # it hung (e.g. `serve` started instead of refusing)
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())
