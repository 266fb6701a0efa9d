"""The OpenAPI document: valid OpenAPI 3.1, the same routes as the app's router (both ways), real
responses that match it, and a schemathesis run against a live relay that finds no 5xx and no
response outside the document."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate

from relay.app import create_app
from relay.event_types import TYPES
from relay.openapi import document
from tests.helpers import ADMIN_TOKEN, Api, Merchant, StartRelay, eventually, make_settings, wait_hits

# Development-only routes and the web pages (console, portal) are not part of the API the document
# describes.
UNDOCUMENTED_PREFIXES = ("/sandbox/", "/console", "/portal")
METHODS = {"get", "put", "post", "delete", "patch"}
# Keyed by a project's client_id, no auth; every other /api/platform route takes the admin token.
PUBLIC_PREFIXES = ("/api/platform/public-items", "/api/platform/public-plans")
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
                or (path.startswith("/api/platform") and not path.startswith(PUBLIC_PREFIXES))
            )
            # Builder routes take a project's API key too, but not the routes that manage keys.
            keys = admin and path.startswith("/api/platform") and "/api-keys" not in path
            security = [{"adminToken": []}, {"projectKey": []}] if keys else [{"adminToken": []}]
            assert operation["security"] == (security if admin else []), f"{method} {path}"
            if admin:
                assert {"401", "429"} <= set(operation["responses"])
            if admin and not keys:
                assert "403" in operation["responses"], f"{method} {path}: a project key is a 403"
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {status}"
    midtrans = doc["paths"]["/callbacks/midtrans"]["post"]
    assert set(midtrans["responses"]) == {"200", "400", "401", "408", "409", "413", "503"}
    assert midtrans["security"] == []


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    # "#/components/..." references resolve against the root: give the schema the components.
    return jsonschema.Draft202012Validator(
        {**schema, "components": document()["components"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def response_validator(method: str, path: str, status: int) -> jsonschema.Draft202012Validator:
    response = document()["paths"][path][method]["responses"][str(status)]
    return validator(response["content"]["application/json"]["schema"])


def webhook_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document()["webhooks"][name]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    return schema


def check_webhook(body: str) -> dict[str, Any]:
    """A body the merchant received, validated against the document's webhook of its type."""
    event: dict[str, Any] = json.loads(body)
    errors = [
        f"{e.json_path}: {e.message}" for e in validator(webhook_schema(event["event"])).iter_errors(event)
    ]
    assert not errors, f"{event['event']} does not match the document: {errors}"
    return event


