"""The catalogue (projects, items) and purchases in Redis, and the atomic ingest step.

Key names are ``relay.schema``'s; the ingest script is ``relay/lua/ingest.lua``. Events, attempts,
the outbox and the dead-letter queue are ``relay.events``'.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from relay import lua
from relay.crypto import SecretBox
from relay.errors import SoldOut
from relay.event_body import BODY_END, METADATA_JOIN, metadata_json, reason_json
from relay.event_types import Webhook, event_body_head, event_type, lua_refund_table
from relay.jsonutil import dumps
from relay.models import (
    ID_PATTERN,
    RANK,
    EventRecord,
    Item,
    OrderKind,
    PaymentOutcome,
    Plan,
    Project,
    Purchase,
    PurchaseStatus,
    WebhookStatus,
    iso_z,
    to_ms,
)
from relay.ranges import cursor_page
from relay.retention import DEFAULT_LIFETIMES, Lifetimes
from relay.schema import Keys

if TYPE_CHECKING:  # the job's writes are built by the queue's owner, workers.arq_compat
    from workers.arq_compat import JobWrite

UNMATCHED_KEEP = 1000
UNMATCHED_TEXT = 128  # characters kept of each text field of an unknown-order record


@dataclass(frozen=True)
class DeliveryTarget:
    project: Project | None
    override: str | None  # the webhook_url of the event's item or plan (relay.event_types.Webhook)
    disabled: frozenset[str]  # the digests (Keys.endpoint_digest) of the project's disabled endpoints

    @property
    def url(self) -> str | None:
        """The item's or plan's webhook URL, else the project's."""
        return self.override or (self.project.webhook_url if self.project else None)


def _lua_string(text: str) -> str:
    """``text`` as a Lua string literal (printable ASCII only: JSON's escapes of it are Lua's)."""
    assert text.isascii(), text
    assert text.isprintable(), text
    return json.dumps(text)


def ingest_script() -> str:
    """ingest.lua, after what it is loaded with: the status ladder it checks (``RANK``, from
    ``relay.models.RANK``), the text it joins an event body with (``relay.event_body``), each
    paying type's refund type (``relay.event_types``) and the period arithmetic (lib/periods.lua)."""
    ranks = ", ".join(f"{status.value} = {rank}" for status, rank in RANK.items())
    joins = f"local METADATA_JOIN, BODY_END = {_lua_string(METADATA_JOIN)}, {_lua_string(BODY_END)}"
    loaded = f"local RANK = {{{ranks}}}\n{joins}\n{lua_refund_table()}\n{lua.library('periods')}\n"
    return loaded + lua.source("ingest")


PURCHASE_STATE_FIELDS = (
    *("status", "paid_at", "webhook_status", "event_id", "updated_at", "invoice_url"),
    "oversold",  # written by ingest.lua only
)
# An order's hash names each refund it sent: refund:{key} -> the refund's event id (ingest.lua).
REFUND_FIELD = "refund:"
# Left out of an item's doc while they have their default: the doc every purchase stores stays small.
_DEFAULTS = {"kind": OrderKind.ITEM, "event_type": "item.purchased", "quantity": 1}


def purchase_template(purchase: Purchase) -> dict[str, str]:
    """The purchase hash fields besides its state: ``doc`` (the fixed fields but metadata, unset
    ones left out), the metadata once, and the head of its event body (relay.event_types), until
    it is paid."""
    defaults = {name for name, value in _DEFAULTS.items() if getattr(purchase, name) == value}
    doc = purchase.model_dump(
        mode="json",
        exclude={"metadata", "refund_event_ids", *PURCHASE_STATE_FIELDS, *defaults},
        exclude_none=True,
    )
    return {
        "doc": dumps(doc),
        "metadata": metadata_json(purchase.metadata),
        "event_head": event_body_head(purchase),
    }


def _integral_amount(outcome: PaymentOutcome) -> str:
    """The outcome's amount as the integer text the script compares with the purchase's amount
    (always whole): floored for an ``at_least`` rule, '' (matches nothing) when an ``exact``
    amount has a fraction."""
    amount = outcome.amount
    if outcome.amount_rule == "at_least":
        return str(int(amount.to_integral_value(rounding=ROUND_FLOOR)))
    return str(int(amount)) if amount == amount.to_integral_value() else ""


