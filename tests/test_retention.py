"""relay/retention.py and the scripts that keep its schedule, on each backend (the embedded store
and a real Redis): unpaid purchases expire, finished orders are deleted with everything that points
at them once their retention is over, and nothing unfinished is ever deleted."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import pytest

from relay.crypto import SecretBox, generate_key
from relay.endpoints import Endpoints
from relay.errors import InvalidInput, NotFound
from relay.events import EventStore
from relay.ingest import Ingested, apply_outcome
from relay.models import Attempt, Project, Purchase, PurchaseStatus, WebhookStatus, to_ms
from relay.replay import Operations, Window
from relay.retention import Lifetimes, Retention
from relay.schema import Keys
from relay.store import Store
from relay.stores import make_stores
from tests.helpers import KEY_PREFIX, T0, Backend, make_outcome, make_purchase, make_settings, paid_event

LIFETIMES = Lifetimes(
    retention=timedelta(seconds=60),
    dead_letter_retention=timedelta(seconds=120),
    purchase_expiry=timedelta(seconds=10),
    endpoint_disable_after=timedelta(seconds=300),
)


@dataclass
class Kept:
    backend: Backend
    store: Store
    events: EventStore
    retention: Retention
    endpoints: Endpoints

    @property
    def keys(self) -> Keys:
        return self.store.keys


@pytest.fixture
def kept(stores: Backend) -> Kept:
    redis = stores.redis
    store = Store(redis, prefix=KEY_PREFIX, box=SecretBox([generate_key()]), lifetimes=LIFETIMES)
    events = EventStore(redis, prefix=KEY_PREFIX, lifetimes=LIFETIMES)
    retention = Retention(redis, prefix=KEY_PREFIX, lifetimes=LIFETIMES)
    return Kept(stores, store, events, retention, Endpoints(redis, prefix=KEY_PREFIX))


async def pay(kept: Kept, order_id: str, *, at: timedelta = timedelta(0)) -> Ingested:
    outcome = make_outcome(order_id)
    return await apply_outcome(kept.store, kept.backend.arq, outcome, clock=lambda: T0 + at)


def ok(at: timedelta) -> Attempt:
    return Attempt(at=T0 + at, url="https://merchant.example/hook", status_code=200, duration_ms=3)


async def relay_keys(kept: Kept) -> set[str]:
    """Every key under the relay's prefix (a test's database holds nothing else of the relay's)."""
    return {key async for key in kept.backend.redis.scan_iter(match=f"{KEY_PREFIX}:*")}


async def test_an_unpaid_purchase_expires_after_the_expiry_and_not_before(kept: Kept) -> None:
    await kept.store.create_purchase(make_purchase("order-1"))

    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=9))).expired == 0
    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=10))).expired == 1

    purchase = await kept.store.get_purchase("order-1")
    assert purchase is not None
    assert purchase.status is PurchaseStatus.EXPIRED
    fields = await kept.backend.redis.hgetall(kept.keys.purchase("order-1"))
    assert "event_head" not in fields  # the event template is dropped
    assert await kept.backend.redis.zscore(kept.keys.retention, "o:order-1") is not None
    assert await kept.backend.redis.zcard(kept.keys.expiry) == 0


async def test_a_settlement_after_expiry_still_pays_and_takes_the_order_off_the_schedule(kept: Kept) -> None:
    await kept.store.create_purchase(make_purchase("order-1"))
    await kept.retention.sweep(now=T0 + timedelta(seconds=11))

    assert await pay(kept, "order-1", at=timedelta(seconds=20)) is Ingested.PAID

    purchase = await kept.store.get_purchase("order-1")
    assert purchase is not None
    assert purchase.status is PurchaseStatus.PAID
    assert purchase.event_id
    event = await kept.events.get(purchase.event_id)
    assert event is not None
    assert '"order_id":"order-1"' in event.body
    assert await kept.backend.redis.zscore(kept.keys.retention, "o:order-1") is None
    # Long past every lifetime, an order whose webhook is pending is never deleted.
    swept = await kept.retention.sweep(now=T0 + timedelta(days=365))
    assert swept.deleted_orders == 0
    assert await kept.store.get_purchase("order-1") is not None