def test_every_event_type_is_a_webhook_with_its_body_model() -> None:
    """The catalogue is the registry: each type's summary, and its body model's keys in order."""
    doc = document()
    assert list(doc["webhooks"]) == [event_type.name for event_type in TYPES]
    operation_ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    for event_type in TYPES:
        operation = doc["webhooks"][event_type.name]["post"]
        assert operation["summary"] == event_type.summary
        operation_ids.append(operation["operationId"])
        headers = {param["name"] for param in operation["parameters"] if param["in"] == "header"}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        assert "2XX" in operation["responses"]
        model, named = webhook_schema(event_type.name)["allOf"]
        assert model == {"$ref": f"#/components/schemas/{event_type.body.__name__}"}
        assert named == {"properties": {"event": {"const": event_type.name}}}
        body = doc["components"]["schemas"][event_type.body.__name__]
        assert list(body["properties"]) == list(event_type.body.model_fields)
        assert body["required"] == list(event_type.body.model_fields)
        assert body["additionalProperties"] is False
        if event_type.name == "webhook.test":  # nothing was paid: when it was sent
            assert body["properties"]["sent_at"] == {
                "title": "Sent At",
                "type": "string",
                "format": "date-time",
            }
            continue
        assert body["properties"]["paid_at"] in (
            {"title": "Paid At", "type": "string", "format": "date-time"},
            {"title": "Paid At", "anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
            {"title": "Paid At", "type": "null"},
        )
    assert len(operation_ids) == len(set(operation_ids)), "operationIds are unique"
    # The item.purchased body keeps exactly the seed's keys.
    assert doc["components"]["schemas"]["ItemPurchasedEvent"]["required"] == [
        *("event", "order_id", "item_id", "item_name", "buyer_email", "buyer_name"),
        *("amount", "currency", "paid_at", "metadata"),
    ]
    # A body of the wrong type, or with a key missing, does not pass.
    paid = {
        "event": "payment.paid",
        "order_id": "INV-1",
        "amount": 1000,
        "currency": "IDR",
        "buyer_email": "b@example.com",
        "buyer_name": None,
        "description": None,
        "paid_at": "2026-05-06T10:00:00Z",
        "metadata": {},
    }
    assert validator(webhook_schema("payment.paid")).is_valid(paid)
    assert not validator(webhook_schema("payment.refunded")).is_valid(paid)
    assert not validator(webhook_schema("payment.paid")).is_valid(paid | {"event": "item.purchased"})
    assert not validator(webhook_schema("payment.paid")).is_valid(
        {k: v for k, v in paid.items() if k != "paid_at"}
    )


def test_the_new_routes_are_documented_with_their_schemas() -> None:
    doc = document()
    paths, schemas = doc["paths"], doc["components"]["schemas"]

    def body_ref(path: str, method: str) -> str:
        ref: str = paths[path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        return ref.rsplit("/", 1)[1]

    def answer(path: str, method: str) -> dict[str, Any]:
        found: dict[str, Any] = paths[path][method]["responses"]["200"]["content"]["application/json"][
            "schema"
        ]
        return found

    payments = "/api/platform/projects/{project_id}/payments"
    subscription = "/api/platform/projects/{project_id}/subscriptions/{subscription_id}"
    assert body_ref(payments, "post") == "PaymentIn"
    assert body_ref("/api/platform/plans", "put") == "PlanIn"
    assert body_ref("/api/platform/public-plans/subscribe", "post") == "SubscribeIn"
    assert answer(payments, "post")["required"] == ["order_id", "invoice_url", "amount", "currency"]
    assert answer("/api/platform/public-plans/subscribe", "post")["required"] == [
        *("subscription_id", "order_id", "invoice_url", "amount", "currency")
    ]
    assert answer(f"{payments}/{{order_id}}", "get")["properties"]["payment"] == {
        "$ref": "#/components/schemas/Payment"
    }
    assert answer(subscription, "get")["properties"]["subscription"] == {
        "$ref": "#/components/schemas/Subscription"
    }
    assert answer(f"{subscription}/cancel", "post") == answer(subscription, "get")
    plans = answer("/api/platform/projects/{project_id}/plans", "get")["properties"]["plans"]
    assert plans == {"type": "array", "items": {"$ref": "#/components/schemas/Plan"}}
    for path, method in [(payments, "post"), ("/api/platform/public-plans/subscribe", "post")]:
        headers = [param["name"] for param in paths[path][method]["parameters"] if param["in"] == "header"]
        assert headers == ["Idempotency-Key"], path
        assert "Idempotent-Replayed" in paths[path][method]["responses"]["200"]["headers"]
    assert paths["/api/platform/public-plans/subscribe"]["post"]["security"] == []
    # The generated inputs state the email rule, and the outputs never show internals.
    for name in ("PaymentIn", "SubscribeIn"):
        assert "pattern" in schemas[name]["properties"]["buyer_email"], name
    assert "version" not in schemas["Subscription"]["properties"]
    assert {"status", "current_period_start", "current_period_end", "cancel_at_period_end"} <= set(
        schemas["Subscription"]["required"]
    )
    assert schemas["SubscriptionStatus"]["enum"] == ["pending", "active", "past_due", "expired", "canceled"]
    assert "merchant_order_id" not in schemas["Purchase"]["properties"]
    assert "item_id" not in schemas["Purchase"]["required"]  # only an item's order has one
    assert {"kind", "event_type", "gateway_order_id"} <= set(schemas["Purchase"]["properties"])
    assert {"gateway_order_id", "order_id"} <= set(schemas["Payment"]["required"])
    assert schemas["Payment"]["properties"]["kind"] == {"const": "payment"}


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
    assert check_webhook(merchant.hits("/hook")[0].body)["order_id"] == order["order_id"]
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


async def test_real_payments_plans_and_subscriptions_match_the_document(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    """A shop payment paid and refunded, a plan, a subscription paid and canceled: the answers and
    the webhooks the merchant receives, against the document."""
    running = await start_relay()
    api = running.api
    project = await api.project(webhook_url=f"{merchant.url}/hook")
    pid = project["id"]
    payments = "/api/platform/projects/{project_id}/payments"
    payment_route = payments + "/{order_id}"
    request = {"order_id": "INV-1001", "amount": 75000, "buyer_email": "b@example.com", "description": "Cart"}
    created = await call_and_check(
        api, "post", payments, f"/api/platform/projects/{pid}/payments", json=request
    )
    await call_and_check(
        api,
        "post",
        payments,
        f"/api/platform/projects/{pid}/payments",
        json=request | {"amount": 1},
        expect=409,
    )
    await call_and_check(api, "get", payment_route, f"/api/platform/projects/{pid}/payments/nope", expect=404)
    payment = (
        await call_and_check(api, "get", payment_route, f"/api/platform/projects/{pid}/payments/INV-1001")
    )["payment"]
    await api.pay({"order_id": payment["gateway_order_id"], "amount": created["amount"]})
    refund = api.notification(
        payment["gateway_order_id"],
        75000,
        status="partial_refund",
        refunds=[{"refund_chargeback_id": 7, "refund_amount": "25000.00", "reason": "damaged"}],
    )
    await api.callback(refund)
    await wait_hits(merchant, 2, "/hook")

    plan = (
        await call_and_check(
            api,
            "put",
            "/api/platform/plans",
            "/api/platform/plans",
            json={"project_id": pid, "name": "Pro", "price": 99000, "interval": "month"},
        )
    )["plan"]
    plans = await call_and_check(
        api, "get", "/api/platform/projects/{project_id}/plans", f"/api/platform/projects/{pid}/plans"
    )
    assert [found["id"] for found in plans["plans"]] == [plan["id"]]
    started = await call_and_check(
        api,
        "post",
        "/api/platform/public-plans/subscribe",
        "/api/platform/public-plans/subscribe",
        auth=False,
        json={"client_id": project["client_id"], "plan_id": plan["id"], "buyer_email": "b@example.com"},
    )
    route = "/api/platform/projects/{project_id}/subscriptions/{subscription_id}"
    path = f"/api/platform/projects/{pid}/subscriptions/{started['subscription_id']}"
    assert (await call_and_check(api, "get", route, path))["subscription"]["status"] == "pending"
    await api.pay(started)
    await wait_hits(merchant, 3, "/hook")
    subscription = (await call_and_check(api, "get", route, path))["subscription"]
    assert subscription["status"] == "active"
    canceled = (await call_and_check(api, "post", route + "/cancel", path + "/cancel"))["subscription"]
    assert canceled["cancel_at_period_end"] is True
    await call_and_check(
        api, "get", route, f"/api/platform/projects/{pid}/subscriptions/sub_nope", expect=404
    )

    # Every kind in one list, and each order's own page.
    orders = await call_and_check(
        api,
        "get",
        "/api/platform/projects/{project_id}/item-purchases",
        f"/api/platform/projects/{pid}/item-purchases",
    )
    kinds = {order["kind"]: order for order in orders["purchases"]}
    assert set(kinds) == {"payment", "subscription"}
    assert kinds["payment"]["order_id"] == "INV-1001"
    assert kinds["subscription"]["subscription_id"] == started["subscription_id"]
    await call_and_check(
        api,
        "get",
        "/api/platform/projects/{project_id}/item-purchases/{purchase_id}",
        f"/api/platform/projects/{pid}/item-purchases/{started['order_id']}",
    )
    events = [check_webhook(hit.body) for hit in merchant.hits("/hook")]
    assert [event["event"] for event in events] == [
        "payment.paid",
        "payment.refunded",
        "subscription.activated",
    ]


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


def test_every_reference_names_a_schema_of_the_document() -> None:
    doc = document()
    found = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert found
    assert found <= set(doc["components"]["schemas"]), found - set(doc["components"]["schemas"])
