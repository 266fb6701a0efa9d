"""Events and their delivery bookkeeping: attempts, the outbox and the dead-letter queue.

An event is a Redis hash (``EventRecord``). ``seq`` fences delivery jobs: every (re)scheduling
bumps it and the job carries the ``seq`` it was enqueued for, so a stale or duplicated job finds
a different ``seq`` and does nothing. The outbox ZSET (event id -> due time in ms) holds every
event that still needs an attempt; it, not arq, is the source of truth the sweeper repairs from.

    {p}:event:{id}               HASH EventRecord
    {p}:event:{id}:attempts      LIST of JSON Attempt, oldest first
    {p}:outbox                   ZSET event id -> due time (ms)
    {p}:dlq                      ZSET event id -> dead-lettered at (ms)
    {p}:project:{id}:dlq         ZSET the same, per project
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

from relay.errors import InvalidInput
from relay.models import Attempt, EventRecord, WebhookStatus
from relay.store import Keys, event_from_fields, to_ms

MAX_ATTEMPT_LOG = 200

# Record one attempt's outcome if the event is still at the job's seq.
# KEYS: event, attempts, purchase, outbox, dlq, project dlq
# ARGV: seq, attempt JSON ('' for none), new state, due ms (retrying) or now ms (failed),
#       next_attempt_at, dead_at, attempt log length kept
FINISH_LUA = """
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[7]), -1)
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
end
local state = ARGV[3]
redis.call('HSET', KEYS[1], 'state', state, 'next_attempt_at', ARGV[5], 'dead_at', ARGV[6])
redis.call('HSET', KEYS[3], 'webhook_status', state)
local event_id = string.match(KEYS[1], '([^:]+)$')
if state == 'retrying' then
  redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('ZADD', KEYS[4], ARGV[4], event_id)
elseif state == 'failed' then
  redis.call('ZREM', KEYS[4], event_id)
  redis.call('ZADD', KEYS[5], ARGV[4], event_id)
  redis.call('ZADD', KEYS[6], ARGV[4], event_id)
else
  redis.call('ZREM', KEYS[4], event_id)
end
return 1
"""

# Send an event again from a fresh retry budget (replay, retry-webhook). Returns the new seq, or -1.
# KEYS: event, purchase, outbox, dlq, project dlq. ARGV: now ms.
REQUEUE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local event_id = string.match(KEYS[1], '([^:]+)$')
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', 0, 'next_attempt_at', '', 'dead_at', '')
redis.call('HSET', KEYS[2], 'webhook_status', 'pending')
redis.call('ZREM', KEYS[4], event_id)
redis.call('ZREM', KEYS[5], event_id)
redis.call('ZADD', KEYS[3], ARGV[1], event_id)
return seq
"""

# Move the event's next attempt later without attempting (its endpoint is saturated).
# KEYS: event, outbox. ARGV: seq, due ms, next_attempt_at. Returns 1, or 0 if a newer job owns it.
POSTPONE_LUA = """
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[1] then return 0 end
local event_id = string.match(KEYS[1], '([^:]+)$')
redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'next_attempt_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], event_id)
return 1
"""

# Remove a dead letter for good (the event and its attempt log stay for the purchase's history).
PURGE_LUA = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return removed
"""


@dataclass(frozen=True)
class DeadLetterPage:
    events: list[EventRecord]
    next_cursor: str | None


class EventStore:
    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self._finish = redis.register_script(FINISH_LUA)
        self._requeue = redis.register_script(REQUEUE_LUA)
        self._purge = redis.register_script(PURGE_LUA)
        self._postpone = redis.register_script(POSTPONE_LUA)

    async def get(self, event_id: str) -> EventRecord | None:
        fields = await self.redis.hgetall(self.keys.event(event_id))  # type: ignore[misc]
        return event_from_fields(fields) if fields else None

    async def get_many(self, event_ids: list[str]) -> list[EventRecord]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.hgetall(self.keys.event(event_id))
            rows = await pipe.execute()
        return [event_from_fields(fields) for fields in rows if fields]

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

    async def finish_attempt(
        self,
        event: EventRecord,
        *,
        seq: int,
        attempt: Attempt | None,
        state: WebhookStatus,
        now: datetime,
    ) -> bool:
        """Log ``attempt`` and move the event to ``state``; False if a newer job owns the event."""
        due = attempt.next_attempt_at if attempt else None
        score = to_ms(due) if state is WebhookStatus.RETRYING and due else to_ms(now)
        applied = await self._finish(
            keys=[
                self.keys.event(event.id),
                self.keys.attempts(event.id),
                self.keys.purchase(event.order_id),
                self.keys.outbox,
                self.keys.dead_letters,
                self.keys.project_dead_letters(event.project_id),
            ],
            args=[
                seq,
                attempt.model_dump_json() if attempt else "",
                state.value,
                score,
                due.isoformat() if due else "",
                now.isoformat() if state is WebhookStatus.FAILED else "",
                MAX_ATTEMPT_LOG,
            ],
        )
        return bool(applied)

    async def postpone(self, event: EventRecord, *, seq: int, until: datetime) -> bool:
        """Schedule the event's next job at ``until`` (seq + 1) without logging an attempt."""
        applied = await self._postpone(
            keys=[self.keys.event(event.id), self.keys.outbox],
            args=[seq, to_ms(until), until.isoformat()],
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
            ],
            args=[to_ms(now)],
        )
        return None if int(seq) < 0 else int(seq)

    async def purge_dead_letter(self, event: EventRecord) -> bool:
        removed = await self._purge(
            keys=[self.keys.dead_letters, self.keys.project_dead_letters(event.project_id)],
            args=[event.id],
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
        """Oldest first. The cursor is ``<score>:<event id>`` of the last row returned; members
        sharing a score are ordered by id, so rows up to the cursor are skipped exactly."""
        key = self.keys.project_dead_letters(project_id) if project_id else self.keys.dead_letters
        low, after = (to_ms(since) if since else 0), ""
        if cursor:
            low, after = _parse_cursor(cursor)
        rows: list[tuple[str, int]] = []
        offset = 0
        while len(rows) <= limit:
            batch = await self.redis.zrangebyscore(
                key, low, "+inf", start=offset, num=limit + 1, withscores=True
            )
            if not batch:
                break
            offset += len(batch)
            rows += [
                (event_id, int(score))
                for event_id, score in batch
                if not (cursor and int(score) == low and event_id <= after)
            ]
        page = rows[:limit]
        events = await self.get_many([event_id for event_id, _ in page])
        next_cursor = f"{page[-1][1]}:{page[-1][0]}" if len(rows) > limit else None
        return DeadLetterPage(events, next_cursor)


def _parse_cursor(cursor: str) -> tuple[int, str]:
    score, _, event_id = cursor.partition(":")
    if not score.isdigit() or not event_id:
        raise InvalidInput("cursor is not one this API returned")
    return int(score), event_id


async def last_attempts(events: EventStore, event_ids: list[str]) -> dict[str, Attempt]:
    async with events.redis.pipeline(transaction=False) as pipe:
        for event_id in event_ids:
            pipe.lindex(events.keys.attempts(event_id), -1)
        raws = await pipe.execute()
    return {
        event_id: Attempt.model_validate_json(raw)
        for event_id, raw in zip(event_ids, raws, strict=True)
        if raw is not None
    }
