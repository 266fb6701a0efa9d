"""The OpenAPI 3.1 description of the HTTP interface, served at ``GET /openapi.json``.

Bodies are generated from the pydantic models the handlers validate and serialise with
(``model_json_schema``), so a changed model changes the document. The routes, parameters and status
codes are written here by hand; ``tests/test_openapi.py`` checks them against the app's router in
both directions and fuzzes a live relay with schemathesis against this document.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from relay import __version__
from relay.api.admin import ReplayIn
from relay.jsonutil import dumps
from relay.models import EMAIL_RE, Attempt, Item, ItemIn, Project, ProjectIn, Purchase, PurchaseIn

Schema = dict[str, Any]

REF = "#/components/schemas/{model}"
SECRET_FIELDS = ("webhook_secret", "previous_webhook_secret", "previous_secret_expires_at")
PUBLIC_ITEM_FIELDS = ("id", "name", "description", "price", "currency")
# The gateways served by ``POST /callbacks/{gateway}`` besides Midtrans, which has its own entry.
OTHER_GATEWAYS = ("xendit", "tripay", "doku", "duitku")


class DeadLetter(BaseModel):
    """One row of ``GET /api/admin/dead-letters`` (built in ``relay.deadletters``)."""

    model_config = ConfigDict(extra="forbid")

    event_id: str
    project_id: str
    order_id: str
    item_id: str
    attempts: int
    created_at: str
    dead_at: str | None
    last_attempt: Attempt | None


def ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


def _output(schema: Schema, *, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> Schema:
    """A model's schema as the API returns it: every field present (``model_dump`` writes defaults
    too), optionally narrowed to ``include`` or without ``exclude``."""
    found = copy.deepcopy(schema)
    properties = found["properties"]
    keep = [name for name in properties if (not include or name in include) and name not in exclude]
    found["properties"] = {name: properties[name] for name in keep}
    for prop in found["properties"].values():
        prop.pop("default", None)
    found["required"] = keep
    found["additionalProperties"] = False
    return found


def _with(schema: Schema, title: str, **properties: Schema) -> Schema:
    found = copy.deepcopy(schema)
    found["title"] = title
    found["properties"].update(properties)
    found["required"] = [*found["required"], *properties]
    return found


def component_schemas() -> dict[str, Schema]:
    models: list[type[BaseModel]] = [ProjectIn, ItemIn, PurchaseIn, ReplayIn, Project, Item, Purchase]
    models += [Attempt, DeadLetter]
    modes: list[tuple[type[BaseModel], Literal["validation"]]] = [(model, "validation") for model in models]
    _, defs = models_json_schema(modes, ref_template=REF)
    generated: dict[str, Schema] = defs["$defs"]
    schemas = {name: generated[name] for name in ("ProjectIn", "ItemIn", "PurchaseIn", "ReplayIn")}
    # An AfterValidator leaves no trace in the generated schema: state the rule it checks.
    schemas["PurchaseIn"]["properties"]["buyer_email"]["pattern"] = EMAIL_RE.pattern
    schemas |= {name: generated[name] for name in ("PurchaseStatus", "WebhookStatus")}
    project = _output(generated["Project"], exclude=SECRET_FIELDS)
    secret = {"type": "string", "pattern": "^whsec_", "description": "Shown on create and rotate only."}
    schemas["Project"] = project
    schemas["ProjectWithSecret"] = _with(project, "ProjectWithSecret", webhook_secret=secret)
    schemas["Item"] = _output(generated["Item"])
    schemas["PublicItem"] = _output(generated["Item"], include=PUBLIC_ITEM_FIELDS) | {"title": "PublicItem"}
    schemas["Attempt"] = _output(generated["Attempt"])
    attempts = {"type": "array", "items": ref("Attempt")}
    schemas["Purchase"] = _with(_output(generated["Purchase"]), "Purchase", attempts=attempts)
    schemas["DeadLetter"] = _output(generated["DeadLetter"])
    schemas["Error"] = {
        "type": "object",
        "description": "Every 4xx/5xx answer: the error's class name and a human sentence.",
        "required": ["error", "detail"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
    }
    schemas["MidtransNotification"] = {
        "type": "object",
        "description": "Midtrans HTTP notification. signature_key = SHA512(order_id + status_code + "
        "gross_amount + server_key), hex; it does not cover transaction_status.",
        "required": ["order_id", "status_code", "gross_amount", "signature_key", "transaction_status"],
        "properties": {
            name: {"type": "string", "minLength": 1, "maxLength": 256}
            for name in ("order_id", "status_code", "gross_amount", "signature_key", "transaction_status")
        }
        | {
            "fraud_status": {"type": "string"},
            "settlement_time": {"type": "string", "description": "YYYY-MM-DD HH:MM:SS, Asia/Jakarta"},
            "transaction_time": {"type": "string"},
            "transaction_id": {"type": "string"},
        },
    }
    return schemas


# --- responses ----------------------------------------------------------------------------------

ERRORS = {
    400: ("InvalidInput", "Malformed JSON, a wrong type or a failed validation."),
    401: ("Unauthorized", "Missing or wrong credentials."),
    404: ("NotFound", "No such resource."),
    408: ("RequestTimeout", "The body did not arrive within RELAY_BODY_TIMEOUT."),
    409: ("Conflict", "The request contradicts stored state."),
    413: ("PayloadTooLarge", "The body is larger than RELAY_MAX_BODY_BYTES."),
    429: ("TooManyRequests", "Over the per-client_id purchase rate limit."),
    502: ("UpstreamUnavailable", "The payment gateway's API failed."),
    503: ("StoreUnavailable", "Redis is unreachable: retry later."),
}


def error(status: int, description: str | None = None) -> Schema:
    name, default = ERRORS[status]
    found: Schema = {
        "description": description or f"`{name}`: {default}",
        "content": {"application/json": {"schema": ref("Error")}},
    }
    if status == 429:
        found["headers"] = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}
    return found


def ok(schema: Schema, description: str = "OK", *, links: dict[str, Schema] | None = None) -> Schema:
    found: Schema = {"description": description, "content": {"application/json": {"schema": schema}}}
    if links:
        found["links"] = links
    return found


def link(operation_id: str, **parameters: str) -> Schema:
    """An OpenAPI link: which operation the response's values feed (schemathesis follows them)."""
    return {"operationId": operation_id, "parameters": parameters}


