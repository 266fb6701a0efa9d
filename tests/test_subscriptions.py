"""Subscriptions (relay/subscriptions.py): the table of moves (``next_move``), the timers driven
with a clock of the test's own on each backend (activation by the ingest script, renewal notice,
renewal, past_due, expiry, cancel; a timer fires once and survives a restart), and the API on a
running relay, down to a worker that sends a renewal_due on its own."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from relay.errors import UpstreamUnavailable
from relay.event_body import Body, SubscriptionEvent, SubscriptionRenewalDueEvent
from relay.ingest import Ingested, apply_outcome
from relay.models import (
    EventRecord,
    OrderKind,
    PaymentOutcome,
    Purchase,
    PurchaseStatus,
    Subscription,
    SubscriptionStatus,
    iso_z,
    new_subscription_id,
    new_subscription_order_id,
)
from relay.periods import Interval, add_interval
from relay.retention import Lifetimes
from relay.stores import Stores, make_stores
from relay.subscriptions import RENEWAL_LEASE, Move, Timers, cancel, first_order, next_move, renewal_order
from tests.helpers import (
    Backend,
    Merchant,
    Running,
    StartRelay,
    assert_error,
    eventually,
    make_settings,
    parse_utc,
    verify,
)

PENDING, ACTIVE, PAST_DUE = SubscriptionStatus.PENDING, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE
EXPIRED, CANCELED = SubscriptionStatus.EXPIRED, SubscriptionStatus.CANCELED
NOTICE, GRACE = timedelta(days=3), timedelta(days=3)
LIFETIMES = Lifetimes(renewal_notice=NOTICE, subscription_grace=GRACE)
SECOND = timedelta(seconds=1)
CREATED = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)
PRICE = 99000
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
TIME_FIELDS = ("period_start", "period_end", "paid_at")
BODIES: dict[str, type[Body]] = {
    "subscription.activated": SubscriptionEvent,
    "subscription.renewed": SubscriptionEvent,
    "subscription.expired": SubscriptionEvent,
    "subscription.canceled": SubscriptionEvent,
    "subscription.renewal_due": SubscriptionRenewalDueEvent,
}


# --- next_move: the table -------------------------------------------------------------------------

START = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
END = datetime(2026, 2, 10, 12, 0, tzinfo=UTC)
NOTICE_AT, GRACE_END = END - NOTICE, END + GRACE
# Every boundary a subscription's timer knows, and a second before it.
MOMENTS = {
    "before notice": NOTICE_AT - SECOND,
    "at notice": NOTICE_AT,
    "before end": END - SECOND,
    "at end": END,
    "before grace end": GRACE_END - SECOND,
    "at grace end": GRACE_END,
}
RENEW = Move(due=END, event_type="subscription.renewal_due", renew=True)
TO_PAST_DUE = Move(due=GRACE_END, fields={"status": "past_due"})
TO_CANCELED = Move(due=None, fields={"status": "canceled"}, event_type="subscription.canceled")
TO_EXPIRED = Move(due=None, fields={"status": "expired"}, event_type="subscription.expired")
NOTHING = Move(due=None)


def waits(until: datetime) -> Move:
    return Move(due=until)


# (status, cancel_at_period_end, a renewal invoice pending) -> what happens at each moment, in
# the order of MOMENTS
TABLE: dict[tuple[SubscriptionStatus, bool, bool], list[Move]] = {
    (ACTIVE, False, False): [waits(NOTICE_AT), RENEW, RENEW, RENEW, RENEW, RENEW],
    (ACTIVE, False, True): [waits(END), waits(END), waits(END), TO_PAST_DUE, TO_PAST_DUE, TO_PAST_DUE],
    (ACTIVE, True, False): [waits(END), waits(END), waits(END), TO_CANCELED, TO_CANCELED, TO_CANCELED],
    (ACTIVE, True, True): [waits(END), waits(END), waits(END), TO_CANCELED, TO_CANCELED, TO_CANCELED],
    (PAST_DUE, False, True): [waits(GRACE_END)] * 5 + [TO_EXPIRED],
    (EXPIRED, False, True): [NOTHING] * 6,
    (CANCELED, False, False): [NOTHING] * 6,
    (CANCELED, True, True): [NOTHING] * 6,
}


def table_subscription(status: SubscriptionStatus, *, canceling: bool, renewing: bool) -> Subscription:
    return Subscription(
        id="sub_0",
        project_id="shop",
        plan_id="pro",
        plan_name="Pro",
        amount=PRICE,
        currency="IDR",
        interval=Interval.MONTH,
        buyer_email="buyer@example.com",
        status=status,
        current_period_start=START,
        current_period_end=END,
        cancel_at_period_end=canceling,
        order_id="sub-first",
        pending_order_id="sub-renewal" if renewing else None,
        created_at=START,
        updated_at=START,
    )


@pytest.mark.parametrize(("status", "canceling", "renewing"), list(TABLE))
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_next_move(status: SubscriptionStatus, canceling: bool, renewing: bool, moment: str) -> None:
    subscription = table_subscription(status, canceling=canceling, renewing=renewing)
    expected = TABLE[(status, canceling, renewing)][list(MOMENTS).index(moment)]
    assert next_move(subscription, MOMENTS[moment], LIFETIMES) == expected


@pytest.mark.parametrize("status", [status for status in SubscriptionStatus if status is not PENDING])
def test_a_subscription_without_a_period_has_no_timer(status: SubscriptionStatus) -> None:
    """Canceled before it was ever paid, or expired unpaid."""
    subscription = table_subscription(status, canceling=False, renewing=True).model_copy(
        update={"current_period_start": None, "current_period_end": None}
    )
    for moment in MOMENTS.values():
        assert next_move(subscription, moment, LIFETIMES) == NOTHING


def test_a_pending_subscription_expires_with_its_first_invoice() -> None:
    """Its first invoice unpaid RELAY_PURCHASE_EXPIRY after it was made: expired, no event, and on
    the retention schedule (the move ends it)."""
    subscription = table_subscription(PENDING, canceling=False, renewing=True).model_copy(
        update={"current_period_start": None, "current_period_end": None}
    )
    unpaid_at = subscription.created_at + LIFETIMES.purchase_expiry
    assert next_move(subscription, unpaid_at - timedelta(seconds=1), LIFETIMES) == Move(due=unpaid_at)
    expired = next_move(subscription, unpaid_at, LIFETIMES)
    assert expired == Move(due=None, fields={"status": "expired"})
    assert expired.ends


def test_a_notice_longer_than_the_period_renews_at_once() -> None:
    subscription = table_subscription(ACTIVE, canceling=False, renewing=False)
    long_notice = Lifetimes(renewal_notice=timedelta(days=60), subscription_grace=GRACE)
    assert next_move(subscription, START, long_notice) == RENEW


# --- the timers, with the test's clock, on each backend --------------------------------------------


@dataclass
class Invoices:
    """The gateway's invoice API, faked: every order it was asked to invoice, and its URL."""

    orders: list[Purchase] = field(default_factory=list)

    async def __call__(self, order: Purchase) -> str | None:
        self.orders.append(order)
        return f"https://pay.example/{order.order_id}"


