"""Events and their delivery bookkeeping: attempts, the outbox and the dead-letter queue.

An event is a Redis hash (``EventRecord``). ``seq`` fences delivery jobs: every (re)scheduling
bumps it and the job carries the ``seq`` it was enqueued for, so a stale or duplicated job finds
a different ``seq`` and does nothing. The outbox (event id -> due time) holds every event that
still needs an attempt; it, not arq, is the source of truth the sweeper repairs from. Key names are
``relay.schema``'s; the scripts are ``relay/lua/{finish,requeue,postpone,purge_dead_letter}.lua``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

from relay import lua
from relay.models import Attempt, DeadReason, EventRecord, WebhookStatus, iso_ms, to_ms
from relay.ranges import cursor_page
from relay.retention import DEFAULT_LIFETIMES, Lifetimes
from relay.schema import Keys
from workers.arq_compat import JobWrite

MAX_ATTEMPT_LOG = 200


def event_from_fields(fields: dict[str, str]) -> EventRecord:
    """An empty field is an unset one (its default)."""
    return EventRecord.model_validate({key: value for key, value in fields.items() if value})


@dataclass(frozen=True)
class Alert:
    """An operator's event to create in the same step (relay.alerts builds its body)."""

    event_id: str
    body: str


@dataclass(frozen=True)
class Finished:
    """What finishing an attempt did: ``applied`` False when a newer job owns the event;
    ``disabled_since`` the endpoint's failing_since when this attempt disabled it."""

    applied: bool
    disabled_since: str | None = None

    def __bool__(self) -> bool:
        return self.applied


@dataclass(frozen=True)
class DeadLetterPage:
    events: list[EventRecord]
    next_cursor: str | None


