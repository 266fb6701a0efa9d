"""Redis repositories for the catalogue (projects, items) and purchases, and the atomic ingest step.

Keys, all under one prefix (``RELAY_KEY_PREFIX``, default ``relay``):

    {p}:project:{id}             JSON Project
    {p}:client:{client_id}       project id
    {p}:item:{id}                JSON Item
    {p}:project:{id}:items       SET of item ids
    {p}:purchase:{order_id}      HASH: doc (JSON of the fixed fields) + status, paid_at,
                                 webhook_status, event_id, updated_at; until paid, event_head
                                 and event_tail (relay.models.event_body_parts)
    {p}:project:{id}:purchases   ZSET order ids by creation time (ms)
    {p}:unmatched                LIST of callbacks for unknown orders (newest first, capped)

Events, attempts, the outbox and the dead-letter queue live in ``relay.events``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from decimal import ROUND_FLOOR
from typing import Any

from redis.asyncio import Redis

from relay.crypto import SecretBox
from relay.gateways import PaymentOutcome
from relay.jsonutil import dumps
from relay.models import (
    RANK,
    EventRecord,
    Item,
    Project,
    Purchase,
    PurchaseStatus,
    WebhookStatus,
    event_body_parts,
    iso_z,
)
from relay.queue import JobWrite

UNMATCHED_KEEP = 1000

# Ingest, the one atomic step of a callback: read the purchase, check the gateway, the amount and
# the status ladder (relay.models.RANK), then move the status and, on the move to paid, write the
# event (its body from the template stored with the purchase), its outbox entry and (given one)
# its first arq job, as arq's enqueue_job would: job key with expiry + queue entry, unless that
# job id exists. One round trip, no read-then-write race. Returns {code, detail}:
#   applied <status> | unknown_order | other_gateway <gateway> | amount_mismatch <amount>
#   | unchanged <status> | no_template (nothing written: store the template, run again)
# KEYS: purchase, event, outbox, arq job key, arq result key, arq queue
# ARGV: gateway, new status, now (ISO), amount (integer text, '' for none), amount rule,
#       event id, paid_at (ISO, stored), paid_at (the body's form), outbox score (ms),
#       job id ('' for none), job payload, job score, job expiry ms
INGEST_LUA = (
    "local RANK = {"
    + ", ".join(f"{status.value} = {rank}" for status, rank in RANK.items())
    + "}\n"
    + """
local found = redis.call('HMGET', KEYS[1], 'status', 'doc', 'event_head', 'event_tail')
if not found[1] then return {'unknown_order', ''} end
local doc = cjson.decode(found[2])
if doc.gateway ~= ARGV[1] then return {'other_gateway', doc.gateway} end
local amount = tonumber(ARGV[4])
local stored = string.format('%d', doc.amount)
if amount == nil or (ARGV[5] == 'at_least' and amount < doc.amount)
    or (ARGV[5] ~= 'at_least' and ARGV[4] ~= stored) then
  return {'amount_mismatch', stored}
end
if RANK[ARGV[2]] <= RANK[found[1]] then return {'unchanged', found[1]} end
local paid = ARGV[2] == 'paid'
if paid and not found[3] then return {'no_template', ''} end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[3])
if paid then
  local event_id = ARGV[6]
  redis.call('HSET', KEYS[1], 'paid_at', ARGV[7], 'event_id', event_id, 'webhook_status', 'pending')
  redis.call('HDEL', KEYS[1], 'event_head', 'event_tail')
  redis.call('HSET', KEYS[2], 'id', event_id, 'project_id', doc.project_id, 'order_id', doc.order_id,
    'item_id', doc.item_id, 'body', found[3] .. ARGV[8] .. found[4], 'state', 'pending',
    'seq', '0', 'attempts', '0', 'created_at', ARGV[3], 'next_attempt_at', '', 'dead_at', '')
  redis.call('ZADD', KEYS[3], ARGV[9], event_id)
  if ARGV[10] ~= '' and redis.call('EXISTS', KEYS[4], KEYS[5]) == 0 then
    redis.call('PSETEX', KEYS[4], ARGV[13], ARGV[11])
    redis.call('ZADD', KEYS[6], ARGV[12], ARGV[10])
  end