@dataclass
class World:
    """A backend's stores (with ``lifetimes``), the arq client and a timer sweep on them."""

    backend: Backend
    stores: Stores
    invoices: Invoices = field(default_factory=Invoices)

    @property
    def timers(self) -> Timers:
        return Timers(self.stores.subscriptions, arq=self.backend.arq, invoicer=self.invoices)

    async def sweep(self, now: datetime) -> int:
        return await self.timers.sweep(now=now)

    async def subscribe(
        self, *, at: datetime = CREATED, interval: Interval = Interval.MONTH, count: int = 1
    ) -> Subscription:
        """What the public subscribe route stores: a pending subscription and its first order."""
        subscription_id = new_subscription_id()
        order_id = new_subscription_order_id(subscription_id)
        subscription = Subscription(
            id=subscription_id,
            project_id="shop",
            plan_id="pro",
            plan_name="Pro",
            amount=PRICE,
            currency="IDR",
            interval=interval,
            interval_count=count,
            buyer_email="buyer@example.com",
            buyer_name="John Doe",
            user_id="u-1",
            metadata={"ref": "campaign-42", "nested": {"n": 1}},
            order_id=order_id,
            pending_order_id=order_id,
            created_at=at,
            updated_at=at,
        )
        order = first_order(subscription, order_id=order_id, now=at)
        assert await self.stores.subscriptions.create(subscription, order)
        return subscription

    async def pay(self, order_id: str, *, at: datetime) -> None:
        """A Midtrans settlement of ``order_id`` arriving at ``at`` (paid then)."""
        outcome = PaymentOutcome(
            gateway="midtrans",
            order_id=order_id,
            status=PurchaseStatus.PAID,
            amount=Decimal(PRICE),
            paid_at=at,
            raw_status="settlement",
        )
        paid = await apply_outcome(self.stores.store, self.backend.arq, outcome, clock=lambda: at)
        assert paid is Ingested.PAID

    async def activated(self, *, at: datetime, **options: Any) -> Subscription:
        subscription = await self.subscribe(at=at, **options)
        await self.pay(subscription.order_id, at=at)
        return await self.get(subscription.id)

    async def get(self, subscription_id: str) -> Subscription:
        found = await self.stores.subscriptions.get(subscription_id)
        assert found is not None
        return found

    async def timer(self, subscription_id: str) -> datetime | None:
        score = await self.backend.redis.zscore(self.stores.keys.subscriptions_due, subscription_id)
        return None if score is None else datetime.fromtimestamp(score / 1000, UTC)

    async def events(self) -> list[EventRecord]:
        """The project's events, oldest first, each checked for what every subscription event is."""
        ids = await self.backend.redis.zrange(self.stores.keys.project_events("shop"), 0, -1)
        found = await self.stores.events.get_many(list(ids))
        assert len(found) == len(ids)
        for event in found:
            check_body(event)
        return found

    async def bodies(self, event_type: str | None = None) -> list[dict[str, Any]]:
        return [json.loads(event.body) for event in await self.events() if event_type in (None, event.type)]

    async def cancel(self, subscription_id: str, *, at: datetime) -> Subscription:
        canceled = await cancel(self.stores.subscriptions, subscription_id, arq=self.backend.arq, now=at)
        assert canceled is not None
        return canceled


