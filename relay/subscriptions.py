"""Subscriptions: a buyer's periods of a plan, and the timers that move them.

A subscription is a Redis hash (``doc``, its fixed fields as JSON, and its state) with a
``version`` that every change bumps. Its first order's payment activates it and a renewal's payment
renews it, inside the ingest script (``relay/lua/ingest.lua``), which also sets its timer. Every
other move is computed here from what the subscription is now (``next_move``, a pure function) and
written by ``relay/lua/subscription_move.lua`` only at the version it was computed from: two
workers firing the same timer, or a timer racing a cancel, move it once. A renewal claims its
version (and moves its timer RENEWAL_LEASE on) before it makes and invoices the next period's order:
the same timer fired twice makes one order.

The timers are one sorted set (``{p}:subscriptions:due``: subscription id -> when its next move is
due, ms), which the worker's sweep reads by score: no scan. A subscription has one timer at a time:

    active, no renewal yet     RELAY_RENEWAL_NOTICE before the period ends: make the next period's
                               invoice, send subscription.renewal_due
    active, renewal unpaid     at the period's end: past_due
    past_due                   RELAY_SUBSCRIPTION_GRACE after the period's end: expired,
                               subscription.expired
    active, canceled           at the period's end: canceled, subscription.canceled
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay import lua
from relay.errors import Conflict, RelayError
from relay.event_body import SubscriptionEvent, SubscriptionRenewalDueEvent
from relay.jsonutil import dumps
from relay.metrics import Metrics
from relay.models import (
    OrderKind,
    Plan,
    Purchase,
    Subscription,
    SubscriptionStatus,
    iso_z,
    new_event_id,
    new_subscription_order_id,
    renewal_order_id,
    to_ms,
)
from relay.periods import next_period_end
from relay.retention import DEFAULT_LIFETIMES, Lifetimes
from relay.schema import Keys
from relay.store import Store
from workers.arq_compat import job_write

log = structlog.get_logger("relay.subscriptions")

STATE_FIELDS = (
    "status",
    "current_period_start",
    "current_period_end",
    "anchor",
    "cancel_at_period_end",
    "order_id",
    "pending_order_id",
    "invoice_url",
    "paid_at",
    "version",
    "updated_at",
)
BATCH = 200  # timers one sweep takes at most; the rest wait for the next sweep
FIRING = 20  # timers one sweep fires at once
# A renewal being invoiced holds its timer this long: a sweep that died or a gateway that failed
# leaves it to the sweep after, not to every sweep meanwhile.
RENEWAL_LEASE = timedelta(minutes=5)
# Invoice an order: the gateway's hosted page (or the sandbox checkout), None when there is none.
Invoicer = Callable[[Purchase], Awaitable[str | None]]


def subscription_from_fields(fields: dict[str, str]) -> Subscription:
    data: dict[str, Any] = dict(json.loads(fields["doc"]))
    for name in STATE_FIELDS:
        data[name] = fields.get(name) or None
    data["cancel_at_period_end"] = bool(fields.get("cancel_at_period_end"))
    data["version"] = int(fields.get("version") or 0)
    data["status"] = data["status"] or SubscriptionStatus.PENDING
    return Subscription.model_validate(data)


def subscription_fields(subscription: Subscription) -> dict[str, str]:
    """The hash a new subscription is stored as."""
    state = subscription.model_dump(mode="json", include=set(STATE_FIELDS))
    fields = {name: "" if value is None else str(value) for name, value in state.items()}
    fields["cancel_at_period_end"] = "1" if subscription.cancel_at_period_end else ""
    return {"doc": dumps(subscription.model_dump(mode="json", exclude=set(STATE_FIELDS)))} | fields


def subscription_to(
    plan: Plan,
    *,
    subscription_id: str,
    buyer_email: str,
    buyer_name: str | None,
    user_id: str | None,
    metadata: dict[str, Any],
    gateway: str,
    now: datetime,
) -> tuple[Subscription, Purchase]:
    """A new subscription to ``plan`` (its price and interval as they are now), pending its first
    order, and that order (a fresh id each call: drawn again when taken)."""
    order_id = new_subscription_order_id(subscription_id)
    subscription = Subscription(
        id=subscription_id,
        project_id=plan.project_id,
        plan_id=plan.id,
        plan_name=plan.name,
        amount=plan.price,
        currency=plan.currency,
        interval=plan.interval,
        interval_count=plan.interval_count,
        buyer_email=buyer_email,
        buyer_name=buyer_name,
        user_id=user_id,
        metadata=metadata,
        gateway=gateway,
        order_id=order_id,
        pending_order_id=order_id,
        created_at=now,
        updated_at=now,
    )
    return subscription, first_order(subscription, order_id=order_id, now=now)


def first_order(subscription: Subscription, *, order_id: str, now: datetime) -> Purchase:
    """The order that pays the first period; the period starts when it is paid (ingest.lua)."""
    return _order(subscription, order_id=order_id, event_type="subscription.activated", now=now)


def renewal_order(subscription: Subscription, *, now: datetime, grace: timedelta) -> Purchase:
    """The next period's order: it starts where the current period ends, whenever it is paid, and
    may be paid until the subscription would expire unpaid (``grace`` after that)."""
    start = subscription.current_period_end
    assert start is not None, subscription
    end = next_period_end(start, subscription.interval, subscription.interval_count, subscription.anchor)
    return _order(
        subscription,
        order_id=renewal_order_id(subscription.id, start),
        event_type="subscription.renewed",
        now=now,
        period=(start, end),
        pay_by=start + grace,
    )


def _order(
    subscription: Subscription,
    *,
    order_id: str,
    event_type: str,
    now: datetime,
    period: tuple[datetime, datetime] | None = None,
    pay_by: datetime | None = None,
) -> Purchase:
    return Purchase(
        order_id=order_id,
        kind=OrderKind.SUBSCRIPTION,
        event_type=event_type,
        project_id=subscription.project_id,
        item_name=subscription.plan_name,
        subscription_id=subscription.id,
        plan_id=subscription.plan_id,
        user_id=subscription.user_id,
        interval=None if period else subscription.interval,
        interval_count=None if period else subscription.interval_count,
        period_start=period[0] if period else None,
        period_end=period[1] if period else None,
        amount=subscription.amount,
        currency=subscription.currency,
        buyer_email=subscription.buyer_email,
        buyer_name=subscription.buyer_name,
        metadata=subscription.metadata,
        gateway=subscription.gateway,
        pay_by=pay_by,
        created_at=now,
        updated_at=now,
    )


def _whose(subscription: Subscription) -> dict[str, Any]:
    """The fields every subscription body takes from the subscription itself (the models keep
    their own order: these are passed by name)."""
    return {
        "subscription_id": subscription.id,
        "plan_id": subscription.plan_id,
        "plan_name": subscription.plan_name,
        "user_id": subscription.user_id,
        "buyer_email": subscription.buyer_email,
        "buyer_name": subscription.buyer_name,
        "metadata": subscription.metadata,
    }


def subscription_body(subscription: Subscription, event_type: str) -> str:
    """A subscription.expired or .canceled body: the subscription's last paid period."""
    start, end = subscription.current_period_start, subscription.current_period_end
    assert start is not None, subscription
    assert end is not None, subscription
    return SubscriptionEvent(
        event=event_type,
        **_whose(subscription),
        order_id=subscription.order_id,
        amount=subscription.amount,
        currency=subscription.currency,
        period_start=iso_z(start),
        period_end=iso_z(end),
        paid_at=iso_z(subscription.paid_at) if subscription.paid_at else None,
    ).model_dump_json()


