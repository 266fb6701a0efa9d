"""Operator actions behind ``relay dlq`` and ``relay purchases``, straight against Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import click

from relay.connections import Connections, open_connections
from relay.crypto import SecretBox
from relay.deadletters import all_dead_letters, dead_letter_ids, dead_letter_views
from relay.domain import resend
from relay.errors import Conflict, NotFound
from relay.events import EventStore
from relay.models import WebhookStatus, utcnow
from relay.settings import Settings
from relay.store import Store


@asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[tuple[Connections, Store, EventStore]]:
    connections = open_connections(settings)
    try:
        yield (
            connections,
            Store(connections.redis, prefix=settings.key_prefix, box=SecretBox(settings.fernet_keys)),
            EventStore(connections.redis, prefix=settings.key_prefix),
        )
    finally:
        await connections.close()


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment


async def list_dead_letters(
    settings: Settings, *, project_id: str | None, since: datetime | None
) -> list[dict[str, Any]]:
    async with connected(settings) as (_, _store, events):
        records = [
            event async for event in all_dead_letters(events, project_id=project_id, since=_utc(since))
        ]
        views = await dead_letter_views(events, records)
    for view in views:
        last = view.pop("last_attempt") or {}
        view["last_error"] = last.get("error")
    return views


async def replay(
    settings: Settings,
    *,
    event_ids: list[str],
    replay_all: bool,
    project_id: str | None,
    since: datetime | None,
) -> int:
    async with connected(settings) as (connections, _store, events):
        if replay_all:
            event_ids = await dead_letter_ids(events, project_id=project_id, since=_utc(since))
        done, missing = 0, []
        with click.progressbar(event_ids, label="replaying") as bar:
            for event_id in bar:
                try:
                    await resend(events, connections.arq, event_id, now=utcnow())
                    done += 1
                except NotFound:
                    missing.append(event_id)
        if missing:
            raise click.ClickException(f"replayed {done}; no such event: {', '.join(missing)}")
        return done


async def purge(settings: Settings, *, event_ids: list[str], purge_all: bool, project_id: str | None) -> int:
    async with connected(settings) as (_, _store, events):
        if purge_all:
            records = [e async for e in all_dead_letters(events, project_id=project_id, since=None)]
        else:
            records = [e for e in await events.get_many(event_ids)]
        done = 0
        with click.progressbar(records, label="purging") as bar:
            for event in bar:
                done += await events.purge_dead_letter(event)
        return done


async def list_purchases(
    settings: Settings, *, project_id: str, webhook_status: str | None
) -> list[dict[str, Any]]:
    async with connected(settings) as (_, store, _events):
        if await store.get_project(project_id) is None:
            raise click.ClickException(f"project {project_id!r} does not exist")
        status = WebhookStatus(webhook_status) if webhook_status else None
        found = await store.list_purchases(project_id, webhook_status=status, limit=1000)
    return [purchase.model_dump(mode="json") for purchase in found]


async def retry_purchase(settings: Settings, *, project_id: str, order_id: str) -> str:
    async with connected(settings) as (connections, store, events):
        purchase = await store.get_purchase(order_id)
        if purchase is None or purchase.project_id != project_id:
            raise click.ClickException(f"purchase {order_id!r} does not exist in project {project_id!r}")
        if purchase.event_id is None:
            raise click.ClickException(
                str(Conflict(f"purchase {order_id} is {purchase.status.value}; it has no webhook to send"))
            )
        await resend(events, connections.arq, purchase.event_id, now=utcnow())
        return purchase.event_id


async def rotate_keys(settings: Settings) -> int:
    async with connected(settings) as (_, store, _events):
        project_ids = await store.project_ids()
        done = 0
        with click.progressbar(project_ids, label="re-encrypting") as bar:
            for project_id in bar:
                done += await store.reencrypt_project(project_id)
        return done