def check_body(event: EventRecord) -> None:
    """Keys in the model's order, ``event`` first and naming the type; every time ISO 8601 Z."""
    body = json.loads(event.body)
    assert list(body) == list(BODIES[event.type].model_fields), body
    assert body["event"] == event.type
    for name in TIME_FIELDS:
        assert body[name] is None or ISO_Z.match(body[name]), (name, body)
    assert event.project_id == "shop"
    assert event.plan_id == "pro"


def world_of(backend: Backend, lifetimes: Lifetimes = LIFETIMES) -> World:
    settings = make_settings(
        renewal_notice=lifetimes.renewal_notice, subscription_grace=lifetimes.subscription_grace
    )
    return World(backend, make_stores(backend.redis, settings))


@pytest.fixture
def world(stores: Backend) -> World:
    return world_of(stores)


def z(moment: datetime) -> str:
    return iso_z(moment)


async def test_the_first_payment_activates_with_a_period_from_paid_at(world: World) -> None:
    paid_at = CREATED + timedelta(hours=1, seconds=7)
    subscription = await world.subscribe()
    assert subscription.status is PENDING
    assert await world.timer(subscription.id) == subscription.created_at + LIFETIMES.purchase_expiry
    await world.pay(subscription.order_id, at=paid_at)

    active = await world.get(subscription.id)
    end = datetime(2026, 6, 6, 11, 0, 7, tzinfo=UTC)
    assert active.status is ACTIVE
    assert (active.current_period_start, active.current_period_end) == (paid_at, end)
    assert (active.order_id, active.paid_at, active.pending_order_id) == (
        subscription.order_id,
        paid_at,
        None,
    )
    assert active.version > subscription.version
    assert await world.timer(subscription.id) == end - NOTICE
    [activated] = await world.bodies()
    assert activated == {
        "event": "subscription.activated",
        "subscription_id": subscription.id,
        "plan_id": "pro",
        "plan_name": "Pro",
        "user_id": "u-1",
        "buyer_email": "buyer@example.com",
        "buyer_name": "John Doe",
        "order_id": subscription.order_id,
        "amount": PRICE,
        "currency": "IDR",
        "period_start": z(paid_at),
        "period_end": z(end),
        "paid_at": z(paid_at),
        "metadata": {"ref": "campaign-42", "nested": {"n": 1}},
    }