REFUNDED = PurchaseStatus.REFUNDED
# The ingest script's refund arguments for an outcome that is no refund (a settlement's hot path).
NO_REFUND = ("", "", "0", "null")


def _refund_args(outcome: PaymentOutcome, refunded_at: datetime) -> tuple[str, str, str, str]:
    """A refund's key (the gateway's refund id, else its status and amount), time, amount (the
    whole amount when the gateway says none) and reason as JSON."""
    amount = outcome.amount if outcome.refund_amount is None else outcome.refund_amount
    key = outcome.refund_key or f"{outcome.raw_status}:{amount}"
    return key[:200], iso_z(refunded_at), str(int(amount)), reason_json(outcome.refund_reason)


ITEM_ID = re.compile(ID_PATTERN)


def _with_stock(item: Item, left: str | None) -> Item:
    """``item`` with its live count of units left (an item without stock has none)."""
    if item.stock is None:
        return item
    return item.model_copy(update={"stock": max(0, int(left or 0))})


def purchase_from_fields(fields: dict[str, str]) -> Purchase:
    data: dict[str, Any] = dict(json.loads(fields["doc"]))
    if "metadata" in fields:  # else a purchase stored before metadata had its own field: in doc
        data["metadata"] = json.loads(fields["metadata"])
    for name in PURCHASE_STATE_FIELDS:
        data[name] = fields.get(name) or None
    data["refund_event_ids"] = [
        event_id for name, event_id in fields.items() if name.startswith(REFUND_FIELD)
    ]
    return Purchase.model_validate(data)


