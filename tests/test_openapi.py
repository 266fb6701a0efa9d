"""The OpenAPI document: valid OpenAPI 3.1, the same routes as the app's router (both ways), real
responses that match it, and a schemathesis run against a live relay that finds no 5xx and no
response outside the document."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate

from relay.app import create_app
from relay.openapi import document
from tests.helpers import ADMIN_TOKEN, Api, Merchant, StartRelay, eventually, make_settings

# Development-only and console routes are not part of the API the document describes.
UNDOCUMENTED_PREFIXES = ("/sandbox/", "/console")
METHODS = {"get", "put", "post", "delete", "patch"}
SCHEMATHESIS_EXAMPLES = 25
SCHEMATHESIS_DEADLINE = 150.0


def router_routes(**overrides: Any) -> set[tuple[str, str]]:
    app = create_app(make_settings(**overrides))
    found = set()
    for resource in app.router.resources():
        path = resource.canonical
        if path.startswith(UNDOCUMENTED_PREFIXES):
            continue
        for route in resource:
            if route.method != "HEAD":  # aiohttp adds HEAD to every GET
                found.add((route.method.lower(), path))
    return found


def documented_routes() -> set[tuple[str, str]]:
    return {
        (method, path) for path, item in document()["paths"].items() for method in item if method in METHODS
    }


def template_regex(path: str) -> re.Pattern[str]:
    return re.compile(
        "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"({[^}]+})", path))
    )


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1.")
    validate(doc)


@pytest.mark.parametrize("server_key", [None, "Mid-server-0123456789abcdef"], ids=["sandbox", "production"])
def test_every_route_is_documented_and_every_documented_route_exists(server_key: str | None) -> None:
    served = router_routes(midtrans_server_key=server_key)
    documented = documented_routes()
    templates = {(method, path) for method, path in documented if "{" in path}
    # A concrete documented path (/callbacks/midtrans) is served by the router's template for it.
    unserved = {
        (method, path)
        for method, path in documented
        if (method, path) not in served
        and not any(m == method and template_regex(p).fullmatch(path) for m, p in served)
    }
    assert not unserved, f"documented but not served: {sorted(unserved)}"
    undocumented = served - documented
    assert not undocumented, f"served but not documented: {sorted(undocumented)}"
    assert templates <= served


def test_errors_auth_and_the_callback_answers_are_described() -> None:
    doc = document()
    assert doc["components"]["securitySchemes"]["adminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "RELAY_ADMIN_TOKEN (16+ characters).",
    }
    assert doc["components"]["schemas"]["Error"]["required"] == ["error", "detail"]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            admin = (
                path.startswith("/api/admin")
                or path == "/metrics"
                or (path.startswith("/api/platform") and not path.startswith("/api/platform/public-items"))
            )
            assert operation["security"] == ([{"adminToken": []}] if admin else []), f"{method} {path}"
            if admin:
                assert {"401", "429"} <= set(operation["responses"])
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {status}"
    midtrans = doc["paths"]["/callbacks/midtrans"]["post"]
    assert set(midtrans["responses"]) == {"200", "400", "401", "408", "409", "413", "503"}
    assert midtrans["security"] == []


def response_validator(method: str, path: str, status: int) -> jsonschema.Draft202012Validator:
    doc = document()
    response = doc["paths"][path][method]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    # "#/components/..." references resolve against the root: give the schema the components.
    return jsonschema.Draft202012Validator(
        {**schema, "components": doc["components"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


async def call_and_check(
    api: Api, method: str, route: str, path: str, *, expect: int = 200, **kwargs: Any
) -> Any:
    """Call ``path`` and validate the answer against the document's schema of ``route``."""
    body = await api.call(method.upper(), path, expect=expect, **kwargs)
    errors = [
        f"{error.json_path}: {error.message}"
        for error in response_validator(method, route, expect).iter_errors(body)
    ]
    assert not errors, f"{method.upper()} {path} -> {expect} does not match the document: {errors}"
    return body


