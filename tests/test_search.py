"""relay.search (a project's orders by id, and filtered pages newest first, on both backends) and
relay.charts (what the console draws of them)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from relay.charts import Hour, charts
from relay.models import OrderKind, PurchaseStatus
from relay.search import BATCH, OrderFilter, OrderSearch
from tests.helpers import T0, Backend, make_purchase


def search_on(stores: Backend) -> OrderSearch:
    return OrderSearch(stores.redis, stores.store, stores.events, prefix=stores.store.keys.prefix)


async def walk(search: OrderSearch, wanted: OrderFilter, *, limit: int) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = await search.page("shop", wanted, limit=limit, cursor=cursor)
        pages.append([order.order_id for order in page.orders])
        cursor = page.next_cursor
        if cursor is None:
            return pages


async def test_pages_walk_every_order_once_newest_first_even_in_one_millisecond(stores: Backend) -> None:
    """More orders than a batch share one creation time: paging by cursor still sees each once."""
    same = [f"same-{n:03d}" for n in range(BATCH + 50)]
    for order_id in same:
        await stores.store.create_purchase(make_purchase(order_id, created_at=T0))
    later = [f"later-{n}" for n in range(3)]
    for n, order_id in enumerate(later):
        await stores.store.create_purchase(make_purchase(order_id, created_at=T0 + timedelta(seconds=n + 1)))
    await stores.store.create_purchase(make_purchase("theirs", "other", created_at=T0))
    pages = await walk(search_on(stores), OrderFilter(), limit=40)
    seen = [order_id for page in pages for order_id in page]
    assert seen[:3] == later[::-1]  # newest first
    assert sorted(seen) == sorted(same + later)  # each once, the other project's never
    assert [len(page) for page in pages[:-1]] == [40] * (len(pages) - 1)


async def test_filters_by_kind_status_time_and_email(stores: Backend) -> None:
    for n in range(10):
        purchase = make_purchase(f"o-{n}", created_at=T0 + timedelta(minutes=n))
        if n % 2:
            purchase = purchase.model_copy(update={"buyer_email": f"Budi{n}@Example.com"})
        await stores.store.create_purchase(purchase)
    search = search_on(stores)
    found = await walk(search, OrderFilter(buyer_email="budi", since=T0 + timedelta(minutes=3)), limit=2)
    assert [order_id for page in found for order_id in page] == ["o-9", "o-7", "o-5", "o-3"]
    window = OrderFilter(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4))
    assert await walk(search, window, limit=10) == [["o-4", "o-3", "o-2"]]
    assert await walk(search, OrderFilter(kind=OrderKind.PAYMENT), limit=10) == [[]]
    assert len((await walk(search, OrderFilter(status=PurchaseStatus.PENDING), limit=100))[0]) == 10


async def test_find_takes_any_id_of_the_projects_order_only(stores: Backend) -> None:
    await stores.store.create_purchase(make_purchase("o-1"))
    await stores.store.create_purchase(make_purchase("o-2", "other"))
    search = search_on(stores)
    found = await search.find("shop", "o-1")
    assert found is not None
    assert found.order_id == "o-1"
    for absent in ("o-2", "nope", "", "evt_0", "x" * 500):
        assert await search.find("shop", absent) is None


def test_charts_put_each_hour_where_it_belongs() -> None:
    """The pictures' geometry: a full-success hour at the top, retries under dead letters."""
    start = T0.replace(minute=0, second=0, microsecond=0)
    hours = [
        Hour(start, attempts=4, delivered=4, retries=0, dead=0, p50_ms=10.0, p99_ms=40.0),
        Hour(
            start + timedelta(hours=1), attempts=0, delivered=0, retries=0, dead=0, p50_ms=None, p99_ms=None
        ),
        Hour(
            start + timedelta(hours=2), attempts=4, delivered=2, retries=1, dead=1, p50_ms=20.0, p99_ms=80.0
        ),
    ]
    drawn = charts(hours)
    success = [point.split(",") for point in drawn.success_line.split()]
    assert len(success) == 2  # the hour without attempts has no point
    top, middle = float(success[0][1]), float(success[1][1])
    assert top < middle  # 100% is higher on the picture than 50%
    assert drawn.latency_top_ms == 80.0
    assert drawn.volume_top == 2
    [_, _, retry] = drawn.retry_bars
    [_, _, dead] = drawn.dead_bars
    assert retry.height > 0
    assert dead.height > 0
    assert dead.y + dead.height == pytest.approx(retry.y)  # dead letters stacked on the retries
    assert not drawn.empty
    assert charts([Hour(start, 0, 0, 0, 0, None, None)]).empty