async def test_a_paid_purchase_does_not_expire(kept: Kept) -> None:
    await paid_event(kept, "order-1")
    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=11))).expired == 0
    purchase = await kept.store.get_purchase("order-1")
    assert purchase is not None
    assert purchase.status is PurchaseStatus.PAID


async def test_a_delivered_order_is_deleted_with_everything_that_points_at_it(kept: Kept) -> None:
    before = await relay_keys(kept)
    event = await paid_event(kept, "order-1")
    delivered_at = timedelta(seconds=5)
    await kept.events.finish_attempt(
        event, seq=0, attempt=ok(delivered_at), state=WebhookStatus.DELIVERED, now=T0 + delivered_at
    )
    assert await kept.backend.redis.hget(kept.keys.stats, "orders") == "1"

    early = await kept.retention.sweep(now=T0 + delivered_at + timedelta(seconds=59))
    assert early.deleted_orders == 0
    swept = await kept.retention.sweep(now=T0 + delivered_at + timedelta(seconds=60))
    assert swept.deleted_orders == 1

    assert await kept.store.get_purchase("order-1") is None
    assert await kept.events.get(event.id) is None
    assert await kept.events.attempts([event.id]) == {event.id: []}
    redis = kept.backend.redis
    assert await redis.zcard(kept.keys.project_purchases("shop")) == 0
    assert await redis.zcard(kept.keys.project_events("shop")) == 0
    assert await redis.zcard(kept.keys.retention) == 0
    assert await redis.hget(kept.keys.stats, "orders") == "0"
    assert await relay_keys(kept) - before == {kept.keys.stats}  # the counter, and nothing of the order


async def test_a_dead_letter_follows_the_dead_letter_retention_until_purged(kept: Kept) -> None:
    event = await paid_event(kept, "order-1")
    await kept.events.finish_attempt(event, seq=0, attempt=None, state=WebhookStatus.FAILED, now=T0)

    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=61))).deleted_orders == 0
    # Purged at 100 s: the ordinary retention from then.
    assert await kept.events.purge_dead_letter(event, now=T0 + timedelta(seconds=100))
    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=159))).deleted_orders == 0
    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=160))).deleted_orders == 1
    assert await kept.store.get_purchase("order-1") is None


async def test_a_dead_letter_is_deleted_after_the_dead_letter_retention(kept: Kept) -> None:
    event = await paid_event(kept, "order-1")
    await kept.events.finish_attempt(event, seq=0, attempt=None, state=WebhookStatus.FAILED, now=T0)

    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=120))).deleted_orders == 1
    redis = kept.backend.redis
    assert await redis.zcard(kept.keys.dead_letters) == 0
    assert await redis.zcard(kept.keys.project_dead_letters("shop")) == 0


async def test_a_replayed_order_leaves_the_schedule_until_it_finishes_again(kept: Kept) -> None:
    event = await paid_event(kept, "order-1")
    await kept.events.finish_attempt(event, seq=0, attempt=None, state=WebhookStatus.DELIVERED, now=T0)
    seq = await kept.events.requeue(event, now=T0 + timedelta(seconds=30))
    assert seq == 1

    assert (await kept.retention.sweep(now=T0 + timedelta(days=30))).deleted_orders == 0
    assert await kept.store.get_purchase("order-1") is not None

    replayed = await kept.events.get(event.id)
    assert replayed is not None
    done = T0 + timedelta(days=30, seconds=1)
    await kept.events.finish_attempt(replayed, seq=1, attempt=None, state=WebhookStatus.DELIVERED, now=done)
    assert (await kept.retention.sweep(now=done + timedelta(seconds=60))).deleted_orders == 1


