"""The admin bearer token (relay/api/auth.py): on every builder and admin route, and on no public one."""

from __future__ import annotations

import base64

import pytest

from tests.helpers import ITEMS, PROJECTS, PUBLIC_ITEMS, Running, Shop, assert_error

ADMIN_ROUTES = [
    ("PUT", PROJECTS),
    ("GET", f"{PROJECTS}/p1"),
    ("POST", f"{PROJECTS}/p1/webhook-secret/rotate"),
    ("PUT", ITEMS),
    ("GET", f"{ITEMS}?project_id=p1"),
    ("GET", f"{ITEMS}/i1"),
    ("DELETE", f"{ITEMS}/i1"),
    ("GET", f"{PROJECTS}/p1/item-purchases"),
    ("GET", f"{PROJECTS}/p1/item-purchases/o1"),
    ("POST", f"{PROJECTS}/p1/item-purchases/o1/retry-webhook"),
    ("GET", "/api/admin/dead-letters"),
    ("POST", "/api/admin/dead-letters/replay"),
    ("DELETE", "/api/admin/dead-letters/evt_1"),
]
BAD_AUTH = [
    pytest.param({}, id="no-token"),
    pytest.param({"Authorization": "Bearer wrong-token-0123456789"}, id="wrong-token"),
    pytest.param({"Authorization": "Bearer "}, id="empty-bearer"),
    pytest.param({"Authorization": f"Basic {base64.b64encode(b'admin:pw').decode()}"}, id="basic"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_admin_routes_need_the_bearer_token(relay: Running, method: str, path: str) -> None:
    token = relay.settings.admin_token
    assert token is not None
    bad = [*(param.values[0] for param in BAD_AUTH), {"Authorization": f"Basic {token.get_secret_value()}"}]
    for headers in bad:
        body = await relay.api.call(method, path, auth=False, headers=dict(headers), json={}, expect=401)
        assert_error(body, "Unauthorized")


async def test_admin_token_is_accepted(relay: Running) -> None:
    body = await relay.api.call("GET", "/api/admin/dead-letters")
    assert body == {"dead_letters": [], "next_cursor": None}


async def test_public_routes_need_no_token(relay: Running, shop: Shop) -> None:
    api = relay.api
    listed = await api.call("GET", PUBLIC_ITEMS, params={"client_id": shop.project["client_id"]}, auth=False)
    assert [item["id"] for item in listed["items"]] == [shop.item["id"]]
    order = await shop.buy()
    assert order["order_id"]
    assert await api.call("GET", "/healthz", auth=False) == {"status": "ok"}
    assert await api.call("GET", "/readyz", auth=False) == {"status": "ready", "embedded": False}
