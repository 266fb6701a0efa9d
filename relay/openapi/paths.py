"""The routes of the OpenAPI document, written by hand (``tests/test_openapi.py`` checks them
against the app's router both ways)."""

from __future__ import annotations

from relay.idempotency import HEADER, KEY_PATTERN, REPLAYED
from relay.openapi.parts import (
    OTHER_GATEWAYS,
    Schema,
    error,
    json_body,
    link,
    obj,
    ok,
    operation,
    path_param,
    query_param,
    ref,
)

PROJECT_ID = path_param("project_id", "The project's id.")
ITEM_ID = path_param("item_id", "The item's id.")
PURCHASE_ID = path_param(
    "purchase_id", "The order's id at the gateway (a shop payment's `gateway_order_id`)."
)
NON_EMPTY = {"type": "string", "minLength": 1}
LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}


def idempotency_key(scope: str) -> Schema:
    """The Idempotency-Key header of a creating POST, its keys scoped to ``scope`` and the route."""
    return {
        "name": HEADER,
        "in": "header",
        "required": False,
        "description": f"Per {scope} and route: the same key and body within 24 h answers the first "
        "response again; the same key with another body, or while the first is in flight, is a 409. "
        "Without it every request creates an order.",
        "schema": {"type": "string", "pattern": KEY_PATTERN},
    }


