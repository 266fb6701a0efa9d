"""Idempotency-Key on the public purchase (relay/idempotency.py): a retry answers the first response
again, another body or a duplicate in flight is a 409, an error lets go of the key, and the key is
per client_id. The claim's own rules (cancellation, expiry, fencing) are tested on each backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict
from redis.asyncio import Redis

from relay.connections import Connections
from relay.idempotency import IDEMPOTENCY_TTL, IN_FLIGHT_TTL, REPLAYED, Idempotency, body_digest
from relay.schema import Keys
from tests.helpers import (
    PREFIX,
    PROJECTS,
    PURCHASE,
    Api,
    Running,
    Shop,
    StartRelay,
    assert_error,
    local_server,
    open_shop,
)

SERVER_KEY = "SB-Mid-server-test"
KEY = "order-7f3c2a9e-double-click"


@dataclass
class Answer:
    status: int
    body: Any
    headers: CIMultiDict[str]


async def post(api: Api, payload: dict[str, Any], *, key: str | None = KEY) -> Answer:
    """The public purchase, with ``key`` as its Idempotency-Key (None: without the header)."""
    headers = {} if key is None else {"Idempotency-Key": key}
    async with api.http.post(PURCHASE, json=payload, headers=headers) as response:
        return Answer(response.status, await response.json(), CIMultiDict(response.headers))


def payload_of(shop: Shop, **fields: Any) -> dict[str, Any]:
    order = {"client_id": shop.project["client_id"], "item_id": shop.item["id"], "buyer_email": "a@b.co"}
    return order | fields


async def order_ids(shop: Shop) -> list[str]:
    listed = await shop.api.call("GET", f"{PROJECTS}/{shop.project['id']}/item-purchases")
    return [purchase["order_id"] for purchase in listed["purchases"]]


async def idempotency_records(redis: Redis) -> list[str]:
    return [key async for key in redis.scan_iter(match=f"{PREFIX}:idempotency:*")]


# --- through the route --------------------------------------------------------------------------


async def test_the_same_key_and_body_answers_the_first_response_again(relay: Running, shop: Shop) -> None:
    first = await post(relay.api, payload_of(shop))
    again = await post(relay.api, payload_of(shop))
    assert first.status == again.status == 200, (first, again)
    assert again.body == first.body
    assert again.body["order_id"]
    assert again.body["invoice_url"]
    assert REPLAYED not in first.headers
    assert again.headers[REPLAYED] == "true"
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert await order_ids(shop) == [first.body["order_id"]]


async def test_the_same_key_with_another_body_is_409(relay: Running, shop: Shop) -> None:
    first = await post(relay.api, payload_of(shop))
    other = await post(relay.api, payload_of(shop, buyer_name="Someone Else"))
    assert first.status == 200
    assert other.status == 409
    assert_error(other.body, "Conflict", mentions="another body")
    assert await order_ids(shop) == [first.body["order_id"]]


async def test_without_the_header_every_request_creates_an_order(
    relay: Running, shop: Shop, redis: Redis
) -> None:
    first = await post(relay.api, payload_of(shop), key=None)
    second = await post(relay.api, payload_of(shop), key=None)
    assert first.status == second.status == 200
    assert first.body["order_id"] != second.body["order_id"]
    assert REPLAYED not in second.headers
    assert sorted(await order_ids(shop)) == sorted([first.body["order_id"], second.body["order_id"]])
    assert await idempotency_records(redis) == []


async def test_the_key_is_per_client_id(relay: Running, shop: Shop) -> None:
    other_shop = await open_shop(relay.api, name="Other")
    mine = await post(relay.api, payload_of(shop))
    theirs = await post(relay.api, payload_of(other_shop))
    assert mine.status == theirs.status == 200, (mine, theirs)
    assert mine.body["order_id"] != theirs.body["order_id"]
    assert REPLAYED not in theirs.headers
    assert await order_ids(shop) == [mine.body["order_id"]]
    assert await order_ids(other_shop) == [theirs.body["order_id"]]


async def test_an_error_lets_go_of_the_key_so_the_same_request_can_succeed_later(
    relay: Running, shop: Shop, redis: Redis
) -> None:
    """An item the client names before it exists: 404, then the same body and key once it does."""
    payload = payload_of(shop, item_id="launching-soon")
    early = await post(relay.api, payload)
    assert early.status == 404
    assert_error(early.body, "NotFound")
    assert await idempotency_records(redis) == []
    await relay.api.item(shop.project["id"], id="launching-soon")
    later = await post(relay.api, payload)
    assert later.status == 200, later
    assert REPLAYED not in later.headers
    assert await order_ids(shop) == [later.body["order_id"]]


async def test_the_answer_is_kept_for_24_hours(relay: Running, shop: Shop, redis: Redis) -> None:
    answer = await post(relay.api, payload_of(shop))
    assert answer.status == 200
    name = Keys(PREFIX).idempotency(shop.project["client_id"], PURCHASE, KEY)
    assert await idempotency_records(redis) == [name]
    day = int(IDEMPOTENCY_TTL.total_seconds())
    assert day == 86400
    assert day - 60 < await redis.ttl(name) <= day
    record = json.loads(await redis.get(name))
    assert record["state"] == "done"
    assert record["status"] == 200
    assert json.loads(record["text"]) == answer.body
    assert KEY not in await redis.get(name)  # the key itself is only in the name's digest


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("k" * 256, id="256-characters"),
        pytest.param("clé-de-commande", id="not-ascii"),
    ],
)
async def test_a_malformed_key_is_400(relay: Running, shop: Shop, key: str) -> None:
    answer = await post(relay.api, payload_of(shop), key=key)
    assert answer.status == 400, answer
    assert_error(answer.body, "InvalidInput", mentions="Idempotency-Key")
    assert await order_ids(shop) == []


async def test_a_key_of_255_printable_characters_is_accepted(relay: Running, shop: Shop) -> None:
    key = ("~ Az09!" * 40)[:255]
    first = await post(relay.api, payload_of(shop), key=key)
    again = await post(relay.api, payload_of(shop), key=key)
    assert first.status == again.status == 200, (first, again)
    assert again.headers[REPLAYED] == "true"
    assert again.body == first.body


async def test_two_keys_on_one_request_are_400(relay: Running, shop: Shop) -> None:
    headers = CIMultiDict([("Idempotency-Key", "one"), ("Idempotency-Key", "two")])
    async with relay.api.http.post(PURCHASE, json=payload_of(shop), headers=headers) as response:
        assert response.status == 400
        assert_error(await response.json(), "InvalidInput", mentions="one Idempotency-Key")
    assert await order_ids(shop) == []


# --- a duplicate while the first is in flight, on another process --------------------------------


@dataclass
class SlowSnap:
    """Midtrans Snap on loopback that holds every invoice until ``go`` is set."""

    url: str = ""
    calls: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)

    async def create(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.arrived.set()
        await self.go.wait()
        redirect = f"https://example.test/pay/tok-{self.calls}"
        return web.json_response({"token": f"tok-{self.calls}", "redirect_url": redirect}, status=201)


@pytest.fixture
async def slow_snap() -> AsyncIterator[SlowSnap]:
    fake = SlowSnap()
    app = web.Application()
    app.router.add_post("/snap/v1/transactions", fake.create)
    async with local_server(app) as fake.url:
        yield fake
        fake.go.set()


async def test_a_duplicate_in_flight_on_another_process_is_409(
    start_relay: StartRelay, slow_snap: SlowSnap
) -> None:
    """Two relays on one Redis: the claim is in Redis, not in a process."""
    settings = {"worker": False, "midtrans_server_key": SERVER_KEY, "midtrans_api_base": slow_snap.url}
    one, two = await start_relay(**settings), await start_relay(**settings)
    shop = await open_shop(one.api)
    first = asyncio.create_task(post(one.api, payload_of(shop)))
    await asyncio.wait_for(slow_snap.arrived.wait(), timeout=10)
    duplicate = await post(two.api, payload_of(shop))
    assert duplicate.status == 409, duplicate
    assert_error(duplicate.body, "Conflict", mentions="in flight")
    slow_snap.go.set()
    answer = await asyncio.wait_for(first, timeout=10)
    assert answer.status == 200, answer
    again = await post(two.api, payload_of(shop))
    assert again.status == 200
    assert again.headers[REPLAYED] == "true"
    assert again.body == answer.body
    assert slow_snap.calls == 1
    assert await order_ids(shop) == [answer.body["order_id"]]


# --- the claim, on each backend -------------------------------------------------------------------

NAME = "t:idempotency:cl_test:" + "0" * 64
BODY = b'{"item_id": "x"}'


def created(status: int = 200) -> web.Response:
    return web.json_response({"order_id": "item-1"}, status=status)


async def test_a_cancelled_request_lets_go_of_its_claim(connections: Connections) -> None:
    """A client gone (or a shutdown) cancels the handler: a retry must not be refused as in flight."""
    redis = connections.redis
    started = asyncio.Event()

    async def hangs() -> web.Response:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("never set")

    running = asyncio.create_task(Idempotency(redis).run(NAME, BODY, hangs))
    await asyncio.wait_for(started.wait(), timeout=5)
    claim = json.loads(await redis.get(NAME))
    assert claim["state"] == "in_flight"
    assert claim["body"] == body_digest(BODY)
    assert 0 < await redis.ttl(NAME) <= IN_FLIGHT_TTL.total_seconds()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await redis.get(NAME) is None


async def test_an_error_or_a_non_2xx_answer_lets_go_and_a_2xx_is_kept(connections: Connections) -> None:
    redis = connections.redis
    records = Idempotency(redis)

    async def fails() -> web.Response:
        raise RuntimeError("the handler broke")

    with pytest.raises(RuntimeError):
        await records.run(NAME, BODY, fails)
    assert await redis.get(NAME) is None

    async def refused() -> web.Response:
        return created(422)

    assert (await records.run(NAME, BODY, refused)).status == 422
    assert await redis.get(NAME) is None

    async def succeeds() -> web.Response:
        return created()

    assert (await records.run(NAME, BODY, succeeds)).status == 200
    assert json.loads(await redis.get(NAME))["state"] == "done"
    assert await redis.ttl(NAME) > IN_FLIGHT_TTL.total_seconds()


@pytest.mark.parametrize("status", [200, 500])
async def test_a_claim_taken_over_is_neither_overwritten_nor_deleted(
    connections: Connections, status: int
) -> None:
    """A request that outlived its claim's expiry, the key claimed again meanwhile: what the late
    one does after (store a 2xx, let go after a 5xx) must not touch the claim holding the key now."""
    redis = connections.redis
    taken_over = json.dumps({"state": "in_flight", "body": body_digest(BODY), "token": "another request"})

    async def outlives_its_claim() -> web.Response:
        await redis.set(NAME, taken_over, ex=IN_FLIGHT_TTL)
        return created(status)

    assert (await Idempotency(redis).run(NAME, BODY, outlives_its_claim)).status == status
    assert await redis.get(NAME) == taken_over
