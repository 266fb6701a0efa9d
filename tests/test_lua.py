"""relay/lua: the scripts as files. Each opens with a header naming the KEYS and ARGV it reads, each
is loaded by relay, the ingest script's status ladder is ``relay.models.RANK``, and a script run
directly, by its header alone, does what the header says, on each backend (the embedded store and a
real Redis). What the scripts do for their callers is tested with the callers: test_store.py
(ingest), test_events.py (finish, requeue, postpone, purge_dead_letter), test_arq_compat.py (claim).
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path

import pytest

import relay
import workers
from relay import lua
from relay.connections import Connections
from relay.models import RANK
from relay.schema import Keys
from relay.store import ingest_script

SCRIPTS = sorted(
    entry.name.removesuffix(".lua") for entry in files(lua).iterdir() if entry.name.endswith(".lua")
)
KEYS = Keys("t")


def header_and_body(name: str) -> tuple[str, str]:
    """The script's opening comment block, and the rest."""
    lines = lua.source(name).splitlines()
    length = next((number for number, line in enumerate(lines) if not line.startswith("--")), len(lines))
    return "\n".join(lines[:length]), "\n".join(lines[length:])


def indexes(text: str, table: str) -> set[int]:
    """The n of every ``KEYS[n]`` (or ``ARGV[n]``) in ``text``."""
    return {int(index) for index in re.findall(rf"\b{table}\[(\d+)\]", text)}


def test_there_are_scripts() -> None:
    assert {"claim", "finish", "ingest", "postpone", "purge_dead_letter", "requeue"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_header_names_exactly_the_keys_and_arguments_the_script_reads(name: str) -> None:
    header, body = header_and_body(name)
    assert header, f"{name}.lua does not open with a header"
    assert indexes(body, "KEYS"), f"{name}.lua reads no KEYS"  # the parse found something
    for table in ("KEYS", "ARGV"):
        assert indexes(header, table) == indexes(body, table), f"{name}.lua: the header's {table}"


def test_every_script_is_loaded_and_every_load_has_a_script() -> None:
    """``lua.source("<name>")`` in relay's and workers' source (the ingest script is loaded inside
    ``relay.store.ingest_script``): no orphan file, no load of a missing one."""
    pattern = re.compile(r'lua\.source\("(\w+)"\)')
    loaded = {
        name
        for package in (relay, workers)
        for path in Path(package.__file__ or "").parent.rglob("*.py")
        for name in pattern.findall(path.read_text(encoding="utf-8"))
    }
    assert loaded == set(SCRIPTS)


async def test_the_ingest_scripts_ladder_is_relay_models_rank(connections: Connections) -> None:
    """The table ahead of ingest.lua, as Lua reads it."""
    source = lua.source("ingest")
    script = ingest_script()
    assert script.endswith(source)
    ladder = script.removesuffix(source) + "return cjson.encode(RANK)"
    encoded = await connections.redis.eval(ladder, 0)  # type: ignore[misc]
    assert json.loads(encoded) == {status.value: rank for status, rank in RANK.items()}


async def test_postpone_applies_only_at_the_events_seq(connections: Connections) -> None:
    redis = connections.redis
    postpone = redis.register_script(lua.source("postpone"))
    event, keys = KEYS.event("evt_1"), [KEYS.event("evt_1"), KEYS.outbox]
    await redis.hset(event, mapping={"id": "evt_1", "seq": "3", "next_attempt_at": ""})  # type: ignore[misc]
    await redis.zadd(KEYS.outbox, {"evt_1": 1000})

    assert await postpone(keys=keys, args=["evt_1", 2, 5000, "2026-05-06T10:00:05+00:00"]) == 0
    assert await redis.hgetall(event) == {"id": "evt_1", "seq": "3", "next_attempt_at": ""}  # type: ignore[misc]
    assert await redis.zscore(KEYS.outbox, "evt_1") == 1000

    assert await postpone(keys=keys, args=["evt_1", 3, 5000, "2026-05-06T10:00:05+00:00"]) == 1
    assert await redis.hgetall(event) == {  # type: ignore[misc]
        "id": "evt_1",
        "seq": "4",
        "next_attempt_at": "2026-05-06T10:00:05+00:00",
    }
    assert await redis.zscore(KEYS.outbox, "evt_1") == 5000


async def test_purge_dead_letter_removes_it_from_both_sets_once(connections: Connections) -> None:
    redis = connections.redis
    purge = redis.register_script(lua.source("purge_dead_letter"))
    keys = [KEYS.dead_letters, KEYS.project_dead_letters("shop"), KEYS.event("evt_1"), KEYS.retention]
    await redis.zadd(KEYS.dead_letters, {"evt_1": 1000, "evt_2": 2000})
    await redis.zadd(KEYS.project_dead_letters("shop"), {"evt_1": 1000})
    await redis.hset(KEYS.event("evt_1"), mapping={"order_id": "ord_1", "project_id": "shop"})
    await redis.zadd(KEYS.retention, {"o:ord_1": 9000})  # the dead-letter retention's deadline

    assert await purge(keys=keys, args=["evt_1", 5000]) == 1
    assert await purge(keys=keys, args=["evt_1", 7000]) == 0
    assert await redis.zrange(KEYS.dead_letters, 0, -1) == ["evt_2"]
    assert await redis.zrange(KEYS.project_dead_letters("shop"), 0, -1) == []
    # The order now follows the ordinary retention, from the purge.
    assert await redis.zrange(KEYS.retention, 0, -1, withscores=True) == [("o:ord_1", 5000.0)]