async def test_real_responses_match_the_document(start_relay: StartRelay, merchant: Merchant) -> None:
    """The hand-built views (purchases with attempts, dead letters, rotation) against the document,
    with data in them: a purchase paid, delivered to a failing endpoint and dead-lettered."""
    running = await start_relay()
    api = running.api
    merchant.script["/hook"] = [500]
    project = (
        await call_and_check(
            api,
            "put",
            "/api/platform/projects",
            "/api/platform/projects",
            json={"name": "Shop", "webhook_url": f"{merchant.url}/hook"},
        )
    )["project"]
    pid = project["id"]
    await call_and_check(api, "get", "/api/platform/projects/{project_id}", f"/api/platform/projects/{pid}")
    item = (
        await call_and_check(
            api,
            "put",
            "/api/platform/items",
            "/api/platform/items",
            json={"project_id": pid, "name": "Template", "price": 50000, "currency": "IDR"},
        )
    )["item"]
    await call_and_check(api, "get", "/api/platform/items", f"/api/platform/items?project_id={pid}")
    await call_and_check(api, "get", "/api/platform/items/{item_id}", f"/api/platform/items/{item['id']}")
    await call_and_check(
        api,
        "get",
        "/api/platform/public-items",
        f"/api/platform/public-items?client_id={project['client_id']}",
        auth=False,
    )
    order = await call_and_check(
        api,
        "post",
        "/api/platform/public-items/purchase",
        "/api/platform/public-items/purchase",
        auth=False,
        json={"client_id": project["client_id"], "item_id": item["id"], "buyer_email": "buyer@example.com"},
    )
    paid = await call_and_check(
        api,
        "post",
        "/callbacks/midtrans",
        "/callbacks/midtrans",
        auth=False,
        json=api.notification(order["order_id"], order["amount"]),
    )
    assert paid == {"status": "ok"}
    purchase_path = f"/api/platform/projects/{pid}/item-purchases/{order['order_id']}"

    async def dead() -> bool:
        return (await api.purchase(pid, order["order_id"]))["webhook_status"] == "failed"

    await eventually(dead, what="the purchase's webhook in the dead-letter queue")
    purchase = await call_and_check(
        api, "get", "/api/platform/projects/{project_id}/item-purchases/{purchase_id}", purchase_path
    )
    assert purchase["purchase"]["attempts"], "the view has attempts to check"
    await call_and_check(
        api,
        "get",
        "/api/platform/projects/{project_id}/item-purchases",
        f"/api/platform/projects/{pid}/item-purchases",
    )
    letters = await call_and_check(api, "get", "/api/admin/dead-letters", "/api/admin/dead-letters")
    [letter] = letters["dead_letters"]
    assert letter["last_attempt"] is not None
    await call_and_check(
        api,
        "post",
        "/api/admin/dead-letters/replay",
        "/api/admin/dead-letters/replay",
        json={"event_ids": [letter["event_id"]]},
    )
    await call_and_check(
        api,
        "post",
        "/api/platform/projects/{project_id}/item-purchases/{purchase_id}/retry-webhook",
        f"{purchase_path}/retry-webhook",
    )
    await call_and_check(
        api,
        "post",
        "/api/platform/projects/{project_id}/webhook-secret/rotate",
        f"/api/platform/projects/{pid}/webhook-secret/rotate",
    )
    await call_and_check(api, "delete", "/api/platform/items/{item_id}", f"/api/platform/items/{item['id']}")
    await call_and_check(api, "get", "/readyz", "/readyz")
    await call_and_check(api, "get", "/healthz", "/healthz")
    # Errors too: the shape every 4xx/5xx shares.
    await call_and_check(
        api, "get", "/api/platform/projects/{project_id}", "/api/platform/projects/nope", expect=404
    )
    await call_and_check(
        api,
        "get",
        "/api/platform/projects/{project_id}",
        f"/api/platform/projects/{pid}",
        expect=401,
        auth=False,
    )
    await call_and_check(
        api, "post", "/callbacks/midtrans", "/callbacks/midtrans", expect=400, auth=False, data=b"[]"
    )


async def test_the_relay_serves_the_document(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    async with running.api.http.get("/openapi.json") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == document()


@pytest.mark.timeout(300)
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    """Property-based requests from the document to a live relay (production-like target checks):
    every answer is below 500 and matches the document's schema for its status."""
    running = await start_relay(worker=False, allow_private_targets=False)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{running.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {ADMIN_TOKEN}",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--max-examples",
        str(SCHEMATHESIS_EXAMPLES),
        "--workers",
        "1",  # several workers trip a thread-safety bug in hypothesis's lambda reprs on 3.11
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=SCHEMATHESIS_DEADLINE)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"schemathesis did not finish within {SCHEMATHESIS_DEADLINE:g} s")
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-20000:]
    assert re.search(r"\d+ generated, \d+ passed", report), report[-5000:]
