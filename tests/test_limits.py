"""relay/ratelimit.py and relay/api/clients.py through HTTP: public purchases are limited per
client and source address under a per-client ceiling, counted only when they create a purchase;
failed bearer tokens and console logins lock out their address only. Addresses are simulated with
X-Forwarded-For from loopback, which the relay believes because loopback is a trusted proxy here."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from relay.errors import TooManyRequests
from relay.ratelimit import FailedAuth
from tests.console_client import console_client
from tests.helpers import ADMIN_TOKEN, T0, Backend, Running, Shop, StartRelay, open_shop

PURCHASE = "/api/platform/public-items/purchase"
TRUST_LOOPBACK = {"trusted_proxies": "127.0.0.0/8"}


def order(shop: Shop, **changes: str) -> dict[str, Any]:
    return {
        "client_id": shop.project["client_id"],
        "item_id": shop.item["id"],
        "buyer_email": "b@example.com",
    } | changes


async def buy(running: Running, payload: dict[str, Any], address: str | None) -> int:
    headers = {"X-Forwarded-For": address} if address else {}
    async with running.api.http.post(PURCHASE, json=payload, headers=headers) as response:
        return response.status


async def test_a_flood_from_one_address_does_not_stop_another(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, purchase_rate_limit=3, **TRUST_LOOPBACK)
    shop = await open_shop(running.api)
    payload = order(shop)
    flood = [await buy(running, payload, "203.0.113.7") for _ in range(30)]
    assert flood == [200] * 3 + [429] * 27
    # Another buyer of the same shop, from another address, is not affected.
    assert [await buy(running, payload, "198.51.100.9") for _ in range(3)] == [200] * 3


async def test_requests_that_create_nothing_are_not_counted(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, purchase_rate_limit=3, **TRUST_LOOPBACK)
    shop = await open_shop(running.api)
    missing = order(shop, item_id="no-such-item")
    invalid = order(shop, buyer_email="not-an-email")
    for _ in range(61):  # what locked every buyer out for a minute
        assert await buy(running, missing, "203.0.113.7") == 404
        assert await buy(running, invalid, "203.0.113.7") == 400
    assert await buy(running, order(shop), "203.0.113.7") == 200


async def test_a_client_has_a_ceiling_of_twenty_address_limits(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, purchase_rate_limit=1, **TRUST_LOOPBACK)
    shop = await open_shop(running.api)
    payload = order(shop)
    answers = [await buy(running, payload, f"198.51.100.{host}") for host in range(1, 23)]
    assert answers == [200] * 20 + [429] * 2
    async with running.api.http.post(
        PURCHASE, json=payload, headers={"X-Forwarded-For": "192.0.2.1"}
    ) as refused:
        body = await refused.json()
    assert body["error"] == "TooManyRequests"
    assert "client_id" in body["detail"]
    assert int(refused.headers["Retry-After"]) >= 1


async def test_x_forwarded_for_is_believed_only_from_trusted_proxies(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, purchase_rate_limit=2)  # no trusted proxies
    shop = await open_shop(running.api)
    payload = order(shop)
    # Each request claims another address; all come from 127.0.0.1, which is what counts.
    answers = [await buy(running, payload, f"198.51.100.{host}") for host in range(1, 5)]
    assert answers == [200, 200, 429, 429]


async def test_zero_turns_the_purchase_limit_off(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, purchase_rate_limit=0)
    shop = await open_shop(running.api)
    payload = order(shop)
    assert {await buy(running, payload, None) for _ in range(25)} == {200}


async def admin_get(running: Running, token: str, address: str) -> int:
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": address}
    async with running.api.http.get("/api/admin/dead-letters", headers=headers) as response:
        return response.status


async def test_failed_bearer_tokens_lock_out_their_address_only(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, **TRUST_LOOPBACK)
    guesses = [await admin_get(running, f"guess-{n:04d}-abcdefghij", "203.0.113.7") for n in range(12)]
    assert guesses == [401] * 10 + [429] * 2
    assert await admin_get(running, ADMIN_TOKEN, "203.0.113.7") == 429  # the right token too, now
    assert await admin_get(running, ADMIN_TOKEN, "198.51.100.9") == 200  # the operator elsewhere


async def test_failed_console_logins_lock_out_their_address(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, **TRUST_LOOPBACK)
    async with console_client(running.url) as console:
        statuses = []
        for n in range(11):
            async with console.http.post(
                "/console/login",
                data={"token": f"guess-{n:04d}-abcdefghij"},
                headers={"X-Forwarded-For": "203.0.113.7"},
                allow_redirects=False,
            ) as response:
                statuses.append(response.status)
        assert statuses == [401] * 10 + [429]
        async with console.http.post(
            "/console/login", data={"token": ADMIN_TOKEN}, headers={"X-Forwarded-For": "203.0.113.7"}
        ) as response:
            assert response.status == 429
            assert response.content_type == "text/html"
        await console.login()  # from loopback itself: another address


async def test_requests_without_a_token_count_for_nothing(start_relay: StartRelay) -> None:
    """Whoever shares the operator's address (a proxy) cannot lock the operator out by sending
    requests without a credential."""
    running = await start_relay(worker=False, **TRUST_LOOPBACK)
    for _ in range(30):
        async with running.api.http.get(
            "/api/admin/dead-letters", headers={"X-Forwarded-For": "203.0.113.7"}
        ) as response:
            assert response.status == 401
    assert await admin_get(running, ADMIN_TOKEN, "203.0.113.7") == 200


async def test_parallel_guesses_cannot_slip_past_the_count(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, **TRUST_LOOPBACK)
    guesses = await asyncio.gather(
        *(admin_get(running, f"guess-{n:04d}-abcdefghij", "203.0.113.7") for n in range(40))
    )
    assert sorted(guesses) == [401] * 10 + [429] * 30


async def test_right_credentials_in_parallel_count_for_nothing_and_past_the_limit_are_refused(
    stores: Backend,
) -> None:
    """Right requests, however many in flight, never count against their address; failures do,
    and once they reach the limit a right credential is refused too (a guess that happens to be
    right is no use past it)."""
    failures = FailedAuth(stores.redis, prefix="t")
    assert (
        await asyncio.gather(*(failures.judge("203.0.113.7", right=True, now=T0) for _ in range(50)))
        == [True] * 50
    )
    assert [await failures.judge("203.0.113.7", right=False, now=T0) for _ in range(10)] == [False] * 10
    for right in (False, True):
        with pytest.raises(TooManyRequests):
            await failures.judge("203.0.113.7", right=right, now=T0)
    assert await failures.judge("203.0.113.8", right=True, now=T0)  # another address
    assert await failures.judge("203.0.113.7", right=True, now=T0 + timedelta(minutes=1))  # the next window


async def test_many_parallel_admin_requests_from_one_address_are_all_served(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, **TRUST_LOOPBACK)
    answers = await asyncio.gather(*(admin_get(running, ADMIN_TOKEN, "203.0.113.7") for _ in range(64)))
    assert answers == [200] * 64


async def test_right_tokens_count_for_nothing(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, **TRUST_LOOPBACK)
    assert [await admin_get(running, ADMIN_TOKEN, "203.0.113.7") for _ in range(25)] == [200] * 25
    assert [await admin_get(running, f"guess-{n:04d}-abcdefghij", "203.0.113.7") for n in range(10)] == [
        401
    ] * 10