end
return {'applied', ARGV[2]}
"""
)


SECRET_FIELDS = ("webhook_secret", "previous_webhook_secret")
PURCHASE_STATE_FIELDS = ("status", "paid_at", "webhook_status", "event_id", "updated_at")


def event_template(purchase: Purchase) -> dict[str, str]:
    """The purchase hash fields INGEST_LUA builds the event body from."""
    head, tail = event_body_parts(purchase)
    return {"event_head": head, "event_tail": tail}


def _integral_amount(outcome: PaymentOutcome) -> str:
    """The outcome's amount as the integer text the script compares with the purchase's amount
    (always whole): floored for an ``at_least`` rule, '' (matches nothing) when an ``exact``
    amount has a fraction."""
    amount = outcome.amount
    if outcome.amount_rule == "at_least":
        return str(int(amount.to_integral_value(rounding=ROUND_FLOOR)))
    return str(int(amount)) if amount == amount.to_integral_value() else ""


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.outbox = f"{prefix}:outbox"
        self.dead_letters = f"{prefix}:dlq"
        self.unmatched = f"{prefix}:unmatched"

    def project(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}"

    def client(self, client_id: str) -> str:
        return f"{self.prefix}:client:{client_id}"

    def item(self, item_id: str) -> str:
        return f"{self.prefix}:item:{item_id}"

    def project_items(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:items"

    def purchase(self, order_id: str) -> str:
        return f"{self.prefix}:purchase:{order_id}"

    def project_purchases(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:purchases"

    def event(self, event_id: str) -> str:
        return f"{self.prefix}:event:{event_id}"

    def attempts(self, event_id: str) -> str:
        return f"{self.prefix}:event:{event_id}:attempts"

    def project_dead_letters(self, project_id: str) -> str:
        return f"{self.prefix}:project:{project_id}:dlq"


def event_from_fields(fields: dict[str, str]) -> EventRecord:
    return EventRecord.model_validate({key: (value or None) for key, value in fields.items()})


def purchase_from_fields(fields: dict[str, str]) -> Purchase:
    data: dict[str, Any] = dict(json.loads(fields["doc"]))
    for name in PURCHASE_STATE_FIELDS:
        data[name] = fields.get(name) or None
    return Purchase.model_validate(data)


class Store:
    """Projects, items and purchases. ``redis`` must decode responses to ``str``."""

    def __init__(self, redis: Redis, *, prefix: str, box: SecretBox) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.box = box
        self._ingest = redis.register_script(INGEST_LUA)

    # --- projects ---------------------------------------------------------------------------

    async def get_project(self, project_id: str) -> Project | None:
        raw = await self.redis.get(self.keys.project(project_id))
        return None if raw is None else self._open(raw)

    def _seal(self, project: Project) -> str:
        """The project as stored: its signing secrets encrypted."""
        sealed = project.model_dump(mode="json")
        for field in SECRET_FIELDS:
            if sealed[field]:
                sealed[field] = self.box.encrypt(sealed[field])
        return dumps(sealed)

    def _open(self, raw: str) -> Project:
        data = json.loads(raw)
        for field in SECRET_FIELDS:
            if data.get(field):
                data[field] = self.box.decrypt(data[field])
        return Project.model_validate(data)

    async def project_ids(self) -> list[str]:
        found = []
        async for key in self.redis.scan_iter(match=self.keys.project("*"), count=500):
            rest = key.removeprefix(self.keys.project(""))
            if ":" not in rest:
                found.append(rest)
        return found

    async def reencrypt_project(self, project_id: str) -> bool:
        """Re-encrypt one project's secrets under the first key (``relay keys rotate``)."""
        key = self.keys.project(project_id)
        raw = await self.redis.get(key)
        if raw is None:
            return False
        data = json.loads(raw)
        for field in SECRET_FIELDS:
            if data.get(field):
                data[field] = self.box.rotate(data[field])
        await self.redis.set(key, dumps(data), xx=True)
        return True

    async def project_for_client(self, client_id: str) -> Project | None:
        project_id = await self.redis.get(self.keys.client(client_id))
        return None if project_id is None else await self.get_project(project_id)

    async def put_project(self, project: Project) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.project(project.id), self._seal(project))
            pipe.set(self.keys.client(project.client_id), project.id)
            await pipe.execute()

    # --- items ------------------------------------------------------------------------------

    async def get_item(self, item_id: str) -> Item | None:
        raw = await self.redis.get(self.keys.item(item_id))
        return None if raw is None else Item.model_validate_json(raw)

    async def get_project_and_item(self, project_id: str, item_id: str) -> tuple[Project | None, Item | None]:
        """Both in one round trip (MGET): what a delivery attempt resolves its URL and secret from."""
        keys = [self.keys.project(project_id), self.keys.item(item_id)]
        raw_project, raw_item = await self.redis.mget(keys)
        project = None if raw_project is None else self._open(raw_project)
        return project, None if raw_item is None else Item.model_validate_json(raw_item)

    async def put_item(self, item: Item) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.item(item.id), item.model_dump_json())
            pipe.sadd(self.keys.project_items(item.project_id), item.id)
            await pipe.execute()

    async def delete_item(self, item: Item) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.item(item.id))
            pipe.srem(self.keys.project_items(item.project_id), item.id)
            await pipe.execute()

    async def list_items(self, project_id: str) -> list[Item]:
        item_ids = sorted(await self.redis.smembers(self.keys.project_items(project_id)))  # type: ignore[misc]
        if not item_ids:
            return []
        raws = await self.redis.mget([self.keys.item(item_id) for item_id in item_ids])
        items = [Item.model_validate_json(raw) for raw in raws if raw is not None]
        return sorted(items, key=lambda item: (item.created_at, item.id))

    # --- purchases --------------------------------------------------------------------------

    async def create_purchase(self, purchase: Purchase) -> None:
        doc = purchase.model_dump(mode="json", exclude=set(PURCHASE_STATE_FIELDS))
        state = purchase.model_dump(mode="json", include=set(PURCHASE_STATE_FIELDS))
        fields = {"doc": dumps(doc)} | event_template(purchase)
        fields |= {key: value or "" for key, value in state.items()}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.purchase(purchase.order_id), mapping=fields)
            pipe.zadd(
                self.keys.project_purchases(purchase.project_id),
                {purchase.order_id: to_ms(purchase.created_at)},
            )
            await pipe.execute()

    async def get_purchase(self, order_id: str) -> Purchase | None:
        fields = await self.redis.hgetall(self.keys.purchase(order_id))  # type: ignore[misc]
        return purchase_from_fields(fields) if fields else None

    async def get_purchases(self, order_ids: Iterable[str]) -> list[Purchase]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for order_id in order_ids:
                pipe.hgetall(self.keys.purchase(order_id))
            rows = await pipe.execute()
        return [purchase_from_fields(fields) for fields in rows if fields]

    async def list_purchases(
        self, project_id: str, *, webhook_status: WebhookStatus | None = None, limit: int = 100
    ) -> list[Purchase]:
        """Newest first; with a filter, scans pages of the project's purchases until ``limit`` match."""
        found: list[Purchase] = []
        start, page = 0, max(limit, 200)
        while len(found) < limit:
            order_ids = await self.redis.zrevrange(
                self.keys.project_purchases(project_id), start, start + page - 1
            )
            if not order_ids:
                break
            for purchase in await self.get_purchases(order_ids):
                if webhook_status is None or purchase.webhook_status == webhook_status:
                    found.append(purchase)
            start += page
        return found[:limit]

    async def ingest(
        self,
        outcome: PaymentOutcome,
        *,
        now: datetime,
        paid_at: datetime | None = None,
        event_id: str = "",
        job: JobWrite | None = None,
    ) -> tuple[str, str]:
        """Apply ``outcome`` to its purchase in one atomic script (INGEST_LUA): its code and detail.
        A move to paid needs ``paid_at`` and ``event_id``; ``job`` enqueues the first delivery."""
        job_args: list[str | bytes | int] = ["", "", 0, 0]
        if job is not None:
            job_args = [job.job_id, job.payload, job.score, job.expires_ms]
        code, detail = await self._ingest(
            keys=[
                self.keys.purchase(outcome.order_id),
                self.keys.event(event_id or "-"),
                self.keys.outbox,
                job.job_key if job else "-",
                job.result_key if job else "-",
                job.queue if job else "-",
            ],
            args=[
                outcome.gateway,
                outcome.status.value,
                now.isoformat(),
                _integral_amount(outcome),
                outcome.amount_rule,
                event_id,
                paid_at.isoformat() if paid_at else "",
                iso_z(paid_at) if paid_at else "",
                to_ms(now),
                *job_args,
            ],
        )
        return str(code), str(detail)

    async def add_event_template(self, order_id: str) -> None:
        """Store the event body template of a purchase made before purchases carried one."""
        purchase = await self.get_purchase(order_id)
        if purchase is not None and purchase.status is not PurchaseStatus.PAID:
            await self.redis.hset(self.keys.purchase(order_id), mapping=event_template(purchase))  # type: ignore[misc]

    async def record_unmatched(self, entry: dict[str, Any]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.keys.unmatched, dumps(entry))
            pipe.ltrim(self.keys.unmatched, 0, UNMATCHED_KEEP - 1)
            await pipe.execute()

    async def unmatched(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in await self.redis.lrange(self.keys.unmatched, 0, limit - 1)]  # type: ignore[misc]