def _secret_places(data: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """Where a stored project's signing secrets are, as (object, key): the current one, each
    previous one, and the one previous secret of a project stored before rotations kept them all."""
    places = [(data, "webhook_secret"), (data, "previous_webhook_secret")]
    places += [(retired, "secret") for retired in data.get("previous_secrets", [])]
    return [(holder, key) for holder, key in places if holder.get(key)]


def _bounded(entry: dict[str, Any]) -> dict[str, Any]:
    """An unknown-order record cut to a small summary: each text field to UNMATCHED_TEXT characters
    (a lone surrogate, which UTF-8 cannot carry, becomes ``?``)."""
    return {key: _short(value) if isinstance(value, str) else value for key, value in entry.items()}


def _short(text: str) -> str:
    return text[:UNMATCHED_TEXT].encode(errors="replace").decode()


class Store:
    """Projects, items and purchases. ``redis`` must decode responses to ``str``."""

    def __init__(
        self, redis: Redis, *, prefix: str, box: SecretBox, lifetimes: Lifetimes = DEFAULT_LIFETIMES
    ) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.box = box
        self.lifetimes = lifetimes
        self._ingest = redis.register_script(ingest_script())
        self._create_purchase = redis.register_script(lua.source("create_purchase"))
        self._add_template = redis.register_script(lua.source("add_template"))
        self._remember_invoice = redis.register_script(lua.source("remember_invoice"))
        self._prefix = prefix + ":"
        self._indexed = False  # whether the older projects are on the listing (checked once a process)
        self._indexing = asyncio.Lock()
        self._renewal_notice_ms = int(lifetimes.renewal_notice.total_seconds() * 1000)

    # --- projects ---------------------------------------------------------------------------

    async def get_project(self, project_id: str) -> Project | None:
        raw = await self.redis.get(self.keys.project(project_id))
        return None if raw is None else self._open(raw)

    def _seal(self, project: Project) -> str:
        """The project as stored: its signing secrets, current and previous, encrypted."""
        sealed = project.model_dump(mode="json")
        for holder, key in _secret_places(sealed):
            holder[key] = self.box.encrypt(holder[key])
        return dumps(sealed)

    def _open(self, raw: str) -> Project:
        """A stored project, its secrets decrypted. One stored before rotations kept every previous
        secret has at most one, in ``previous_webhook_secret`` until ``previous_secret_expires_at``."""
        data = json.loads(raw)
        for holder, key in _secret_places(data):
            holder[key] = self.box.decrypt(holder[key])
        legacy = data.pop("previous_webhook_secret", None)
        expires_at = data.pop("previous_secret_expires_at", None)
        if legacy and expires_at:
            data.setdefault("previous_secrets", []).append({"secret": legacy, "expires_at": expires_at})
        return Project.model_validate(data)

    async def project_ids(self) -> list[str]:
        found = []
        async for key in self.redis.scan_iter(match=self.keys.project("*"), count=500):
            project_id = self.keys.project_id_of(key)
            if project_id is not None:
                found.append(project_id)
        return found

    async def reencrypt_project(self, project_id: str) -> bool:
        """Re-encrypt one project's secrets under the first key (``relay keys rotate``)."""
        stored_at = self.keys.project(project_id)
        raw = await self.redis.get(stored_at)
        if raw is None:
            return False
        data = json.loads(raw)
        for holder, field in _secret_places(data):
            holder[field] = self.box.rotate(holder[field])
        await self.redis.set(stored_at, dumps(data), xx=True)
        return True

    async def project_for_client(self, client_id: str) -> Project | None:
        project_id = await self.redis.get(self.keys.client(client_id))
        return None if project_id is None else await self.get_project(project_id)

    async def update_project(self, project_id: str, change: Callable[[Project], Project]) -> Project | None:
        """Apply ``change`` to the project as it is now and store the result, atomically: a change
        made meanwhile by another request (a second rotation, a URL saved) is read again and kept,
        never overwritten. None when there is no such project."""
        key = self.keys.project(project_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        return None
                    changed = change(self._open(raw))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    self._write_project(pipe, changed)
                    await pipe.execute()
                    return changed
                except WatchError:
                    continue

    async def put_project(self, project: Project) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            self._write_project(pipe, project)
            await pipe.execute()

    def _write_project(self, pipe: Pipeline, project: Project) -> None:
        pipe.set(self.keys.project(project.id), self._seal(project))
        pipe.set(self.keys.client(project.client_id), project.id)
        pipe.zadd(self.keys.projects, {project.id: to_ms(project.created_at)})

    async def project_page(self, *, limit: int, cursor: str | None) -> tuple[list[Project], str | None]:
        """One page of every project, oldest first (``relay.ranges.cursor_page``), and the next
        page's cursor. Projects made before the listing existed are indexed the first time."""
        if not self._indexed:
            async with self._indexing:  # concurrent first listings index once
                if not self._indexed:
                    await self._index_projects()
        ids, next_cursor = await cursor_page(
            self.redis, self.keys.projects, since=None, limit=limit, cursor=cursor
        )
        raws = await self.redis.mget([self.keys.project(project_id) for project_id in ids]) if ids else []
        return [self._open(raw) for raw in raws if raw is not None], next_cursor

    async def _index_projects(self) -> None:
        """Put every stored project on the listing, once per Redis (``{p}:projects:indexed``; ZADD
        of what is already there changes nothing, so two processes doing it at once is harmless)."""
        if not await self.redis.exists(self.keys.projects_indexed):
            for project_id in await self.project_ids():
                project = await self.get_project(project_id)
                if project is not None:
                    await self.redis.zadd(self.keys.projects, {project.id: to_ms(project.created_at)})
            await self.redis.set(self.keys.projects_indexed, "1")
        self._indexed = True

    # --- items ------------------------------------------------------------------------------

    async def get_item(self, item_id: str) -> Item | None:
        """The item, its ``stock`` what is left now (the live count, relay.lua.create_purchase).
        No id of another form is an item's (``{id}:stock`` is its count, not an item)."""
        if not ITEM_ID.fullmatch(item_id):
            return None
        raw, left = await self.redis.mget([self.keys.item(item_id), self.keys.item_stock(item_id)])
        return None if raw is None else _with_stock(Item.model_validate_json(raw), left)

    def webhook_source(self, event: EventRecord) -> str | None:
        """The key of the catalogue entry whose webhook_url the event goes to before the project's
        (its type's ``Webhook``): its item or its plan, or none."""
        match event_type(event.type).webhook:
            case Webhook.ITEM if event.item_id:
                return self.keys.item(event.item_id)
            case Webhook.PLAN if event.plan_id:
                return self.keys.plan(event.plan_id)
        return None

    async def delivery_target(self, event: EventRecord) -> DeliveryTarget:
        """What a delivery attempt resolves its URL and secret from, in one MGET: the project, the
        item or plan (``webhook_source``), and the digests of the project's disabled endpoints
        (relay.endpoints)."""
        source = self.webhook_source(event)
        keys = [self.keys.project(event.project_id), self.keys.project_disabled_endpoints(event.project_id)]
        raw_project, disabled, *raw_source = await self.redis.mget([*keys, source] if source else keys)
        override = json.loads(raw_source[0]).get("webhook_url") if raw_source and raw_source[0] else None
        return DeliveryTarget(
            project=None if raw_project is None else self._open(raw_project),
            override=override,
            disabled=frozenset(disabled.split(",")) if disabled else frozenset(),
        )

    async def put_item(self, item: Item, *, set_stock: bool) -> None:
        """Store the item; with ``set_stock`` (the stock was given), its live count becomes
        ``item.stock`` (units left besides those reserved now), or unlimited (None). Without, the
        count is left to the purchases moving it."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.item(item.id), item.model_dump_json())
            pipe.sadd(self.keys.project_items(item.project_id), item.id)
            if set_stock:
                if item.stock is None:
                    pipe.delete(self.keys.item_stock(item.id))
                else:
                    pipe.set(self.keys.item_stock(item.id), item.stock)
            await pipe.execute()

    async def delete_item(self, item: Item) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.item(item.id), self.keys.item_stock(item.id))
            pipe.srem(self.keys.project_items(item.project_id), item.id)
            await pipe.execute()

    async def list_items(self, project_id: str) -> list[Item]:
        item_ids = sorted(await self.redis.smembers(self.keys.project_items(project_id)))  # type: ignore[misc]
        if not item_ids:
            return []
        keys = [
            key for item_id in item_ids for key in (self.keys.item(item_id), self.keys.item_stock(item_id))
        ]
        raws = await self.redis.mget(keys)
        items = [
            _with_stock(Item.model_validate_json(raw), left)
            for raw, left in zip(raws[::2], raws[1::2], strict=True)
            if raw is not None
        ]
        return sorted(items, key=lambda item: (item.created_at, item.id))

    # --- plans ------------------------------------------------------------------------------

    async def get_plan(self, plan_id: str) -> Plan | None:
        raw = await self.redis.get(self.keys.plan(plan_id))
        return None if raw is None else Plan.model_validate_json(raw)

    async def put_plan(self, plan: Plan) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.plan(plan.id), plan.model_dump_json())
            pipe.sadd(self.keys.project_plans(plan.project_id), plan.id)
            await pipe.execute()

    async def list_plans(self, project_id: str) -> list[Plan]:
        plan_ids = sorted(await self.redis.smembers(self.keys.project_plans(project_id)))  # type: ignore[misc]
        if not plan_ids:
            return []
        raws = await self.redis.mget([self.keys.plan(plan_id) for plan_id in plan_ids])
        plans = [Plan.model_validate_json(raw) for raw in raws if raw is not None]
        return sorted(plans, key=lambda plan: (plan.created_at, plan.id))

    # --- purchases --------------------------------------------------------------------------

    async def create_purchase(
        self, purchase: Purchase, *, expires_at: datetime | None = None, reserve: bool = False
    ) -> bool:
        """Store a new purchase, only if its order id is not taken, nor a shop payment's own order
        id in its project (create_purchase.lua, one atomic step): False, and nothing written, when
        it is. A stored purchase is never overwritten. With ``reserve``, its item's units
        (``quantity``) are reserved in the same step, or SoldOut and nothing written. It expires at
        ``expires_at``, by default RELAY_PURCHASE_EXPIRY after it was made, unless paid by then
        (relay.retention)."""
        expires_at = expires_at or purchase.created_at + self.lifetimes.purchase_expiry
        state = purchase.model_dump(
            mode="json", include=set(PURCHASE_STATE_FIELDS), exclude={"invoice_url", "oversold"}
        )
        fields = purchase_template(purchase) | {key: value or "" for key, value in state.items()}
        created = await self._create_purchase(
            keys=[
                self.keys.purchase(purchase.order_id),
                self.keys.project_purchases(purchase.project_id),
                self.keys.expiry,
                self.keys.stats,
                self.keys.project_payment(purchase.project_id, purchase.merchant_order_id)
                if purchase.merchant_order_id is not None
                else "-",
                self.keys.item_stock(purchase.item_id) if reserve else "-",
            ],
            args=[
                purchase.order_id,
                to_ms(purchase.created_at),
                to_ms(expires_at),
                purchase.quantity if reserve else 0,
                *(part for pair in fields.items() for part in pair),
            ],
        )
        if created == -1:
            raise SoldOut(f"item {purchase.item_id} has fewer than {purchase.quantity} left")
        return bool(created)

    async def remember_invoice(self, order_id: str, invoice_url: str) -> None:
        """Keep an order's invoice URL (a shop payment asked for again answers it), only while the
        order exists."""
        await self._remember_invoice(keys=[self.keys.purchase(order_id)], args=[invoice_url])

    async def payment(self, project_id: str, merchant_order_id: str) -> Purchase | None:
        """The project's shop payment whose own order id is ``merchant_order_id``."""
        order_id = await self.redis.get(self.keys.project_payment(project_id, merchant_order_id))
        found = None if order_id is None else await self.get_purchase(order_id)
        return found if found is not None and found.project_id == project_id else None

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
        refunded_at: datetime | None = None,
    ) -> tuple[str, str, int]:
        """Apply ``outcome`` to its purchase in one atomic script (ingest.lua): its code, detail
        and the number of events it wrote. A settlement needs ``paid_at`` (the script raises it to
        the order's creation when earlier) and ``event_id``, a refund ``event_id`` and
        ``refunded_at``; ``job`` enqueues the event's first delivery."""
        job_args: list[str | bytes | int] = ["", "", 0, 0]
        if job is not None:
            job_args = [job.job_id, job.payload, job.score, job.expires_ms]
        code, detail, written = await self._ingest(
            keys=[
                self.keys.purchase(outcome.order_id),
                self.keys.event(event_id or "-"),
                self.keys.outbox,
                job.job_key if job else "-",
                job.result_key if job else "-",
                job.queue if job else "-",
                self.keys.retention,
            ],
            args=[
                outcome.gateway,
                outcome.status.value,
                now.isoformat(),
                _integral_amount(outcome),
                outcome.amount_rule,
                event_id,
                iso_z(paid_at) if paid_at else "",
                outcome.currency or "",
                to_ms(now),
                *job_args,
                to_ms(now + self.lifetimes.retention),
                self._prefix,
                *(_refund_args(outcome, refunded_at or now) if outcome.status is REFUNDED else NO_REFUND),
                self._renewal_notice_ms,
            ],
        )
        return str(code), str(detail), int(written)

    async def add_event_template(self, order_id: str) -> None:
        """Give a purchase without an event template (made before purchases carried one, or
        expired, which drops it) today's layout: doc without metadata, the metadata once, the
        body's head (add_template.lua: only while it exists and has no event)."""
        purchase = await self.get_purchase(order_id)
        if purchase is not None and purchase.event_id is None:
            template = purchase_template(purchase)
            await self._add_template(
                keys=[self.keys.purchase(order_id)], args=[part for pair in template.items() for part in pair]
            )

    async def record_unmatched(self, entry: dict[str, Any]) -> None:
        """Keep a bounded summary of a callback for an unknown order (the newest UNMATCHED_KEEP)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.keys.unmatched, dumps(_bounded(entry)))
            pipe.ltrim(self.keys.unmatched, 0, UNMATCHED_KEEP - 1)
            await pipe.execute()

    async def unmatched(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in await self.redis.lrange(self.keys.unmatched, 0, limit - 1)]  # type: ignore[misc]