@pytest.mark.parametrize("status", [PurchaseStatus.FAILED, PurchaseStatus.EXPIRED, PurchaseStatus.REFUNDED])
async def test_an_order_that_ended_without_a_payment_is_finished(kept: Kept, status: PurchaseStatus) -> None:
    await kept.store.create_purchase(make_purchase("order-1"))
    outcome = make_outcome("order-1", status)
    await apply_outcome(kept.store, kept.backend.arq, outcome, clock=lambda: T0)

    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=60))).deleted_orders == 1
    assert await kept.store.get_purchase("order-1") is None


async def test_a_callback_for_a_deleted_order_is_recorded_as_unmatched(kept: Kept) -> None:
    await kept.store.create_purchase(make_purchase("order-1"))
    await kept.retention.sweep(now=T0 + timedelta(seconds=10))  # expired
    await kept.retention.sweep(now=T0 + timedelta(seconds=70))  # deleted

    assert await pay(kept, "order-1", at=timedelta(seconds=80)) is Ingested.UNKNOWN_ORDER
    unmatched = await kept.store.unmatched()
    assert [entry["order_id"] for entry in unmatched] == ["order-1"]


async def test_a_sweep_does_a_bounded_batch_and_the_rest_in_the_next(kept: Kept) -> None:
    for number in range(12):
        await kept.store.create_purchase(make_purchase(f"order-{number}"))
    taken, expired = await kept.retention.expire(now=T0 + timedelta(seconds=10), limit=5)
    assert (taken, expired) == (5, 5)
    assert await kept.backend.redis.zcard(kept.keys.expiry) == 7
    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=10))).expired == 7


async def test_settlements_racing_the_deletion_see_the_order_whole_or_not_at_all(kept: Kept) -> None:
    """Expired orders, each paid by a settlement sent while the sweep deletes: every order ends
    either paid with its event (the settlement came first: not finished, not deleted) or deleted
    and the callback unmatched; never a purchase without its event or an event without its order."""
    orders = [f"order-{number}" for number in range(60)]
    for order_id in orders:
        await kept.store.create_purchase(make_purchase(order_id))
    await kept.retention.sweep(now=T0 + timedelta(seconds=10))
    late = T0 + timedelta(seconds=61)

    async def sweeps() -> None:
        for _ in range(6):
            await kept.retention.delete_due(now=late, limit=10)
            await asyncio.sleep(0)

    results = await asyncio.gather(
        sweeps(), *(pay(kept, order_id, at=timedelta(seconds=61)) for order_id in orders)
    )
    outcomes = dict(zip(orders, results[1:], strict=True))

    for order_id, outcome in outcomes.items():
        purchase = await kept.store.get_purchase(order_id)
        if outcome is Ingested.PAID:
            assert purchase is not None
            assert purchase.event_id is not None
            assert await kept.events.get(purchase.event_id) is not None
        else:
            assert outcome is Ingested.UNKNOWN_ORDER
            assert purchase is None
    assert await kept.backend.redis.hget(kept.keys.stats, "orders") == str(
        sum(outcome is Ingested.PAID for outcome in outcomes.values())
    )


