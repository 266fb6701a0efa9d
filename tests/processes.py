"""Real relay processes for end-to-end tests: `relay serve` / `relay worker` as subprocesses."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

from tests.helpers import ADMIN_TOKEN, TEST_ENCRYPTION_KEY

RELAY = str(Path(sys.executable).with_name("relay"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def relay_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The process environment minus any RELAY_* of the developer's, plus the test settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RELAY_")}
    return env | {
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
