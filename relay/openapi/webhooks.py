"""The event catalogue: the document's ``webhooks``, one per type of ``relay.event_types.TYPES``.

Each is the signed POST a merchant's endpoint receives: the type's summary, its body's schema
(generated from the type's body model, every key always present, ``event`` the type's name) and the
Standard Webhooks headers. A type added to the registry appears here with nothing else to change.
"""

from __future__ import annotations

from typing import Literal

from pydantic.json_schema import models_json_schema

from relay.event_body import Body
from relay.event_types import TYPES, EventType, Webhook
from relay.openapi.parts import REF, Schema, output, ref

# Where an event goes, by whose webhook_url comes first (relay.event_types.Webhook).
GOES_TO = {
    Webhook.ITEM: "the item's `webhook_url`, else the project's",
    Webhook.PLAN: "the plan's `webhook_url`, else the project's",
    Webhook.PROJECT: "the project's `webhook_url`",
}
HEADERS = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "description": "The event's id: the same on every retry and replay, to deduplicate by.",
        "schema": {"type": "string", "pattern": "^evt_"},
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "description": "Unix seconds when this attempt was signed (every attempt is signed afresh).",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "description": "`v1,<base64 HMAC-SHA256 of {id}.{timestamp}.{body}>` with the project's `whsec_` "
        "secret; several, space-separated, while a rotated secret still signs. Verify with the "
        "`standardwebhooks` library.",
        "schema": {"type": "string", "pattern": "^v1,"},
    },
]
# Every body writes its times as ISO 8601 UTC with a Z, to the second.
TIMES = frozenset({"paid_at", "period_start", "period_end", "refunded_at", "sent_at"})
RESPONSES = {
    "2XX": {"description": "Received: the event is delivered, no more attempts."},
    "410": {"description": "Gone: the event is dead-lettered at once, with no more attempts."},
    "default": {
        "description": "Any other answer, or none within RELAY_DELIVERY_TIMEOUT: tried again on "
        "RELAY_RETRY_SCHEDULE (a `Retry-After` is honoured within it), then dead-lettered."
    },
}


def _bodies() -> list[type[Body]]:
    return list(dict.fromkeys(event_type.body for event_type in TYPES))


def _times(schema: Schema) -> Schema:
    """``schema`` with its times (ISO 8601 UTC strings with a ``Z``) given their format."""
    for name, prop in schema["properties"].items():
        if name in TIMES:
            for branch in prop.get("anyOf", [prop]):
                if branch.get("type") == "string":
                    branch["format"] = "date-time"
    return schema


def event_schemas() -> dict[str, Schema]:
    """The body models' schemas, as the relay writes them: every key, in the body's order."""
    modes: list[tuple[type[Body], Literal["serialization"]]] = [(body, "serialization") for body in _bodies()]
    _, defs = models_json_schema(modes, ref_template=REF)
    return {body.__name__: _times(output(defs["$defs"][body.__name__])) for body in _bodies()}


def _operation(event_type: EventType) -> Schema:
    body = {"allOf": [ref(event_type.body.__name__), {"properties": {"event": {"const": event_type.name}}}]}
    refund = f" A refund of the order sends `{event_type.refund}`." if event_type.refund else ""
    return {
        "post": {
            "operationId": "event_" + event_type.name.replace(".", "_"),
            "summary": event_type.summary,
            "description": f"Sent to {GOES_TO[event_type.webhook]}.{refund}",
            "tags": ["webhooks"],
            "parameters": HEADERS,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": RESPONSES,
        }
    }


def webhooks() -> dict[str, Schema]:
    """Every event type, by name, as an OpenAPI 3.1 webhook."""
    return {event_type.name: _operation(event_type) for event_type in TYPES}