async def test_renewal_notice_then_a_late_payment_renews_from_the_old_period_end(world: World) -> None:
    active = await world.activated(at=CREATED)
    end = active.current_period_end
    assert end is not None
    notice_at = end - NOTICE

    assert await world.sweep(notice_at - SECOND) == 0
    assert world.invoices.orders == []
    assert len(await world.events()) == 1

    assert await world.sweep(notice_at) == 1
    [order] = world.invoices.orders
    renewing = await world.get(active.id)
    assert renewing.status is ACTIVE
    assert (renewing.pending_order_id, renewing.invoice_url) == (
        order.order_id,
        f"https://pay.example/{order.order_id}",
    )
    assert (renewing.current_period_end, renewing.order_id) == (end, active.order_id)
    assert await world.timer(active.id) == end
    next_end = add_interval(end, Interval.MONTH)
    [due] = await world.bodies("subscription.renewal_due")
    assert due == {
        "event": "subscription.renewal_due",
        "subscription_id": active.id,
        "plan_id": "pro",
        "plan_name": "Pro",
        "user_id": "u-1",
        "buyer_email": "buyer@example.com",
        "buyer_name": "John Doe",
        "order_id": order.order_id,
        "amount": PRICE,
        "currency": "IDR",
        "period_start": z(end),
        "period_end": z(next_end),
        "paid_at": None,
        "invoice_url": f"https://pay.example/{order.order_id}",
        "metadata": {"ref": "campaign-42", "nested": {"n": 1}},
    }
    stored = await world.stores.store.get_purchase(order.order_id)
    assert stored is not None
    assert (stored.kind, stored.status, stored.subscription_id) == (
        OrderKind.SUBSCRIPTION,
        PurchaseStatus.PENDING,
        active.id,
    )
    assert (stored.period_start, stored.period_end) == (end, next_end)
    assert stored.invoice_url == f"https://pay.example/{order.order_id}"
    # Swept again before the period ends: nothing more.
    assert await world.sweep(end - SECOND) == 0
    assert len(world.invoices.orders) == 1

    assert await world.sweep(end) == 1
    assert (await world.get(active.id)).status is PAST_DUE
    assert await world.timer(active.id) == end + GRACE

    late = end + timedelta(days=1)
    await world.pay(order.order_id, at=late)
    renewed = await world.get(active.id)
    assert renewed.status is ACTIVE
    assert (renewed.current_period_start, renewed.current_period_end) == (end, next_end)
    assert (renewed.order_id, renewed.paid_at, renewed.pending_order_id) == (order.order_id, late, None)
    assert renewed.invoice_url is None
    assert await world.timer(active.id) == next_end - NOTICE
    [body] = await world.bodies("subscription.renewed")
    assert (body["order_id"], body["period_start"], body["period_end"]) == (
        order.order_id,
        z(end),
        z(next_end),
    )
    assert body["paid_at"] == z(late)
    # The grace end passes: the renewed subscription is not expired by an old timer.
    assert await world.sweep(end + GRACE) == 0
    assert (await world.get(active.id)).status is ACTIVE
    assert [event.type for event in await world.events()] == [
        "subscription.activated",
        "subscription.renewal_due",
        "subscription.renewed",
    ]


async def test_a_renewal_paid_before_the_period_ends_starts_at_its_end(world: World) -> None:
    active = await world.activated(at=CREATED)
    end = active.current_period_end
    assert end is not None
    await world.sweep(end - NOTICE)
    [order] = world.invoices.orders
    await world.pay(order.order_id, at=end - timedelta(days=2))
    renewed = await world.get(active.id)
    assert (renewed.current_period_start, renewed.current_period_end) == (
        end,
        add_interval(end, Interval.MONTH),
    )
    assert await world.sweep(end) == 0
    assert (await world.get(active.id)).status is ACTIVE


async def test_an_unpaid_renewal_is_past_due_then_expired(world: World) -> None:
    active = await world.activated(at=CREATED)
    end = active.current_period_end
    assert end is not None
    await world.sweep(end - NOTICE)
    [order] = world.invoices.orders

    assert await world.sweep(end - SECOND) == 0
    assert await world.sweep(end) == 1
    past_due = await world.get(active.id)
    assert past_due.status is PAST_DUE
    assert len(await world.events()) == 2  # past_due sends nothing

    assert await world.sweep(end + GRACE - SECOND) == 0
    assert await world.sweep(end + GRACE) == 1
    expired = await world.get(active.id)
    assert expired.status is EXPIRED
    assert await world.timer(active.id) is None
    [body] = await world.bodies("subscription.expired")
    assert body["subscription_id"] == active.id
    assert (body["period_start"], body["period_end"]) == (z(CREATED), z(end))
    assert await world.sweep(end + timedelta(days=365)) == 0
    assert len(await world.events()) == 3
    assert order.order_id == expired.pending_order_id


async def test_a_canceled_subscription_stays_active_until_its_period_ends(world: World) -> None:
    active = await world.activated(at=CREATED)
    end = active.current_period_end
    assert end is not None

    canceling = await world.cancel(active.id, at=CREATED + timedelta(days=1))
    assert (canceling.status, canceling.cancel_at_period_end) == (ACTIVE, True)
    assert await world.timer(active.id) == end
    # Canceling again changes nothing, not even the version.
    assert await world.cancel(active.id, at=CREATED + timedelta(days=2)) == canceling

    assert await world.sweep(end - NOTICE) == 0  # no renewal invoice for a canceled subscription
    assert await world.sweep(end - SECOND) == 0
    assert world.invoices.orders == []
    assert await world.sweep(end) == 1
    canceled = await world.get(active.id)
    assert canceled.status is CANCELED
    assert await world.timer(active.id) is None
    [body] = await world.bodies("subscription.canceled")
    assert (body["order_id"], body["period_start"], body["period_end"]) == (
        active.order_id,
        z(CREATED),
        z(end),
    )
    assert body["paid_at"] == z(CREATED)
    assert await world.cancel(active.id, at=end + SECOND) == canceled
    assert [event.type for event in await world.events()] == [
        "subscription.activated",
        "subscription.canceled",
    ]


