"""Project API keys: made, listed and revoked with the admin token; a key works the builder routes
of its own project only (another project's resources are 404, admin routes 403), is refused at
once once revoked, by every relay process, and failed keys are limited per address like tokens."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from relay.api_keys import digest
from tests.helpers import Api, StartRelay, assert_error

KEYS = "/api/platform/projects/{}/api-keys"


async def make_key(api: Api, project_id: str, name: str = "backend") -> dict[str, Any]:
    body = await api.call("POST", KEYS.format(project_id), json={"name": name})
    return dict(body["api_key"])


async def as_key(api: Api, key: str, method: str, path: str, *, expect: int = 200, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    return await api.call(method, path, auth=False, headers=headers, expect=expect, **kwargs)


async def test_a_key_is_shown_once_listed_without_it_and_stored_hashed(
    start_relay: StartRelay, redis: Redis
) -> None:
    api = (await start_relay()).api
    project = await api.project()
    made = await make_key(api, project["id"])
    assert set(made) >= {"id", "name", "key", "created_at", "prefix"}
    assert made["key"].startswith("rk_")
    assert len(made["key"]) >= 40
    assert made["key"].startswith(made["prefix"])
    listed = (await api.call("GET", KEYS.format(project["id"])))["api_keys"]
    assert [row["id"] for row in listed] == [made["id"]]
    assert "key" not in listed[0]
    assert listed[0]["last_used_at"] is None
    # Redis holds the key's digest, never the key.
    dump = [await redis.dump(name) for name in await redis.keys("*")]
    assert not any(made["key"].encode() in (value or b"") for value in dump)
    assert await redis.exists(f"relay:api-key:{digest(made['key'])}")

    await as_key(api, made["key"], "GET", f"/api/platform/projects/{project['id']}")
    used = (await api.call("GET", KEYS.format(project["id"])))["api_keys"][0]
    assert used["last_used_at"] is not None


async def test_a_key_works_its_own_projects_builder_routes_only(start_relay: StartRelay) -> None:
    api = (await start_relay()).api
    mine, theirs = await api.project(), await api.project()
    key = (await make_key(api, mine["id"]))["key"]
    their_item = await api.item(theirs["id"])

    # Its own project: read, change, catalogue, orders.
    await as_key(api, key, "GET", f"/api/platform/projects/{mine['id']}")
    await as_key(api, key, "PUT", "/api/platform/projects", json={"id": mine["id"], "name": "Renamed"})
    item = (
        await as_key(
            api,
            key,
            "PUT",
            "/api/platform/items",
            json={"project_id": mine["id"], "name": "T", "price": 1000},
        )
    )["item"]
    await as_key(api, key, "GET", f"/api/platform/items/{item['id']}")
    await as_key(api, key, "GET", "/api/platform/items", params={"project_id": mine["id"]})
    payment = {"order_id": "INV-1", "amount": 5000, "buyer_email": "b@example.com"}
    await as_key(api, key, "POST", f"/api/platform/projects/{mine['id']}/payments", json=payment)
    await as_key(api, key, "GET", f"/api/platform/projects/{mine['id']}/item-purchases")

    # Another project's: as if it did not exist.
    cheap = {"name": "X", "price": 1}
    for method, path, kwargs in [
        ("GET", f"/api/platform/projects/{theirs['id']}", {}),
        ("GET", f"/api/platform/projects/{theirs['id']}/item-purchases", {}),
        ("POST", f"/api/platform/projects/{theirs['id']}/payments", {"json": payment}),
        ("GET", f"/api/platform/items/{their_item['id']}", {}),
        ("DELETE", f"/api/platform/items/{their_item['id']}", {}),
        ("GET", "/api/platform/items", {"params": {"project_id": theirs["id"]}}),
        ("PUT", "/api/platform/items", {"json": {"project_id": theirs["id"], **cheap}}),
        (
            "PUT",
            "/api/platform/items",
            {"json": {"id": their_item["id"], "project_id": mine["id"], "name": "X", "price": 1}},
        ),
        ("PUT", "/api/platform/projects", {"json": {"id": theirs["id"], "name": "Mine now"}}),
        (
            "PUT",
            "/api/platform/plans",
            {"json": {"project_id": theirs["id"], "name": "P", "price": 1, "interval": "month"}},
        ),
    ]:
        assert_error(await as_key(api, key, method, path, expect=404, **kwargs), "NotFound")
    # The same answer as a project that does not exist, but for the id it names.
    missing = await as_key(api, key, "GET", "/api/platform/projects/no-such-project", expect=404)
    other = await as_key(api, key, "GET", f"/api/platform/projects/{theirs['id']}", expect=404)
    assert other["detail"].replace(theirs["id"], "no-such-project") == missing["detail"]
    unchanged = await api.call("GET", f"/api/platform/items/{their_item['id']}")
    assert unchanged["item"]["name"] == their_item["name"]

    # Admin routes, project creation and the key routes: 403.
    for method, path, kwargs in [
        ("GET", "/api/admin/dead-letters", {}),
        ("GET", "/api/admin/unmatched-callbacks", {}),
        ("PUT", "/api/platform/projects", {"json": {"name": "New"}}),
        ("POST", KEYS.format(mine["id"]), {"json": {"name": "more"}}),
        ("GET", KEYS.format(mine["id"]), {}),
    ]:
        assert_error(await as_key(api, key, method, path, expect=403, **kwargs), "Forbidden")


async def test_a_revoked_key_is_refused_at_once_by_every_process(start_relay: StartRelay) -> None:
    one, other = await start_relay(), await start_relay()
    project = await one.api.project()
    made = await make_key(one.api, project["id"])
    path = f"/api/platform/projects/{project['id']}"
    await as_key(other.api, made["key"], "GET", path)
    assert await one.api.call("DELETE", KEYS.format(project["id"]) + f"/{made['id']}") == {
        "revoked": True,
        "id": made["id"],
    }
    assert_error(await as_key(other.api, made["key"], "GET", path, expect=401), "Unauthorized")
    assert_error(await as_key(one.api, made["key"], "GET", path, expect=401), "Unauthorized")
    await one.api.call("DELETE", KEYS.format(project["id"]) + f"/{made['id']}", expect=404)
    assert (await one.api.call("GET", KEYS.format(project["id"])))["api_keys"] == []


@pytest.mark.parametrize("given", ["rk_" + "x" * 43, "rk_", "rk_\u00e9"])
async def test_an_unknown_key_is_401_and_failures_are_limited_per_address(
    start_relay: StartRelay, given: str
) -> None:
    api = (await start_relay()).api
    project = await api.project()
    path = f"/api/platform/projects/{project['id']}"
    for _ in range(10):
        assert_error(await as_key(api, given, "GET", path, expect=401), "Unauthorized")
    assert_error(await as_key(api, given, "GET", path, expect=429), "TooManyRequests")


async def test_a_right_key_is_taken_whatever_its_addresses_failures(start_relay: StartRelay) -> None:
    """Others behind the same address (a NAT) failing cannot lock a merchant's backend out."""
    api = (await start_relay()).api
    project = await api.project()
    key = (await make_key(api, project["id"]))["key"]
    path = f"/api/platform/projects/{project['id']}"
    for _ in range(10):
        await as_key(api, "rk_" + "y" * 43, "GET", path, expect=401)
    await as_key(api, "rk_" + "y" * 43, "GET", path, expect=429)
    await as_key(api, key, "GET", path)


async def test_a_key_cannot_choose_a_new_item_or_plan_id(start_relay: StartRelay) -> None:
    """Ids are global: a key naming an id its project does not have gets a 404 and creates
    nothing, whether another project has it or not; without an id the relay draws one."""
    api = (await start_relay()).api
    mine, theirs = await api.project(), await api.project()
    key = (await make_key(api, mine["id"]))["key"]
    taken = await api.item(theirs["id"], id="diamonds-100")
    for chosen in (taken["id"], "diamonds-999"):
        body = {"id": chosen, "project_id": mine["id"], "name": "X", "price": 1}
        first = await as_key(api, key, "PUT", "/api/platform/items", json=body, expect=404)
        plan = {"id": chosen, "project_id": mine["id"], "name": "P", "price": 1, "interval": "month"}
        second = await as_key(api, key, "PUT", "/api/platform/plans", json=plan, expect=404)
        assert_error(first, "NotFound", mentions=chosen)
        assert_error(second, "NotFound", mentions=chosen)
    await api.call("GET", "/api/platform/items/diamonds-999", expect=404)
    fresh = {"project_id": mine["id"], "name": "X", "price": 1}
    made = await as_key(api, key, "PUT", "/api/platform/items", json=fresh)
    assert made["item"]["id"]
