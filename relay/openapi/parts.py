"""Building blocks of the OpenAPI document: component schemas generated from the pydantic
models, error and operation helpers."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from relay.api.admin import ReplayIn, WindowReplayIn
from relay.api.builder import ApiKeyIn, EndpointIn, PortalLinkIn
from relay.api_keys import ApiKey
from relay.audit import AuditEntry
from relay.endpoints import EndpointHealth
from relay.gateways.registry import BUILT_IN
from relay.models import (
    EMAIL_RE,
    PUBLIC_ITEM_FIELDS,
    Attempt,
    Category,
    CategoryIn,
    DeadLetter,
    Item,
    ItemIn,
    OrderKind,
    PaymentIn,
    Plan,
    PlanIn,
    Project,
    ProjectIn,
    Purchase,
    PurchaseIn,
    SubscribeIn,
    Subscription,
)

Schema = dict[str, Any]

REF = "#/components/schemas/{model}"
SECRET_FIELDS = ("webhook_secret", "previous_secrets")
# The gateways served by ``POST /callbacks/{gateway}`` besides Midtrans, which has its own entry.
OTHER_GATEWAYS = tuple(name for name in BUILT_IN if name != "midtrans")


def ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


def output(schema: Schema, *, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> Schema:
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


def _view_fields(kind: OrderKind) -> list[str]:
    """The fields ``Purchase.view()`` always shows for an order of ``kind``: those of an order with
    every optional field unset (the others appear only when set)."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    order = Purchase(
        order_id="o",
        kind=kind,
        project_id="p",
        merchant_order_id="m" if kind is OrderKind.PAYMENT else None,
        amount=1,
        currency="IDR",
        buyer_email="buyer@example.com",
        created_at=moment,
        updated_at=moment,
    )
    return list(order.view())


def _purchase_schemas(generated: Schema) -> dict[str, Schema]:
    """``Purchase`` (an order of any kind, as ``Purchase.view()`` shows it with its attempts) and
    ``Payment`` (a shop payment's view)."""
    found = copy.deepcopy(generated)
    properties = found["properties"]
    for prop in properties.values():
        prop.pop("default", None)
    properties.pop("merchant_order_id")
    properties["order_id"]["description"] = (
        "The order's id: the gateway's, except a shop payment's, which is the merchant's own."
    )
    properties["gateway_order_id"] = {
        "type": "string",
        "description": "A shop payment's order id at the gateway (`pay-...`).",
    }
    properties["attempts"] = {"type": "array", "items": ref("Attempt")}
    shown = {kind: _view_fields(kind) for kind in OrderKind}
    common = [name for name in properties if all(name in fields for fields in shown.values())]
    found["required"] = [*common, "attempts"]
    found["additionalProperties"] = False
    found["description"] = (
        "An order of any kind: a catalogue item (`item_id`), a shop payment (`description`, "
        "`gateway_order_id`; `order_id` is the merchant's) or a subscription's period "
        "(`subscription_id`, `plan_id`, `user_id`, `interval`, `period_start`, `period_end`; the "
        "plan's name in `item_name`). Fields of other kinds, and unset optional ones, are left out."
    )
    payment = copy.deepcopy(found) | {"title": "Payment", "description": "A shop payment."}
    payment["properties"].pop("item_id")
    payment["properties"]["kind"] = {"const": OrderKind.PAYMENT.value}
    payment["required"] = [name for name in payment["properties"] if name in shown[OrderKind.PAYMENT]]
    payment["required"].append("attempts")
    return {"Purchase": found, "Payment": payment}