async def test_a_canceled_subscription_with_its_renewal_invoiced_ends_at_the_period_end(world: World) -> None:
    active = await world.activated(at=CREATED)
    end = active.current_period_end
    assert end is not None
    await world.sweep(end - NOTICE)
    canceling = await world.cancel(active.id, at=end - NOTICE)
    assert (canceling.status, canceling.cancel_at_period_end) == (ACTIVE, True)
    assert await world.sweep(end) == 1
    assert (await world.get(active.id)).status is CANCELED
    assert await world.sweep(end + GRACE) == 0
    assert [event.type for event in await world.events()] == [
        "subscription.activated",
        "subscription.renewal_due",
        "subscription.canceled",
    ]


async def test_canceling_a_pending_subscription_ends_it_without_an_event(world: World) -> None:
    subscription = await world.subscribe()
    canceled = await world.cancel(subscription.id, at=CREATED + SECOND)
    assert canceled.status is CANCELED
    assert await world.timer(subscription.id) is None
    assert await world.events() == []
    assert await world.cancel(subscription.id, at=CREATED + 2 * SECOND) == canceled


async def test_canceling_a_past_due_subscription_ends_it_now(world: World) -> None:
    active = await world.activated(at=CREATED)
    end = active.current_period_end
    assert end is not None
    await world.sweep(end - NOTICE)
    await world.sweep(end)
    canceled = await world.cancel(active.id, at=end + timedelta(hours=1))
    assert canceled.status is CANCELED
    assert await world.timer(active.id) is None
    [body] = await world.bodies("subscription.canceled")
    assert body["subscription_id"] == active.id
    assert await world.cancel(active.id, at=end + timedelta(hours=2)) == canceled
    assert await world.sweep(end + GRACE) == 0
    assert len(await world.bodies("subscription.canceled")) == 1
    assert await world.bodies("subscription.expired") == []


async def test_canceling_an_unknown_subscription_finds_nothing(world: World) -> None:
    assert await cancel(world.stores.subscriptions, "sub_nope", arq=world.backend.arq, now=CREATED) is None


async def test_two_sweeps_at_once_fire_a_timer_once(world: World) -> None:
    active = await world.activated(at=CREATED)
    end = active.current_period_end
    assert end is not None
    first, second = world.timers, world.timers
    moved = await asyncio.gather(first.sweep(now=end - NOTICE), second.sweep(now=end - NOTICE))
    assert sorted(moved) == [0, 1]
    [due] = await world.bodies("subscription.renewal_due")
    renewing = await world.get(active.id)
    assert renewing.pending_order_id == due["order_id"]
    assert renewing.invoice_url == due["invoice_url"]
    # One order made and invoiced: the second sweep stops at the claim, before the gateway.
    assert [order.order_id for order in world.invoices.orders] == [renewing.pending_order_id]
    purchases = await world.stores.store.list_purchases("shop")
    assert sorted(purchase.order_id for purchase in purchases) == sorted([active.order_id, due["order_id"]])


@dataclass
class FailingInvoices(Invoices):
    """A gateway whose invoice API is down for ``failing`` subscriptions."""

    failing: set[str] = field(default_factory=set)

    async def __call__(self, order: Purchase) -> str | None:
        if order.subscription_id in self.failing:
            raise UpstreamUnavailable("Midtrans Snap answered 503")
        return await super().__call__(order)


async def test_a_failed_invoice_is_tried_again_after_the_lease_and_others_go_on(world: World) -> None:
    first = await world.activated(at=CREATED)
    second = await world.activated(at=CREATED + SECOND)
    assert first.current_period_end is not None
    notice_at = first.current_period_end - NOTICE
    world.invoices = FailingInvoices(failing={first.id})
    assert await world.sweep(notice_at + SECOND) == 1
    [due] = await world.bodies("subscription.renewal_due")
    assert due["subscription_id"] == second.id
    assert (await world.get(first.id)).pending_order_id is None
    assert await world.timer(first.id) == notice_at + SECOND + RENEWAL_LEASE

    assert await world.sweep(notice_at + RENEWAL_LEASE) == 0  # nothing tried until the lease ends
    world.invoices.failing.clear()
    assert await world.sweep(notice_at + SECOND + RENEWAL_LEASE) == 1
    renewing = await world.get(first.id)
    assert renewing.pending_order_id is not None
    assert await world.timer(first.id) == first.current_period_end
    assert [body["subscription_id"] for body in await world.bodies("subscription.renewal_due")] == [
        second.id,
        first.id,
    ]