def obj(**properties: Schema) -> Schema:
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }


def path_param(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string", "minLength": 1},
    }


def query_param(name: str, description: str, schema: Schema, *, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def json_body(schema: Schema, description: str | None = None) -> Schema:
    found: Schema = {"required": True, "content": {"application/json": {"schema": schema}}}
    if description:
        found["description"] = description
    return found


def operation(
    operation_id: str,
    summary: str,
    *,
    tag: str,
    responses: dict[int, Schema],
    admin: bool = False,
    body: Schema | None = None,
    parameters: list[Schema] | None = None,
    description: str | None = None,
    store: bool = True,
) -> Schema:
    """One operation. Every route that reads or writes Redis can answer 503 (``store``), every
    route taking a body 400, 408 and 413, every admin route 401."""
    codes = dict(responses)
    if store:
        codes.setdefault(503, error(503))
    if admin:
        codes.setdefault(401, error(401, "`Unauthorized`: missing or wrong bearer token."))
    if body is not None:
        codes.setdefault(400, error(400))
        codes.setdefault(408, error(408))
        codes.setdefault(413, error(413))
    found: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "security": [{"adminToken": []}] if admin else [],
        "responses": {str(code): codes[code] for code in sorted(codes)},
    }
    if description:
        found["description"] = description
    if parameters:
        found["parameters"] = parameters
    if body is not None:
        found["requestBody"] = body
    return found


# --- routes -------------------------------------------------------------------------------------

PROJECT_ID = path_param("project_id", "The project's id.")
ITEM_ID = path_param("item_id", "The item's id.")
PURCHASE_ID = path_param("purchase_id", "The purchase's order_id.")
NON_EMPTY = {"type": "string", "minLength": 1}
LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
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
        "ListPublicItems": link("listPublicItems", client_id="$response.body#/project/client_id"),
    }
    return {
        "/api/platform/projects": {
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
            )
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
                "A project's items",
                tag="builder",
                admin=True,
                parameters=[query_param("project_id", "The project's id.", NON_EMPTY, required=True)],
                responses={
                    200: ok(obj(items={"type": "array", "items": ref("Item")})),
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
                "A project's purchases, newest first, each with its delivery attempts",
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
                "A purchase with its delivery attempts",
                tag="builder",
                admin=True,
                parameters=[PROJECT_ID, PURCHASE_ID],
                responses={200: purchase, 404: error(404)},
            )
        },
        "/api/platform/projects/{project_id}/item-purchases/{purchase_id}/retry-webhook": {
            "post": operation(
                "retryWebhook",
                "Send a paid purchase's webhook again, same webhook-id, fresh retry budget",
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
        "/api/platform/public-items/purchase": {
            "post": operation(
                "startPurchase",
                "Start a purchase; `amount` overrides the item price",
                tag="public",
                body=json_body(ref("PurchaseIn")),
                responses={
                    200: ok(
                        obj(
                            order_id={"type": "string"},
                            invoice_url={"type": ["string", "null"]},
                            amount={"type": "integer"},
                            currency={"type": "string"},
                        )
                    ),
                    404: error(404, "`NotFound`: no such client_id or item."),
                    429: error(429),
                    502: error(502),
                },
            )
        },
    }


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
                    query_param("since", "Only from this time on (ISO 8601).", {"type": "string"}),
                    query_param("limit", "At most this many.", LIMIT),
                    query_param("cursor", "`next_cursor` of the previous page.", {"type": "string"}),
                ],
                responses={
                    200: ok(
                        obj(
                            dead_letters={"type": "array", "items": ref("DeadLetter")},
                            next_cursor={"type": ["string", "null"]},
                        ),
                    ),
                    400: error(400),
                },
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
                "Prometheus metrics (text format); gauges keep their last values while Redis is away",
                tag="service",
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


@cache
def document() -> dict[str, Any]:
    """The whole document, built once per process (it depends on the code only)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relay",
            "version": __version__,
            "summary": "Verified payment-gateway callbacks in, signed item.purchased webhooks out.",
            "description": 'Errors are `{"error": "<ClassName>", "detail": "<sentence>"}` with a 4xx/5xx '
            "status. Builder and admin routes take `Authorization: Bearer <RELAY_ADMIN_TOKEN>`.",
        },
        "tags": [
            {"name": "callbacks", "description": "Payment gateways; the signature is the authentication."},
            {"name": "builder", "description": "Projects, items and purchases (admin token)."},
            {"name": "public", "description": "Keyed by a project's client_id; no auth."},
            {"name": "admin", "description": "The dead-letter queue (admin token)."},
            {"name": "service", "description": "Health, readiness, metrics and this document."},
        ],
        "paths": callback_paths() | builder_paths() | public_paths() | admin_paths() | service_paths(),
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "RELAY_ADMIN_TOKEN (16+ characters).",
                }
            },
        },
    }


@cache
def document_bytes() -> bytes:
    return dumps(document()).encode()
