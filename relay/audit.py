"""The audit log: every change made through the admin token, a project's API key or the console
(who, what, on what, when, from where), kept RELAY_RETENTION.

An entry is recorded when a changing request (POST, PUT, DELETE) succeeds (``relay.api.auth``'s
decorators, the console's forms). Entries live in a hash by id and a sorted set by time
(``{p}:audit``, ``{p}:audit:entries``); each record also deletes what is older than the retention,
so the log is bounded without a sweep. Pages are oldest first from ``since``, with a cursor, as the
dead letters are.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from relay.models import iso_ms, to_ms
from relay.ranges import cursor_page
from relay.schema import Keys

TRIM_BATCH = 1000  # old entries one record deletes at most (a long-idle log catches up over several)


class AuditEntry(BaseModel):
    """One change: ``actor`` is ``admin``, ``key:<key id>`` or ``console``; ``action`` the method and
    route template; ``target`` the route's ids; ``project_id`` the project it concerns, when one."""

    model_config = ConfigDict(extra="forbid")

    id: str
    at: str
    actor: str
    action: str
    target: dict[str, str]
    project_id: str | None
    address: str
    status: int
    request_id: str


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    next_cursor: str | None


class AuditLog:
    """``redis`` must decode responses to ``str``."""

    def __init__(self, redis: Redis, *, prefix: str, retention: timedelta) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.retention = retention

    async def record(
        self,
        *,
        actor: str,
        action: str,
        target: dict[str, str],
        project_id: str | None,
        address: str,
        status: int,
        request_id: str,
        now: datetime,
    ) -> AuditEntry:
        entry = AuditEntry(
            id=f"{to_ms(now):013d}-{os.urandom(6).hex()}",
            at=iso_ms(now),
            actor=actor,
            action=action,
            target=target,
            project_id=project_id,
            address=address,
            status=status,
            request_id=request_id,
        )
        oldest = to_ms(now - self.retention)
        expired = await self.redis.zrangebyscore(
            self.keys.audit, "-inf", f"({oldest}", start=0, num=TRIM_BATCH
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.audit_entries, entry.id, entry.model_dump_json())
            pipe.zadd(self.keys.audit, {entry.id: to_ms(now)})
            if expired:
                pipe.hdel(self.keys.audit_entries, *expired)
                pipe.zrem(self.keys.audit, *expired)
            await pipe.execute()
        return entry

    async def page(
        self, *, since: datetime | None = None, limit: int = 100, cursor: str | None = None
    ) -> AuditPage:
        """Oldest first; the cursor is ``<score>:<entry id>`` of the last entry returned."""
        ids, next_cursor = await cursor_page(
            self.redis, self.keys.audit, since=since, limit=limit, cursor=cursor
        )
        raws: list[str | None] = []
        if ids:
            raws = await self.redis.hmget(self.keys.audit_entries, ids)  # type: ignore[misc]
        entries = [AuditEntry.model_validate(json.loads(raw)) for raw in raws if raw is not None]
        return AuditPage(entries, next_cursor)