def renewal_due_body(subscription: Subscription, order: Purchase, invoice_url: str | None) -> str:
    assert order.period_start is not None, order
    assert order.period_end is not None, order
    return SubscriptionRenewalDueEvent(
        **_whose(subscription),
        order_id=order.order_id,
        amount=order.amount,
        currency=order.currency,
        period_start=iso_z(order.period_start),
        period_end=iso_z(order.period_end),
        invoice_url=invoice_url,
    ).model_dump_json()


@dataclass(frozen=True)
class Move:
    """What is due for a subscription at a moment: its new fields, its next timer, the event the
    move sends, and whether it makes the next period's invoice first (``renew``)."""

    due: datetime | None
    fields: dict[str, str] = field(default_factory=dict)
    event_type: str | None = None
    renew: bool = False

    @property
    def changes(self) -> bool:
        return bool(self.fields or self.event_type or self.renew)

    @property
    def ends(self) -> bool:
        """It ends the subscription: RELAY_RETENTION later it is deleted (delete_finished.lua)."""
        return self.fields.get("status") in ENDED


ENDED = frozenset({SubscriptionStatus.EXPIRED.value, SubscriptionStatus.CANCELED.value})


def next_move(subscription: Subscription, now: datetime, lifetimes: Lifetimes) -> Move:
    """The table of the module docstring: what ``subscription`` does at ``now``."""
    if subscription.status is SubscriptionStatus.PENDING:
        # Its first invoice expired unpaid (a late payment still activates it while it is kept).
        unpaid_at = subscription.created_at + lifetimes.purchase_expiry
        return Move(due=None, fields={"status": "expired"}) if now >= unpaid_at else Move(due=unpaid_at)
    end = subscription.current_period_end
    if end is None:
        return Move(due=None)
    grace_end = end + lifetimes.subscription_grace
    match subscription.status:
        case SubscriptionStatus.ACTIVE if subscription.cancel_at_period_end:
            if now >= end:
                return Move(due=None, fields={"status": "canceled"}, event_type="subscription.canceled")
            return Move(due=end)
        case SubscriptionStatus.ACTIVE if subscription.pending_order_id is None:
            notice_at = end - lifetimes.renewal_notice
            if now >= notice_at:
                return Move(due=end, event_type="subscription.renewal_due", renew=True)
            return Move(due=notice_at)
        case SubscriptionStatus.ACTIVE:
            if now >= end:
                return Move(due=grace_end, fields={"status": "past_due"})
            return Move(due=end)
        case SubscriptionStatus.PAST_DUE:
            if now >= grace_end:
                return Move(due=None, fields={"status": "expired"}, event_type="subscription.expired")
            return Move(due=grace_end)
    return Move(due=None)


