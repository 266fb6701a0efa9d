"""The ingress middleware (relay/api/middleware.py): JSON 404 and 405 in the error shape, and the
request id on responses."""

from __future__ import annotations

import pytest

from tests.helpers import PROJECTS, PURCHASE, Running, assert_error

CALLBACK = "/callbacks/midtrans"


@pytest.mark.parametrize("path", ["/nope", "/api/platform/nothing"])
async def test_unknown_route_is_json_404(relay: Running, path: str) -> None:
    body = await relay.api.call("GET", path, auth=False, expect=404)
    assert_error(body, "NotFound")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", CALLBACK), ("DELETE", PROJECTS), ("POST", "/healthz"), ("GET", PURCHASE)],
)
async def test_wrong_method_is_json_405(relay: Running, method: str, path: str) -> None:
    body = await relay.api.call(method, path, auth=False, expect=405)
    assert_error(body, "MethodNotAllowed")


async def test_errors_carry_a_request_id(relay: Running) -> None:
    async with relay.api.http.get("/nope", headers={"x-request-id": "abc-123"}) as response:
        assert response.status == 404
        assert response.headers["x-request-id"] == "abc-123"
        assert response.content_type == "application/json"