async def test_a_due_timer_fires_after_a_restart(stores: Backend) -> None:
    before = world_of(stores)
    active = await before.activated(at=CREATED)
    end = active.current_period_end
    assert end is not None
    after = world_of(stores)  # new stores and timers over the same Redis: nothing kept in memory
    assert await after.sweep(end - NOTICE) == 1
    assert len(after.invoices.orders) == 1
    assert len(await after.bodies("subscription.renewal_due")) == 1


async def test_a_notice_longer_than_the_period_makes_the_invoice_due_at_once(world: World) -> None:
    paid_at = CREATED + timedelta(minutes=5)
    subscription = await world.subscribe(interval=Interval.DAY)
    await world.pay(subscription.order_id, at=paid_at)
    active = await world.get(subscription.id)
    end = paid_at + timedelta(days=1)
    assert active.current_period_end == end
    assert await world.sweep(paid_at) == 1
    [due] = await world.bodies("subscription.renewal_due")
    assert (due["period_start"], due["period_end"]) == (z(end), z(end + timedelta(days=1)))
    assert await world.timer(subscription.id) == end


@pytest.mark.parametrize(
    ("paid_at", "end"),
    [
        (datetime(2027, 1, 31, 9, 0, tzinfo=UTC), datetime(2027, 2, 28, 9, 0, tzinfo=UTC)),
        (datetime(2028, 1, 31, 9, 0, tzinfo=UTC), datetime(2028, 2, 29, 9, 0, tzinfo=UTC)),
    ],
)
async def test_a_month_from_january_31_ends_on_the_last_day_of_february(
    world: World, paid_at: datetime, end: datetime
) -> None:
    active = await world.activated(at=paid_at)
    assert (active.current_period_start, active.current_period_end) == (paid_at, end)
    [activated] = await world.bodies()
    assert activated["period_end"] == z(end)
    await world.sweep(end - NOTICE)
    [due] = await world.bodies("subscription.renewal_due")
    # The next period ends on the 31st again: months renew on the day the subscription began.
    assert (due["period_start"], due["period_end"]) == (z(end), z(end.replace(month=3, day=31)))


async def test_a_plan_of_several_intervals_counts_them_all(world: World) -> None:
    active = await world.activated(at=CREATED, interval=Interval.WEEK, count=2)
    assert active.current_period_end == CREATED + timedelta(weeks=2)
    end = active.current_period_end
    await world.sweep(end - NOTICE)
    [due] = await world.bodies("subscription.renewal_due")
    assert due["period_end"] == z(end + timedelta(weeks=2))


async def test_a_timer_whose_subscription_is_gone_is_dropped(world: World) -> None:
    active = await world.activated(at=CREATED)
    await world.backend.redis.delete(world.stores.keys.subscription(active.id))
    end = active.current_period_end
    assert end is not None
    assert await world.sweep(end) == 0
    assert await world.timer(active.id) is None


# --- the API on a running relay --------------------------------------------------------------------

PLANS = "/api/platform/plans"
SUBSCRIBE = "/api/platform/public-plans/subscribe"


async def put_plan(running: Running, project_id: str, *, expect: int = 200, **fields: Any) -> Any:
    body = {"project_id": project_id, "name": "Pro", "price": PRICE, "interval": "month"} | fields
    return await running.api.call("PUT", PLANS, json=body, expect=expect)


async def subscribe(
    running: Running, project: dict[str, Any], plan_id: str, *, expect: int = 200, **options: Any
) -> Any:
    body = {"client_id": project["client_id"], "plan_id": plan_id, "buyer_email": "b@example.com"}
    return await running.api.call("POST", SUBSCRIBE, json=body, auth=False, expect=expect, **options)


def subscription_path(project_id: str, subscription_id: str) -> str:
    return f"/api/platform/projects/{project_id}/subscriptions/{subscription_id}"


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({"interval": "fortnight"}, "interval"),
        ({"interval_count": 0}, "interval_count"),
        ({"interval_count": 366}, "interval_count"),
        ({"price": -1}, "price"),
        ({"name": ""}, "name"),
    ],
)
async def test_a_plan_with_a_bad_field_is_refused(
    start_relay: StartRelay, fields: dict[str, Any], mentions: str
) -> None:
    running = await start_relay(worker=False)
    project = await running.api.project()
    assert_error(
        await put_plan(running, project["id"], expect=400, **fields), "InvalidInput", mentions=mentions
    )
    assert (await running.api.call("GET", f"/api/platform/projects/{project['id']}/plans"))["plans"] == []


