"""Webhook secrets are stored encrypted (MultiFernet) and re-encrypted by ``relay keys rotate``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from relay.crypto import SecretBox, generate_key
from relay.errors import SecretUndecryptable
from tests.helpers import TEST_ENCRYPTION_KEY, StartRelay

RELAY = str(Path(sys.executable).parent / "relay")


def relay_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RELAY_")}
    return env | extra


async def test_secrets_are_encrypted_in_redis(start_relay: StartRelay, redis_url: str) -> None:
    running = await start_relay(worker=False)
    project = await running.api.project()
    rotated = await running.api.call("POST", f"/api/platform/projects/{project['id']}/webhook-secret/rotate")
    redis = Redis.from_url(redis_url, decode_responses=True)
    raw = await redis.get(f"relay:project:{project['id']}")
    await redis.aclose()
    assert raw is not None
    for secret in (project["webhook_secret"], rotated["project"]["webhook_secret"]):
        assert secret not in raw
        assert secret.removeprefix("whsec_") not in raw
    assert raw.count("fernet:") == 2
    shown = await running.api.call("GET", f"/api/platform/projects/{project['id']}")
    assert "webhook_secret" not in shown["project"]
    assert "previous_webhook_secret" not in shown["project"]


def test_secret_box_round_trip_and_rotation() -> None:
    old, new = generate_key(), generate_key()
    stored = SecretBox([old]).encrypt("whsec_abc")
    both = SecretBox([new, old])
    assert both.decrypt(stored) == "whsec_abc"
    rotated = both.rotate(stored)
    assert SecretBox([new]).decrypt(rotated) == "whsec_abc"
    with pytest.raises(SecretUndecryptable, match="no key"):
        SecretBox([old]).decrypt(rotated)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RELAY, *args], env=env, capture_output=True, text=True, timeout=30, check=False)


async def test_keys_rotate_reencrypts_every_project(start_relay: StartRelay, redis_url: str) -> None:
    running = await start_relay(worker=False)
    projects = [await running.api.project(name=f"shop {n}") for n in range(3)]
    new_key = generate_key()
    env = relay_env(RELAY_REDIS_URL=redis_url, RELAY_ENCRYPTION_KEYS=f"{new_key},{TEST_ENCRYPTION_KEY}")
    result = run_cli("keys", "rotate", env=env)
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 3 projects" in result.stdout
    redis = Redis.from_url(redis_url, decode_responses=True)
    only_new = SecretBox([new_key])
    for project in projects:
        raw = await redis.get(f"relay:project:{project['id']}")
        assert raw is not None
        token = raw.split('"webhook_secret":"', 1)[1].split('"', 1)[0]
        assert only_new.decrypt(token) == project["webhook_secret"]
    await redis.aclose()


async def test_a_secret_the_keys_cannot_open_is_a_clear_error_not_a_traceback(
    start_relay: StartRelay, redis_url: str
) -> None:
    running = await start_relay(worker=False)
    project = await running.api.project(name="shop")
    item = await running.api.item(project["id"])
    rekeyed = await start_relay(worker=False, encryption_keys=generate_key())  # the old key lost
    # A buyer's purchase: 503 naming the remedy, not a 500.
    body = await rekeyed.api.call(
        "POST",
        "/api/platform/public-items/purchase",
        auth=False,
        json={"client_id": project["client_id"], "item_id": item["id"], "buyer_email": "b@example.com"},
        expect=503,
    )
    assert body["error"] == "SecretUndecryptable"
    assert "RELAY_ENCRYPTION_KEYS" in body["detail"]
    # `relay keys rotate`: one line naming the project and the remedy.
    result = run_cli(
        "keys", "rotate", env=relay_env(RELAY_REDIS_URL=redis_url, RELAY_ENCRYPTION_KEYS=generate_key())
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert project["id"] in line
    assert "RELAY_ENCRYPTION_KEYS" in line


def test_keys_generate_prints_a_fernet_key() -> None:
    result = run_cli("keys", "generate", env=relay_env())
    assert result.returncode == 0
    Fernet(result.stdout.strip().encode())


@pytest.mark.parametrize("command", [["serve"], ["worker"], ["dlq", "list"]])
def test_redis_mode_needs_encryption_keys(command: list[str]) -> None:
    env = relay_env(RELAY_REDIS_URL="redis://127.0.0.1:1/0", RELAY_ADMIN_TOKEN="an-admin-token-0123456789")
    result = run_cli(*command, env=env)
    assert result.returncode == 2
    assert "RELAY_ENCRYPTION_KEYS" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_encryption_key_fails_at_start() -> None:
    env = relay_env(RELAY_REDIS_URL="redis://127.0.0.1:1/0", RELAY_ENCRYPTION_KEYS="not-a-key")
    result = run_cli("worker", env=env)
    assert result.returncode == 2
    assert "RELAY_ENCRYPTION_KEYS" in result.stderr
    assert "Traceback" not in result.stderr
