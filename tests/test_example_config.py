"""config/example.env: the template the README points at starts a relay as it is."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from relay.settings import PUBLISHED_EXAMPLES
from tests.processes import Processes, free_port, wait_until_answering

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "example.env"


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines, as docker compose and systemd's EnvironmentFile read them."""
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


async def test_relay_serve_starts_from_the_example_env(tmp_path: Path, redis_url: str) -> None:
    settings = read_env_file(EXAMPLE)
    assert settings["RELAY_ENCRYPTION_KEYS"]
    settings["RELAY_REDIS_URL"] = redis_url  # the example's Redis is the tests' Redis here
    port = free_port()
    processes = Processes(tmp_path, settings | {"PATH": "/usr/bin:/bin"})
    try:
        serve = await processes.start("serve", "serve", "--port", str(port))
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
            await wait_until_answering(http, "/readyz", what="relay serve from config/example.env")
            assert serve.returncode is None, processes.tail()
            logged = (tmp_path / "serve.log").read_text()
            assert "is not a relay setting" not in logged
            # It starts, and says loudly that its published secrets protect nothing.
            assert "RELAY_ENCRYPTION_KEYS holds the example value" in logged
            assert "RELAY_ADMIN_TOKEN holds the example value" in logged
    finally:
        await processes.kill_all()
        await asyncio.sleep(0)


def test_the_relay_knows_the_examples_values_for_what_they_are() -> None:
    settings = read_env_file(EXAMPLE)
    for field, value in PUBLISHED_EXAMPLES.items():
        assert settings[f"RELAY_{field.upper()}"] == value