@dataclass(frozen=True)
class NewEvent:
    type: str
    body: str


class Subscriptions:
    """Subscriptions in Redis, and their moves. ``redis`` must decode responses to ``str``."""

    def __init__(
        self, redis: Redis, *, prefix: str, store: Store, lifetimes: Lifetimes = DEFAULT_LIFETIMES
    ) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.store = store
        self.lifetimes = lifetimes
        self._move = redis.register_script(lua.source("subscription_move"))

    async def create(self, subscription: Subscription, order: Purchase) -> bool:
        """Store a new subscription and its first order; False (nothing kept) when the order id
        is taken."""
        if not await self.store.create_purchase(order):
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.subscription(subscription.id), mapping=subscription_fields(subscription))
            pipe.zadd(
                self.keys.project_subscriptions(subscription.project_id),
                {subscription.id: to_ms(subscription.created_at)},
            )
            unpaid_at = subscription.created_at + self.lifetimes.purchase_expiry
            pipe.zadd(self.keys.subscriptions_due, {subscription.id: to_ms(unpaid_at)})
            await pipe.execute()
        return True

    async def get(self, subscription_id: str) -> Subscription | None:
        fields = await self.redis.hgetall(self.keys.subscription(subscription_id))  # type: ignore[misc]
        return subscription_from_fields(fields) if fields else None

    async def recent(self, project_id: str, *, limit: int = 100) -> list[Subscription]:
        """The project's subscriptions, newest first."""
        ids = await self.redis.zrevrange(self.keys.project_subscriptions(project_id), 0, limit - 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for subscription_id in ids:
                pipe.hgetall(self.keys.subscription(subscription_id))
            rows = await pipe.execute()
        return [subscription_from_fields(fields) for fields in rows if fields]

    async def move(
        self,
        subscription: Subscription,
        *,
        arq: ArqRedis,
        now: datetime,
        due: datetime | None,
        fields: dict[str, str] | None = None,
        delete: tuple[str, ...] = (),
        event: NewEvent | None = None,
    ) -> bool:
        """Apply a move at the version ``subscription`` was read at (subscription_move.lua);
        False when it has moved on since (nothing changes). A move that ends it (expired,
        canceled) puts it on the retention schedule."""
        ends = (fields or {}).get("status") in ENDED
        event_id = new_event_id() if event else ""
        job = job_write(arq, event_id, 0) if event else None
        pairs = [part for pair in (fields or {}).items() for part in pair]
        moved = await self._move(
            keys=[
                self.keys.subscription(subscription.id),
                self.keys.subscriptions_due,
                self.keys.event(event_id) if event else "-",
                self.keys.outbox,
                self.keys.project_events(subscription.project_id),
                job.job_key if job else "-",
                job.result_key if job else "-",
                job.queue if job else "-",
                self.keys.retention,
            ],
            args=[
                to_ms(now + self.lifetimes.retention) if ends else "",
                subscription.version,
                subscription.id,
                to_ms(due) if due else "",
                ",".join(delete),
                now.isoformat(),
                to_ms(now),
                event_id,
                event.type if event else "",
                event.body if event else "",
                subscription.project_id,
                subscription.plan_id,
                job.job_id if job else "",
                job.payload if job else "",
                job.score if job else 0,
                job.expires_ms if job else 0,
                *pairs,
            ],
        )
        return bool(moved)

    async def due(self, *, now: datetime, limit: int = BATCH) -> list[str]:
        """The subscriptions whose timer is due, oldest first."""
        return list(
            await self.redis.zrangebyscore(
                self.keys.subscriptions_due, "-inf", to_ms(now), start=0, num=limit
            )
        )

    async def count_due(self, *, now: datetime) -> int:
        return int(await self.redis.zcount(self.keys.subscriptions_due, "-inf", to_ms(now)))


MOVE_TRIES = 5  # a cancel read again after a concurrent move; five in a row is not contention


async def cancel(
    subscriptions: Subscriptions, subscription_id: str, *, arq: ArqRedis, now: datetime
) -> Subscription | None:
    """Cancel at the period's end: an active subscription stays active (``cancel_at_period_end``)
    until its timer ends it; a past_due one ends now (subscription.canceled); a pending one ends now
    without an event (nothing was paid). Canceling again changes nothing. None when it does not
    exist."""
    for _ in range(MOVE_TRIES):
        subscription = await subscriptions.get(subscription_id)
        if subscription is None:
            return None
        match subscription.status:
            case SubscriptionStatus.ACTIVE if not subscription.cancel_at_period_end:
                moved = await subscriptions.move(
                    subscription,
                    arq=arq,
                    now=now,
                    due=subscription.current_period_end,
                    fields={"cancel_at_period_end": "1"},
                )
            case SubscriptionStatus.PAST_DUE:
                body = subscription_body(subscription, "subscription.canceled")
                moved = await subscriptions.move(
                    subscription,
                    arq=arq,
                    now=now,
                    due=None,
                    fields={"status": "canceled"},
                    event=NewEvent("subscription.canceled", body),
                )
            case SubscriptionStatus.PENDING:
                moved = await subscriptions.move(
                    subscription, arq=arq, now=now, due=None, fields={"status": "canceled"}
                )
            case _:
                return subscription
        if moved:
            return await subscriptions.get(subscription_id)
    raise Conflict("the subscription kept changing while it was canceled; retry")


class Timers:
    """The worker's part: make the moves that are due (``relay/lua/subscription_move.lua``)."""

    def __init__(
        self,
        subscriptions: Subscriptions,
        *,
        arq: ArqRedis,
        invoicer: Invoicer,
        metrics: Metrics | None = None,
    ) -> None:
        self.subscriptions = subscriptions
        self.arq = arq
        self.invoicer = invoicer
        self.metrics = metrics

    async def sweep(self, *, now: datetime) -> int:
        """Fire every timer that is due (at most BATCH, FIRING at once: a renewal waits on its
        gateway's invoice API); the number of subscriptions moved."""
        gate = asyncio.Semaphore(FIRING)

        async def guarded(subscription_id: str) -> bool:
            async with gate:
                try:
                    return await self.fire(subscription_id, now=now)
                except RelayError as error:  # a gateway's invoice API failed: tried after the lease
                    log.warning(
                        "subscription_timer_failed", subscription_id=subscription_id, error=str(error)
                    )
                except (RedisError, OSError):
                    raise  # the store failed: the sweep says so, the timer stays due
                except Exception:  # a subscription that cannot be read must not stop the others
                    log.exception("subscription_timer_broken", subscription_id=subscription_id)
                    await self.postpone(subscription_id, until=now + RENEWAL_LEASE)
                return False

        due = await self.subscriptions.due(now=now)
        return sum(await asyncio.gather(*(guarded(subscription_id) for subscription_id in due)))

    async def invoiced(self, order: Purchase) -> str | None:
        """Store a renewal's order (one per period: an earlier sweep's is taken as it is) and
        invoice it unless it already was; its invoice URL. It expires when it may no longer be paid."""
        store = self.subscriptions.store
        if not await store.create_purchase(order, expires_at=order.pay_by):
            existing = await store.get_purchase(order.order_id)
            if existing is not None and existing.invoice_url:
                return existing.invoice_url
        invoice_url = await self.invoicer(order)
        if invoice_url:
            await store.remember_invoice(order.order_id, invoice_url)
        return invoice_url

    async def postpone(self, subscription_id: str, *, until: datetime) -> None:
        """Move a timer on without reading its subscription (one that cannot be read)."""
        key = self.subscriptions.keys.subscriptions_due
        await self.subscriptions.redis.zadd(key, {subscription_id: to_ms(until)}, xx=True)

    async def fire(self, subscription_id: str, *, now: datetime) -> bool:
        subscriptions = self.subscriptions
        subscription = await subscriptions.get(subscription_id)
        if subscription is None:
            await subscriptions.redis.zrem(subscriptions.keys.subscriptions_due, subscription_id)
            return False
        move = next_move(subscription, now, subscriptions.lifetimes)
        if not move.changes:
            await subscriptions.move(subscription, arq=self.arq, now=now, due=move.due)  # its timer only
            return False
        fields, event = dict(move.fields), None
        if move.renew:
            # Claimed before its order is made: a second sweep firing the same timer finds another
            # version here, instead of making and invoicing an order nobody is told about.
            if not await subscriptions.move(subscription, arq=self.arq, now=now, due=now + RENEWAL_LEASE):
                return False
            subscription = subscription.model_copy(update={"version": subscription.version + 1})
            order = renewal_order(subscription, now=now, grace=subscriptions.lifetimes.subscription_grace)
            invoice_url = await self.invoiced(order)
            fields |= {"pending_order_id": order.order_id, "invoice_url": invoice_url or ""}
            event = NewEvent("subscription.renewal_due", renewal_due_body(subscription, order, invoice_url))
        elif move.event_type:
            event = NewEvent(move.event_type, subscription_body(subscription, move.event_type))
        moved = await subscriptions.move(
            subscription, arq=self.arq, now=now, due=move.due, fields=fields, event=event
        )
        if moved and event is not None and self.metrics is not None:
            self.metrics.events_created.inc()
        if moved:
            log.info(
                "subscription_moved",
                subscription_id=subscription.id,
                event_type=move.event_type,
                **move.fields,
            )
        return moved