class EventStore:
    def __init__(self, redis: Redis, *, prefix: str, lifetimes: Lifetimes = DEFAULT_LIFETIMES) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.lifetimes = lifetimes
        self._finish = redis.register_script(lua.source("finish"))
        self._requeue = redis.register_script(lua.source("requeue"))
        self._purge = redis.register_script(lua.source("purge_dead_letter"))
        self._postpone = redis.register_script(lua.source("postpone"))

    async def get(self, event_id: str) -> EventRecord | None:
        fields = await self.redis.hgetall(self.keys.event(event_id))  # type: ignore[misc]
        return event_from_fields(fields) if fields else None

    async def get_many(self, event_ids: list[str]) -> list[EventRecord]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.hgetall(self.keys.event(event_id))
            rows = await pipe.execute()
        return [event_from_fields(fields) for fields in rows if fields]

    async def states(self, event_ids: list[str]) -> dict[str, WebhookStatus]:
        """Each existing event's state, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.hget(self.keys.event(event_id), "state")
            rows = await pipe.execute()
        return {
            event_id: WebhookStatus(state) for event_id, state in zip(event_ids, rows, strict=True) if state
        }

    async def attempts(self, event_ids: list[str]) -> dict[str, list[Attempt]]:
        """Each event's attempt log, oldest first, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.lrange(self.keys.attempts(event_id), 0, -1)
            rows = await pipe.execute()
        return {
            event_id: [Attempt.model_validate_json(raw) for raw in raws]
            for event_id, raws in zip(event_ids, rows, strict=True)
        }

    async def add(self, event: EventRecord, job: JobWrite) -> None:
        """Store a new event with its outbox entry, its place among its project's events and its
        first arq job (``job``), in one transaction, as ingest.lua writes a paid order's: for an
        event no payment makes (``webhook.test``)."""
        fields = {
            key: "" if value is None else str(value) for key, value in event.model_dump(mode="json").items()
        }
        due = to_ms(event.created_at)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.event(event.id), mapping=fields)
            pipe.zadd(self.keys.outbox, {event.id: due})
            pipe.zadd(self.keys.project_events(event.project_id), {event.id: due})
            pipe.psetex(job.job_key, job.expires_ms, job.payload)
            pipe.zadd(job.queue, {job.job_id: job.score})
            await pipe.execute()

    async def finish_attempt(
        self,
        event: EventRecord,
        *,
        seq: int,
        attempt: Attempt | None,
        state: WebhookStatus,
        now: datetime,
        reason: DeadReason | None = None,
        endpoint: str | None = None,
        alert: Alert | None = None,
        disabled_alert: Alert | None = None,
    ) -> Finished:
        """Log ``attempt`` and move the event to ``state`` (finish.lua). ``endpoint``: the URL the
        attempt went to, whose health it updates (None when nothing was sent). The operator's
        alerts are created in the same step: ``alert`` (message.attempt.exhausted) when the event
        is dead-lettered, ``disabled_alert`` (endpoint.disabled) when this attempt disables the
        endpoint."""
        due = attempt.next_attempt_at if attempt else None
        score = to_ms(due) if state is WebhookStatus.RETRYING and due else to_ms(now)
        health = self.keys.endpoint(event.project_id, endpoint) if endpoint else ""
        result = await self._finish(
            keys=[
                self.keys.event(event.id),
                self.keys.attempts(event.id),
                self.keys.purchase(event.order_id),
                self.keys.outbox,
                self.keys.dead_letters,
                self.keys.project_dead_letters(event.project_id),
                self.keys.retention,
                health,
                self.keys.project_endpoints(event.project_id),
                self.keys.event(alert.event_id) if alert else "",
                self.keys.event(disabled_alert.event_id) if disabled_alert else "",
                self.keys.project_disabled_endpoints(event.project_id),
            ],
            args=[
                event.id,
                seq,
                attempt.model_dump_json() if attempt else "",
                state.value,
                score,
                due.isoformat() if due else "",
                now.isoformat() if state is WebhookStatus.FAILED else "",
                MAX_ATTEMPT_LOG,
                to_ms(now),
                iso_ms(now),
                to_ms(now + self.lifetimes.retention),
                to_ms(now + self.lifetimes.dead_letter_retention),
                reason.value if reason and state is WebhookStatus.FAILED else "",
                endpoint or "",
                self.keys.endpoint_digest(endpoint) if endpoint else "",
                (attempt.error or "") if attempt else "",
                int(self.lifetimes.endpoint_disable_after.total_seconds() * 1000),
                alert.event_id if alert else "",
                alert.body if alert else "",
                disabled_alert.event_id if disabled_alert else "",
                disabled_alert.body if disabled_alert else "",
            ],
        )
        applied, disabled = int(result[0]), int(result[1])
        return Finished(bool(applied), str(result[2]) if disabled else None)

    async def postpone(self, event: EventRecord, *, seq: int, until: datetime) -> bool:
        """Schedule the event's next job at ``until`` (seq + 1) without logging an attempt."""
        applied = await self._postpone(
            keys=[self.keys.event(event.id), self.keys.outbox],
            args=[event.id, seq, to_ms(until), until.isoformat()],
        )
        return bool(applied)

    async def requeue(self, event: EventRecord, *, now: datetime) -> int | None:
        """Put the event back in the outbox with a fresh retry budget; the new seq, or None."""
        seq = await self._requeue(
            keys=[
                self.keys.event(event.id),
                self.keys.purchase(event.order_id),
                self.keys.outbox,
                self.keys.dead_letters,
                self.keys.project_dead_letters(event.project_id),
                self.keys.retention,
            ],
            args=[event.id, to_ms(now)],
        )
        return None if int(seq) < 0 else int(seq)

    async def purge_dead_letter(self, event: EventRecord, *, now: datetime) -> bool:
        """Remove a dead letter; its order is then deleted RELAY_RETENTION from ``now``."""
        removed = await self._purge(
            keys=[
                self.keys.dead_letters,
                self.keys.project_dead_letters(event.project_id),
                self.keys.event(event.id),
                self.keys.retention,
            ],
            args=[event.id, to_ms(now + self.lifetimes.retention)],
        )
        return bool(removed)

    async def due(self, *, until: datetime, limit: int) -> list[tuple[str, int]]:
        """Outbox entries due by ``until``: (event id, due ms), oldest first."""
        rows = await self.redis.zrangebyscore(
            self.keys.outbox, "-inf", to_ms(until), start=0, num=limit, withscores=True
        )
        return [(event_id, int(score)) for event_id, score in rows]

    async def outbox_size(self) -> int:
        return int(await self.redis.zcard(self.keys.outbox))

    async def dead_letters(
        self,
        *,
        project_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> DeadLetterPage:
        """Oldest first. The cursor is ``<score>:<event id>`` of the last row returned: the walk
        goes on after it (relay.ranges, which orders members sharing a score by id)."""
        key = self.keys.dead_letters_of(project_id)
        event_ids, next_cursor = await cursor_page(self.redis, key, since=since, limit=limit, cursor=cursor)
        events = await self.get_many(event_ids)
        return DeadLetterPage(events, next_cursor)

    async def last_attempts(self, event_ids: list[str]) -> dict[str, Attempt]:
        """Each event's latest attempt, where it has one, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.lindex(self.keys.attempts(event_id), -1)
            raws = await pipe.execute()
        return {
            event_id: Attempt.model_validate_json(raw)
            for event_id, raw in zip(event_ids, raws, strict=True)
            if raw is not None
        }

    async def dead_letter_count(self, *, project_id: str | None = None, since: datetime | None = None) -> int:
        key = self.keys.dead_letters_of(project_id)
        return int(await self.redis.zcount(key, to_ms(since) if since else 0, "+inf"))

    async def dead_letter_counts(self, project_ids: list[str]) -> dict[str, int]:
        """Each project's dead letters, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for project_id in project_ids:
                pipe.zcard(self.keys.project_dead_letters(project_id))
            counts = await pipe.execute()
        return dict(zip(project_ids, (int(count) for count in counts), strict=True))