async def test_orders_stored_before_retention_are_put_on_its_schedules_once(kept: Kept) -> None:
    """As an older relay left them: on no schedule, not counted."""
    redis, keys = kept.backend.redis, kept.keys
    delivered = await paid_event(kept, "delivered")
    await kept.events.finish_attempt(delivered, seq=0, attempt=None, state=WebhookStatus.DELIVERED, now=T0)
    dead = await paid_event(kept, "dead")
    await kept.events.finish_attempt(dead, seq=0, attempt=None, state=WebhookStatus.FAILED, now=T0)
    await paid_event(kept, "in-flight")
    await kept.store.create_purchase(make_purchase("unpaid", created_at=T0 - timedelta(seconds=5)))
    await kept.store.create_purchase(make_purchase("failed"))
    await apply_outcome(
        kept.store, kept.backend.arq, make_outcome("failed", PurchaseStatus.FAILED), clock=lambda: T0
    )
    await redis.delete(keys.expiry, keys.retention, keys.stats)

    later = T0 + timedelta(hours=1)
    done = await kept.retention.backfill_all(["shop"], clock=lambda: later)
    assert done == (1, 3, 5)
    assert await redis.zrange(keys.expiry, 0, -1, withscores=True) == [
        ("unpaid", float(to_ms(T0 - timedelta(seconds=5) + LIFETIMES.purchase_expiry)))
    ]
    assert dict(await redis.zrange(keys.retention, 0, -1, withscores=True)) == {
        "o:delivered": to_ms(later + LIFETIMES.retention),
        "o:failed": to_ms(later + LIFETIMES.retention),
        "o:dead": to_ms(later + LIFETIMES.dead_letter_retention),
    }
    assert await kept.backend.redis.hget(keys.stats, "orders") == "5"
    assert await kept.retention.backfill_all(["shop"], clock=lambda: later) == (0, 0, 5)

    swept = await kept.retention.sweep(now=later + timedelta(days=1))
    assert (swept.expired, swept.deleted_orders) == (1, 3)
    assert await kept.store.get_purchase("in-flight") is not None


async def test_backfill_indexes_older_events_for_the_window_replay(kept: Kept) -> None:
    event = await paid_event(kept, "old-order")
    await kept.backend.redis.delete(kept.keys.project_events("shop"), kept.keys.expiry, kept.keys.retention)

    await kept.retention.backfill_all(["shop"], clock=lambda: T0 + timedelta(hours=1))

    events = await kept.backend.redis.zrange(kept.keys.project_events("shop"), 0, -1, withscores=True)
    assert events == [(event.id, float(to_ms(event.created_at)))]


async def test_a_late_settlement_racing_the_deletion_leaves_no_fragment(
    kept: Kept, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired order (template dropped) is paid as the sweep deletes it: the template is
    rebuilt only while the order exists, so nothing of it is brought back."""
    await kept.store.create_purchase(make_purchase("late"))
    await kept.retention.sweep(now=T0 + timedelta(seconds=10))
    due = T0 + timedelta(seconds=10) + LIFETIMES.retention
    read = kept.store.get_purchase

    async def read_then_sweep(order_id: str) -> Purchase | None:
        found = await read(order_id)
        await kept.retention.sweep(now=due)  # the worker's sweep, between the read and the write
        return found

    monkeypatch.setattr(kept.store, "get_purchase", read_then_sweep)
    assert await pay(kept, "late", at=due - T0) is Ingested.UNKNOWN_ORDER
    assert await kept.backend.redis.hgetall(kept.keys.purchase("late")) == {}


async def test_a_window_over_the_limit_is_refused_before_anything_is_sent(kept: Kept) -> None:
    settings = make_settings(key_prefix=KEY_PREFIX, redis_url=None)
    operations = Operations(make_stores(kept.backend.redis, settings), kept.backend.arq, clock=lambda: T0)
    await operations.store.put_project(
        Project(
            id="shop",
            name="Shop",
            client_id="cl_shop",
            webhook_secret="whsec_x",
            created_at=T0,
            updated_at=T0,
        )
    )
    events = [await paid_event(kept, f"order-{number}") for number in range(3)]
    since = T0 - timedelta(seconds=1)

    for webhook_status in (None, WebhookStatus.PENDING):
        with pytest.raises(InvalidInput, match="events; one call replays at most 2"):
            await operations.replay_window(Window("shop", since, None, webhook_status), limit=2)
    assert {event.seq for event in await kept.events.get_many([event.id for event in events])} == {0}
    replayed = await operations.replay_window(Window("shop", since), limit=3)
    assert replayed.count == 3
    assert {event.seq for event in await kept.events.get_many([event.id for event in events])} == {1}
    with pytest.raises(NotFound):
        await operations.replay_window(Window("nobody", since))