REPLAYED_HEADER = {
    REPLAYED: {
        "description": "`true` when this is the stored answer to an earlier request with the same "
        "Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
IDEMPOTENCY_CONFLICT = (
    "`Conflict`: the Idempotency-Key was used with another body or its first request is still in flight"
)


def invoice_answer(**more: Schema) -> Schema:
    """The answer of a route that starts an order: what to pay, and where."""
    return ok(
        obj(
            **more,
            order_id={"type": "string"},
            invoice_url={"type": ["string", "null"]},
            amount={"type": "integer"},
            currency={"type": "string"},
        )
    ) | {"headers": REPLAYED_HEADER}


CALLBACK_OK = "The outcome is durably stored (also for duplicates, non-final statuses and unknown orders)."


def callback_responses(ok_schema: Schema, *, not_found: str | None = None) -> dict[int, Schema]:
    responses = {
        200: ok(ok_schema, CALLBACK_OK),
        400: error(400, "`InvalidInput`: not JSON, a required field missing, or an unknown status."),
        401: error(401, "`VerificationError`: the signature, token or timestamp does not verify."),
        409: error(409, "`AmountMismatch`, or `Conflict` when the purchase uses another gateway."),
        413: error(413),
        503: error(503, "`StoreUnavailable` or `GatewayUnavailable`: the gateway should retry."),
    }
    if not_found:
        responses[404] = error(404, not_found)
    return responses


def callback_paths() -> dict[str, Schema]:
    status_ok = obj(status={"const": "ok"})
    gateway_ok = {"oneOf": [status_ok, obj(success={"const": True})]}
    return {
        "/callbacks/midtrans": {
            "post": operation(
                "midtransCallback",
                "Midtrans payment notification",
                tag="callbacks",
                description="No auth header: the signature_key is the authentication. Never 200 "
                "before the write is acknowledged by Redis.",
                body=json_body(ref("MidtransNotification")),
                responses=callback_responses(status_ok),
            )
        },
        "/callbacks/{gateway}": {
            "post": operation(
                "gatewayCallback",
                "Another gateway's payment notification",
                tag="callbacks",
                description="Xendit (`x-callback-token` header), Tripay (`X-Callback-Signature`, "
                'HMAC-SHA256 of the raw body; answers `{"success": true}`), DOKU (`Client-Id`, '
                "`Request-Id`, `Request-Timestamp`, `Digest`, `Signature` headers) and Duitku "
                "(form-encoded, `signature` field). See the README, section Gateways.",
                parameters=[
                    path_param("gateway", "The gateway.", {"type": "string", "enum": list(OTHER_GATEWAYS)})
                ],
                body={
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                    },
                },
                responses=callback_responses(
                    gateway_ok, not_found="`NotFound`: the gateway is not configured."
                ),
            )
        },
        "/callbacks/custom/{source}": {
            "post": operation(
                "customCallback",
                "A generic HMAC source's callback (RELAY_CUSTOM_SOURCES)",
                tag="callbacks",
                parameters=[
                    path_param(
                        "source",
                        "The source's name.",
                        {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,31}$"},
                    )
                ],
                body=json_body({"type": "object"}),
                responses=callback_responses(status_ok, not_found="`NotFound`: no such source."),
            )
        },
    }


def builder_paths() -> dict[str, Schema]:
    project = ok(obj(project=ref("Project")))
    item_links = {
        "GetItem": link("getItem", item_id="$response.body#/item/id"),
        "DeleteItem": link("deleteItem", item_id="$response.body#/item/id"),
    }
    purchase = ok(obj(purchase=ref("Purchase")))
    project_id = "$response.body#/project/id"
    project_links = {
        "GetProject": link("getProject", project_id=project_id),
        "RotateWebhookSecret": link("rotateWebhookSecret", project_id=project_id),
        "ListItems": link("listItems", project_id=project_id),
        "ListPurchases": link("listPurchases", project_id=project_id),
        "ListPlans": link("listPlans", project_id=project_id),
        "ListPublicItems": link("listPublicItems", client_id="$response.body#/project/client_id"),
    }
    return {
        "/api/platform/projects": {
            "get": operation(
                "listProjects",
                "Every project, oldest first, a page at a time (to a project key: its own)",
                tag="builder",
                admin=True,
                parameters=[
                    query_param("limit", "At most this many.", LIMIT),
                    query_param("cursor", "`next_cursor` of the previous page.", {"type": "string"}),
                ],
                responses={200: cursor_page("projects", "Project")},
            ),
            "put": operation(
                "putProject",
                "Create a project, or update the fields given when `id` names an existing one",
                tag="builder",
                admin=True,
                body=json_body(ref("ProjectIn")),
                responses={
                    200: ok(
                        obj(project={"anyOf": [ref("ProjectWithSecret"), ref("Project")]}),
                        "The project; `webhook_secret` only when it was created.",
                        links=project_links,
                    )
                },
            ),
        },
        "/api/platform/projects/{project_id}": {
            "get": operation(
                "getProject",
                "A project (without its secret)",
                tag="builder",
                admin=True,
                parameters=[PROJECT_ID],
                responses={200: project, 404: error(404)},
            )
        },
        "/api/platform/projects/{project_id}/webhook-secret/rotate": {
            "post": operation(
                "rotateWebhookSecret",
                "A new webhook secret; the old one keeps signing for 24 h",
                tag="builder",
                admin=True,
                parameters=[PROJECT_ID],
                responses={
                    200: ok(
                        obj(
                            project=ref("ProjectWithSecret"),
                            previous_secret_expires_at={"type": "string", "format": "date-time"},
                        )
                    ),
                    404: error(404),
                },
            )
        },
        "/api/platform/projects/{project_id}/endpoints": {
            "get": operation(
                "listEndpoints",
                "The health of each endpoint the project's events went to",
                tag="builder",
                admin=True,
                parameters=[PROJECT_ID],
                responses={
                    200: ok(obj(endpoints={"type": "array", "items": ref("EndpointHealth")})),
                    404: error(404),
                },
            )
        },
        "/api/platform/projects/{project_id}/endpoints/enable": {
            "post": operation(
                "enableEndpoint",
                "Enable an endpoint disabled after failing too long; then replay its dead letters",
                tag="builder",
                admin=True,
                parameters=[PROJECT_ID],
                body=json_body(ref("EndpointIn")),
                responses={
                    200: ok(obj(endpoint=ref("EndpointHealth"))),
                    400: error(400),
                    404: error(404, "`NotFound`: no such project, or no event of it went to this URL."),
                },
            )
        },
        "/api/platform/items": {
            "put": operation(
                "putItem",
                "Create an item, or update the fields given when `id` names an existing one",
                tag="builder",
                admin=True,
                body=json_body(ref("ItemIn")),
                responses={
                    200: ok(obj(item=ref("Item")), links=item_links),
                    404: error(404, "`NotFound`: no such project."),
                    409: error(409, "`Conflict`: the item belongs to another project."),
                },
            ),
            "get": operation(
                "listItems",
                "A project's items, oldest first, a page at a time",
                tag="builder",
                admin=True,
                description="`stock` is the units left now (reserved ones are not left); null: unlimited.",
                parameters=[
                    query_param("project_id", "The project's id.", NON_EMPTY, required=True),
                    query_param(
                        "page", "Pages count from 1.", {"type": "integer", "minimum": 1, "default": 1}
                    ),
                    query_param(
                        "per_page",
                        "Items a page.",
                        {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
                    ),
                    query_param("search", "In the name or sku, any case.", {"type": "string"}),
                    query_param("category_id", "Only this category's.", {"type": "string"}),
                    query_param("status", "Only items in this status.", ref("ItemStatus")),
                ],
                responses={
                    200: ok(
                        obj(
                            items={"type": "array", "items": ref("Item")},
                            page={"type": "integer"},
                            per_page={"type": "integer"},
                            total={"type": "integer", "description": "Items that match, on every page."},
                        )
                    ),
                    400: error(400, "`InvalidInput`: project_id is missing, or a bad page or status."),
                    404: error(404),
                },
            ),
        },
        "/api/platform/categories": {
            "put": operation(
                "putCategory",
                "Create a category, or update the fields given when `id` names an existing one",
                tag="builder",
                admin=True,
                description="`parent_id` nests it in another category of the same project (no cycle, 10 "
                "levels at most).",
                body=json_body(ref("CategoryIn")),
                responses={
                    200: ok(obj(category=ref("Category"))),
                    404: error(404, "`NotFound`: no such project, or no such parent category in it."),
                    409: error(
                        409, "`Conflict`: another project's category, or a parent inside the category."
                    ),
                },
            ),
            "get": operation(
                "listCategories",
                "A project's categories, by sort_order then name",
                tag="builder",
                admin=True,
                parameters=[query_param("project_id", "The project's id.", NON_EMPTY, required=True)],
                responses={
                    200: ok(obj(categories={"type": "array", "items": ref("Category")})),
                    400: error(400, "`InvalidInput`: project_id is missing."),
                    404: error(404),
                },
            ),
        },
        "/api/platform/items/{item_id}": {
            "get": operation(
                "getItem",
                "An item",
                tag="builder",
                admin=True,
                parameters=[ITEM_ID],
                responses={200: ok(obj(item=ref("Item"))), 404: error(404)},
            ),
            "delete": operation(
                "deleteItem",
                "Delete an item",
                tag="builder",
                admin=True,
                parameters=[ITEM_ID],
                responses={
                    200: ok(obj(deleted={"const": True}, item=ref("Item"))),
                    404: error(404),
                },
            ),
        },
        "/api/platform/projects/{project_id}/item-purchases": {
            "get": operation(
                "listPurchases",
                "A project's orders of every kind (items, shop payments, subscription periods), newest "
                "first, each with its delivery attempts",
                tag="builder",
                admin=True,
                parameters=[
                    PROJECT_ID,
                    query_param("webhook_status", "Only this webhook state.", ref("WebhookStatus")),
                    query_param("limit", "At most this many.", LIMIT),
                ],
                responses={
                    200: ok(
                        obj(purchases={"type": "array", "items": ref("Purchase")}),
                    ),
                    400: error(400),
                    404: error(404),
                },
            )
        },
        "/api/platform/projects/{project_id}/item-purchases/{purchase_id}": {
            "get": operation(
                "getPurchase",
                "An order of any kind with its delivery attempts",
                tag="builder",
                admin=True,
                parameters=[PROJECT_ID, PURCHASE_ID],
                responses={200: purchase, 404: error(404)},
            )
        },
        "/api/platform/projects/{project_id}/item-purchases/{purchase_id}/retry-webhook": {
            "post": operation(
                "retryWebhook",
                "Send a paid order's webhook again, same webhook-id, fresh retry budget",
                tag="builder",
                admin=True,
                parameters=[PROJECT_ID, PURCHASE_ID],
                responses={
                    200: purchase,
                    404: error(404),
                    409: error(409, "`Conflict`: the purchase is not paid, so it has no webhook."),
                },
            )
        },
    }


def public_paths() -> dict[str, Schema]:
    return {
        "/api/platform/public-items": {
            "get": operation(
                "listPublicItems",
                "A project's catalogue, keyed by its client_id",
                tag="public",
                parameters=[query_param("client_id", "The project's client_id.", NON_EMPTY, required=True)],
                responses={
                    200: ok(obj(items={"type": "array", "items": ref("PublicItem")})),
                    400: error(400, "`InvalidInput`: client_id is missing."),
                    404: error(404, "`NotFound`: no such client_id."),
                },
            )
        },
        "/api/platform/public-items/{item_id}": {
            "get": operation(
                "getPublicItem",
                "One published item, as a checkout form needs it",
                tag="public",
                parameters=[
                    ITEM_ID,
                    query_param("client_id", "The project's client_id.", NON_EMPTY, required=True),
                ],
                responses={
                    200: ok(obj(item=ref("PublicItem"))),
                    400: error(400, "`InvalidInput`: client_id is missing."),
                    404: error(404, "`NotFound`: no such client_id, or no such published item of it."),
                },
            )
        },
        "/api/platform/public-items/purchase": {
            "post": operation(
                "startPurchase",
                "Start a purchase; `amount` overrides the item price within its bounds",
                tag="public",
                description="`amount` (what the buyer pays, and what the webhook reports) is "
                "`price x quantity` unless given; it must lie within the item's `amount_min` (by default "
                "its price; times `quantity`) and `amount_max`, on its `amount_step`, else 400. `fields` "
                "are the item's `required_fields` (a missing or malformed one is a 400 naming "
                "`fields.<key>`). An item with `stock` reserves `quantity` units here: 409 `SoldOut` "
                "when fewer are left.",
                body=json_body(ref("PurchaseIn")),
                parameters=[idempotency_key("client_id")],
                responses={
                    200: invoice_answer(),
                    400: error(
                        400, "`InvalidInput`: a body that does not validate, or a malformed Idempotency-Key."
                    ),
                    404: error(404, "`NotFound`: no such client_id or item."),
                    409: error(
                        409,
                        f"`SoldOut`: fewer units left than asked; {IDEMPOTENCY_CONFLICT}; "
                        "or no free order id (retry).",
                    ),
                    429: error(429),
                    502: error(502),
                },
            )
        },
        "/api/platform/public-plans/subscribe": {
            "post": operation(
                "subscribe",
                "Subscribe to a plan: a pending subscription and the invoice of its first period",
                tag="public",
                description="The subscription is `pending` until its first invoice is paid, then "
                "`active` (`subscription.activated`); its period starts when that invoice is paid.",
                body=json_body(ref("SubscribeIn")),
                parameters=[idempotency_key("client_id")],
                responses={
                    200: invoice_answer(subscription_id={"type": "string", "pattern": "^sub_"}),
                    400: error(
                        400,
                        "`InvalidInput`: a body that does not validate, a gateway that is not configured, "
                        "or a malformed Idempotency-Key.",
                    ),
                    404: error(404, "`NotFound`: no such client_id or plan."),
                    409: error(409, f"{IDEMPOTENCY_CONFLICT}; or no free order id was found (retry)."),
                    429: error(429),
                    502: error(502),
                },
            )
        },
    }


def page_params() -> list[Schema]:
    """The query of a listing paged by cursor (relay.ranges.cursor_page)."""
    return [
        query_param("since", "Only from this time on (ISO 8601).", {"type": "string"}),
        query_param("limit", "At most this many.", LIMIT),
        query_param("cursor", "`next_cursor` of the previous page.", {"type": "string"}),
    ]


def cursor_page(name: str, item: str) -> Schema:
    """A page of such a listing: its rows under ``name``, and the next page's cursor."""
    rows: Schema = {"type": "array", "items": ref(item)}
    return ok(obj(**{name: rows, "next_cursor": {"type": ["string", "null"]}}))


def admin_paths() -> dict[str, Schema]:
    return {
        "/api/admin/dead-letters": {
            "get": operation(
                "listDeadLetters",
                "Dead letters, oldest first, a page at a time",
                tag="admin",
                admin=True,
                parameters=[
                    query_param("project_id", "Only this project's.", {"type": "string"}),
                    *page_params(),
                ],
                responses={200: cursor_page("dead_letters", "DeadLetter"), 400: error(400)},
            )
        },
        "/api/admin/dead-letters/replay": {
            "post": operation(
                "replayDeadLetters",
                "Send dead letters again (same webhook-id, fresh retry budget)",
                tag="admin",
                admin=True,
                body=json_body(ref("ReplayIn"), 'Either {"event_ids": [...]} or {"all": true} with filters.'),
                responses={
                    200: ok(obj(replayed={"type": "integer", "minimum": 0})),
                    404: error(404, "`NotFound`: an event id does not exist."),
                },
            )
        },
        "/api/admin/events/replay": {
            "post": operation(
                "replayEvents",
                "Send again every event of a project created in a window, delivered ones too "
                "(same webhook-id, fresh retry budget)",
                tag="admin",
                admin=True,
                body=json_body(ref("WindowReplayIn"), "The project, the window, and optionally a state."),
                responses={
                    200: ok(obj(replayed={"type": "integer", "minimum": 0})),
                    400: error(400, "`InvalidInput`: a bad time, or more than 10,000 events in the window."),
                    404: error(404, "`NotFound`: no such project."),
                },
            )
        },
        "/api/admin/unmatched-callbacks": {
            "get": operation(
                "listUnmatchedCallbacks",
                "Correctly signed callbacks for unknown orders, newest first (the newest 1000 are kept)",
                tag="admin",
                admin=True,
                parameters=[query_param("limit", "At most this many.", LIMIT)],
                responses={
                    200: ok(obj(callbacks={"type": "array", "items": ref("UnmatchedCallback")})),
                    400: error(400),
                },
            )
        },
        "/api/admin/audit": {
            "get": operation(
                "listAudit",
                "Every change made through the admin token, a project's API key or the console, oldest "
                "first (kept RELAY_RETENTION)",
                tag="admin",
                admin=True,
                parameters=page_params(),
                responses={200: cursor_page("entries", "AuditEntry"), 400: error(400)},
            )
        },
        "/api/admin/dead-letters/{event_id}": {
            "delete": operation(
                "deleteDeadLetter",
                "Purge one dead letter",
                tag="admin",
                admin=True,
                parameters=[path_param("event_id", "The event's id (the webhook-id).")],
                responses={200: ok(obj(deleted={"type": "string"})), 404: error(404)},
            )
        },
    }


def service_paths() -> dict[str, Schema]:
    return {
        "/healthz": {
            "get": operation(
                "healthz",
                "Liveness: the process answers (never depends on Redis)",
                tag="service",
                store=False,
                responses={200: ok(obj(status={"const": "ok"}))},
            )
        },
        "/readyz": {
            "get": operation(
                "readyz",
                "Readiness: Redis answers",
                tag="service",
                responses={
                    200: ok(obj(status={"const": "ready"}, embedded={"type": "boolean"})),
                },
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics (text format, admin token: they show sales volume); gauges keep "
                "their last values while Redis is away",
                tag="service",
                admin=True,
                store=False,
                responses={
                    200: {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
                },
            )
        },
        "/openapi.json": {
            "get": operation(
                "openapi",
                "This document",
                tag="service",
                store=False,
                responses={200: ok({"type": "object"})},
            )
        },
    }