async def test_plans_belong_to_their_project(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    mine, theirs = await running.api.project(), await running.api.project()
    plan = (await put_plan(running, mine["id"], interval_count=3))["plan"]
    assert (plan["interval"], plan["interval_count"], plan["price"]) == ("month", 3, PRICE)
    changed = (await put_plan(running, mine["id"], id=plan["id"], price=120000))["plan"]
    assert (changed["id"], changed["price"], changed["interval_count"]) == (plan["id"], 120000, 3)

    body = await put_plan(running, theirs["id"], id=plan["id"], expect=409)
    assert_error(body, "Conflict")
    assert_error(await put_plan(running, "no-such-project", expect=404), "NotFound")
    listed = (await running.api.call("GET", f"/api/platform/projects/{mine['id']}/plans"))["plans"]
    assert [(row["id"], row["price"]) for row in listed] == [(plan["id"], 120000)]

    assert_error(await subscribe(running, mine, "no-such-plan", expect=404), "NotFound")
    theirs_plan = (await put_plan(running, theirs["id"]))["plan"]
    assert_error(await subscribe(running, mine, theirs_plan["id"], expect=404), "NotFound")
    nobody = {"client_id": "cl_nobody"}
    assert_error(await subscribe(running, nobody, theirs_plan["id"], expect=404), "NotFound")


async def test_subscribe_answers_a_retry_with_the_same_key_once(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    project = await running.api.project()
    plan = (await put_plan(running, project["id"]))["plan"]
    key = {"Idempotency-Key": "subscribe-1"}
    first = await subscribe(running, project, plan["id"], headers=dict(key))
    assert await subscribe(running, project, plan["id"], headers=dict(key)) == first
    again = await subscribe(running, project, plan["id"])
    assert again["subscription_id"] != first["subscription_id"]
    other = {"client_id": project["client_id"], "plan_id": plan["id"], "buyer_email": "other@example.com"}
    await running.api.call("POST", SUBSCRIBE, json=other, auth=False, headers=dict(key), expect=409)
    assert (first["amount"], first["currency"]) == (PRICE, "IDR")
    assert first["order_id"].startswith("sub-")
    assert first["invoice_url"]


async def test_a_subscription_is_seen_and_canceled_only_through_its_project(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    mine, theirs = await running.api.project(), await running.api.project()
    plan = (await put_plan(running, mine["id"]))["plan"]
    started = await subscribe(running, mine, plan["id"])
    path = subscription_path(mine["id"], started["subscription_id"])
    seen = (await running.api.call("GET", path))["subscription"]
    assert (seen["id"], seen["status"], seen["plan_id"]) == (
        started["subscription_id"],
        "pending",
        plan["id"],
    )
    assert (seen["current_period_start"], seen["current_period_end"]) == (None, None)
    assert "version" not in seen

    elsewhere = subscription_path(theirs["id"], started["subscription_id"])
    assert_error(await running.api.call("GET", elsewhere, expect=404), "NotFound")
    assert_error(await running.api.call("POST", elsewhere + "/cancel", expect=404), "NotFound")
    unknown = subscription_path(mine["id"], "sub_nope")
    assert_error(await running.api.call("GET", unknown, expect=404), "NotFound")
    assert_error(await running.api.call("POST", unknown + "/cancel", expect=404), "NotFound")
    assert (await running.api.call("GET", path))["subscription"]["status"] == "pending"

    canceled = (await running.api.call("POST", path + "/cancel"))["subscription"]
    assert canceled["status"] == "canceled"
    assert (await running.api.call("POST", path + "/cancel"))["subscription"] == canceled


async def test_the_worker_sends_renewal_due_when_the_notice_is_longer_than_the_period(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    """The worker's own sweep, invoicer and delivery: a day plan with three days' notice is due at
    once, to the plan's URL (before the project's); paying that invoice renews it."""
    running = await start_relay(
        renewal_notice=timedelta(days=3), sweep_interval=1, public_base_url="https://relay.example"
    )
    api = running.api
    project = await api.project(webhook_url=f"{merchant.url}/hook")
    plan_url = f"{merchant.url}/plan"
    plan = (await put_plan(running, project["id"], interval="day", webhook_url=plan_url))["plan"]
    started = await subscribe(running, project, plan["id"])
    await api.pay(started)

    def received() -> list[dict[str, Any]]:
        return [verify(hit, project["webhook_secret"]) for hit in merchant.hits("/plan")]

    def arrived(event_type: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return any(body["event"] == event_type for body in received())

        return check

    await eventually(arrived("subscription.renewal_due"), timeout=15, what="subscription.renewal_due")
    bodies = {body["event"]: body for body in received()}
    activated, due = bodies["subscription.activated"], bodies["subscription.renewal_due"]
    assert list(due) == list(SubscriptionRenewalDueEvent.model_fields)
    assert due["subscription_id"] == started["subscription_id"]
    assert due["period_start"] == activated["period_end"]
    assert parse_utc(due["period_end"]) == parse_utc(activated["period_end"]) + timedelta(days=1)
    assert due["order_id"] not in (started["order_id"], "")
    assert due["invoice_url"].startswith("https://relay.example/sandbox/checkout/")
    path = subscription_path(project["id"], started["subscription_id"])
    subscription = (await api.call("GET", path))["subscription"]
    assert subscription["status"] == "active"
    assert subscription["pending_order_id"] == due["order_id"]
    assert subscription["invoice_url"] == due["invoice_url"]
    await asyncio.sleep(1.5)  # another sweep or two: still one renewal_due
    assert [body["event"] for body in received()].count("subscription.renewal_due") == 1

    await api.pay({"order_id": due["order_id"], "amount": PRICE})
    await eventually(arrived("subscription.renewed"), what="subscription.renewed")
    renewed = next(body for body in received() if body["event"] == "subscription.renewed")
    assert (renewed["order_id"], renewed["period_start"]) == (due["order_id"], due["period_start"])
    assert renewed["period_end"] == due["period_end"]
    subscription = (await api.call("GET", path))["subscription"]
    assert subscription["order_id"] == due["order_id"]
    assert parse_utc(subscription["current_period_start"]) == parse_utc(due["period_start"])
    assert parse_utc(subscription["current_period_end"]) == parse_utc(due["period_end"])
    assert merchant.hits("/hook") == []


async def test_an_ended_subscription_is_deleted_retention_after_it_ended(world: World) -> None:
    """Canceled or expired, it goes on the retention schedule when it ends and is deleted with its
    index entries RELAY_RETENTION later; one paid again in between is kept."""
    retention = world.stores.retention
    lifetime = world.stores.subscriptions.lifetimes.retention
    subscriptions_key = world.stores.keys.project_subscriptions("shop")

    pending = await world.subscribe()
    await world.cancel(pending.id, at=CREATED + SECOND)
    unpaid = await world.subscribe()
    assert await world.sweep(CREATED + LIFETIMES.purchase_expiry) == 1  # its first invoice expired
    assert (await world.get(unpaid.id)).status is SubscriptionStatus.EXPIRED
    revived = await world.subscribe()
    await world.cancel(revived.id, at=CREATED + SECOND)
    await world.pay(revived.order_id, at=CREATED + 2 * SECOND)  # the money arrived all the same
    assert (await world.get(revived.id)).status is ACTIVE

    await retention.sweep(now=CREATED + SECOND + lifetime - SECOND)
    assert await world.stores.subscriptions.get(pending.id) is not None
    swept = await retention.sweep(now=CREATED + LIFETIMES.purchase_expiry + lifetime)
    assert swept.deleted_subscriptions == 2
    assert await world.stores.subscriptions.get(pending.id) is None
    assert await world.stores.subscriptions.get(unpaid.id) is None
    assert await world.backend.redis.zrange(subscriptions_key, 0, -1) == [revived.id]
    assert (await world.get(revived.id)).status is ACTIVE


async def test_a_renewal_paid_after_a_cancel_runs_its_period_and_then_ends(world: World) -> None:
    """The money arrived, so the period paid runs; the cancel stands, so it ends after it."""
    active = await world.activated(at=CREATED)
    end = active.current_period_end
    assert end is not None
    await world.sweep(end - NOTICE)
    renewal = (await world.get(active.id)).pending_order_id
    assert renewal is not None
    await world.cancel(active.id, at=end - NOTICE + SECOND)
    await world.pay(renewal, at=end - SECOND)

    paid = await world.get(active.id)
    assert (paid.status, paid.cancel_at_period_end, paid.pending_order_id) == (ACTIVE, True, None)
    new_end = paid.current_period_end
    assert new_end is not None
    assert new_end > end
    assert await world.sweep(new_end - NOTICE) == 0  # no renewal of a canceling subscription
    assert await world.sweep(new_end) == 1
    assert (await world.get(active.id)).status is CANCELED


async def test_a_period_has_one_renewal_order_however_often_its_timer_fires(world: World) -> None:
    """A renewal's order id is the subscription's and the period's: fired again after its lease (a
    sweep that died before its move), the timer takes the same order, invoiced once."""
    active = await world.activated(at=CREATED)
    end = active.current_period_end
    assert end is not None
    timers = world.timers
    first = renewal_order(active, now=end - NOTICE, grace=GRACE)
    again = renewal_order(active, now=end - NOTICE + RENEWAL_LEASE, grace=GRACE)
    assert first.order_id == again.order_id
    assert await timers.invoiced(first) == await timers.invoiced(again)
    assert len(world.invoices.orders) == 1
    assert first.pay_by == end + GRACE