def component_schemas() -> dict[str, Schema]:
    models: list[type[BaseModel]] = [ProjectIn, ItemIn, PurchaseIn, ReplayIn, Project, Item, Purchase]
    models += [Attempt, DeadLetter, WindowReplayIn, EndpointIn, EndpointHealth]
    models += [PaymentIn, PlanIn, SubscribeIn, Plan, Subscription, ApiKeyIn, ApiKey, PortalLinkIn, AuditEntry]
    models += [Category, CategoryIn]
    modes: list[tuple[type[BaseModel], Literal["validation"]]] = [(model, "validation") for model in models]
    _, defs = models_json_schema(modes, ref_template=REF)
    generated: dict[str, Schema] = defs["$defs"]
    inputs = ["ProjectIn", "ItemIn", "PurchaseIn", "ReplayIn", "WindowReplayIn", "EndpointIn"]
    inputs += ["PaymentIn", "PlanIn", "SubscribeIn", "ApiKeyIn", "PortalLinkIn", "CategoryIn"]
    schemas = {name: generated[name] for name in inputs}
    # An AfterValidator leaves no trace in the generated schema: state the rule it checks.
    for name in ("PurchaseIn", "PaymentIn", "SubscribeIn"):
        schemas[name]["properties"]["buyer_email"]["pattern"] = EMAIL_RE.pattern
    enums = (
        "PurchaseStatus",
        "WebhookStatus",
        "EventKind",
        "DeadReason",
        "OrderKind",
        "Interval",
        "ErrorClass",
        "ItemStatus",
    )
    schemas |= {name: generated[name] for name in (*enums, "SubscriptionStatus")}
    project = output(generated["Project"], exclude=SECRET_FIELDS)
    secret = {"type": "string", "pattern": "^whsec_", "description": "Shown on create and rotate only."}
    schemas["Project"] = project
    schemas["ProjectWithSecret"] = _with(project, "ProjectWithSecret", webhook_secret=secret)
    schemas["Item"] = output(generated["Item"])
    schemas["RequiredField"] = generated["RequiredField"]
    schemas["Category"] = output(generated["Category"])
    public = output(generated["Item"], include=PUBLIC_ITEM_FIELDS) | {"title": "PublicItem"}
    public["properties"] |= {
        "stock": {"type": ["integer", "null"], "description": "Units left now; null: unlimited."},
        "available": {"type": "boolean", "description": "Published, and a unit left."},
    }
    public["required"] = [*public.get("required", []), "stock", "available"]
    schemas["PublicItem"] = public
    schemas["Attempt"] = output(generated["Attempt"])
    schemas |= _purchase_schemas(generated["Purchase"])
    schemas["DeadLetter"] = output(generated["DeadLetter"])
    schemas["EndpointState"] = generated["EndpointState"]
    schemas["EndpointHealth"] = output(generated["EndpointHealth"])
    schemas["Plan"] = output(generated["Plan"])
    schemas["Subscription"] = output(generated["Subscription"], exclude=("version",))
    api_key = output(generated["ApiKey"], exclude=("project_id",))
    schemas["ApiKey"] = api_key
    schemas["AuditEntry"] = output(generated["AuditEntry"])
    material = {"type": "string", "pattern": "^rk_", "description": "Shown once, here; stored hashed."}
    schemas["ApiKeyWithKey"] = _with(api_key, "ApiKeyWithKey", key=material)
    text = {"type": ["string", "null"], "maxLength": 128}
    schemas["UnmatchedCallback"] = {
        "type": "object",
        "description": "A correctly signed callback for an order the relay does not know (never made "
        "here, or deleted by retention): a summary, each text cut to 128 characters.",
        "required": ["gateway", "order_id", "status", "amount", "received_at"],
        "properties": {
            "gateway": {"type": "string"},
            "order_id": text,
            "status": text,
            "amount": {"type": "string"},
            "reference": text,
            "received_at": {"type": "string", "format": "date-time"},
        },
    }
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
    403: ("Forbidden", "A project API key on a route that needs the admin token."),
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


ADMIN_ONLY: list[Schema] = [{"adminToken": []}]
KEY_OR_ADMIN: list[Schema] = [{"adminToken": []}, {"projectKey": []}]


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
    keys: bool | None = None,
) -> Schema:
    """One operation. Every route that reads or writes Redis can answer 503 (``store``), every
    route taking a body 400, 408 and 413, every admin route 401, and 429 to an address that failed
    too often (it reads the failure count from Redis, so 503 too)."""
    codes = dict(responses)
    # A builder route takes a project's API key too (on its own project only); any other needs the
    # admin token, and a key there is a 403.
    keys = tag == "builder" if keys is None else keys
    if admin and not keys:
        codes.setdefault(403, error(403))
    if store or admin:
        codes.setdefault(503, error(503))
    if admin:
        codes.setdefault(401, error(401, "`Unauthorized`: missing or wrong bearer token."))
        codes.setdefault(
            429, error(429, "`TooManyRequests`: this address failed too often; see `Retry-After`.")
        )
    if body is not None:
        codes.setdefault(400, error(400))
        codes.setdefault(408, error(408))
        codes.setdefault(413, error(413))
    found: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "security": ([{"adminToken": []}, {"projectKey": []}] if keys else [{"adminToken": []}])
        if admin
        else [],
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
