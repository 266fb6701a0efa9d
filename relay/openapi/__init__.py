"""The OpenAPI 3.1 description of the HTTP interface, served at ``GET /openapi.json``.

Bodies are generated from the pydantic models the handlers validate and serialise with
(``model_json_schema``), so a changed model changes the document. The routes, parameters and status
codes are written here by hand; ``tests/test_openapi.py`` checks them against the app's router in
both directions and fuzzes a live relay with schemathesis against this document. The ``webhooks``
(the events a merchant receives) are generated from ``relay.event_types.TYPES``
(``relay.openapi.webhooks``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from relay import __version__
from relay.jsonutil import dumps
from relay.openapi.billing import billing_paths
from relay.openapi.keys import api_key_paths
from relay.openapi.parts import component_schemas
from relay.openapi.paths import admin_paths, builder_paths, callback_paths, public_paths, service_paths
from relay.openapi.webhooks import event_schemas, webhooks


@cache
def document() -> dict[str, Any]:
    """The whole document, built once per process (it depends on the code only)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relay",
            "version": __version__,
            "summary": "Verified payment-gateway callbacks in, signed webhooks out: items, shop payments, "
            "subscriptions and their refunds.",
            "description": 'Errors are `{"error": "<ClassName>", "detail": "<sentence>"}` with a 4xx/5xx '
            "status. Builder and admin routes take `Authorization: Bearer <RELAY_ADMIN_TOKEN>`.",
        },
        "tags": [
            {"name": "callbacks", "description": "Payment gateways; the signature is the authentication."},
            {
                "name": "builder",
                "description": "Projects, items, shop payments, plans, subscriptions and orders of every "
                "kind (admin token, or the project's API key).",
            },
            {"name": "public", "description": "Keyed by a project's client_id; no auth."},
            {"name": "admin", "description": "The dead-letter queue (admin token)."},
            {"name": "service", "description": "Health, readiness, metrics and this document."},
            {
                "name": "webhooks",
                "description": "The events the relay POSTs to a merchant's endpoint, signed (Standard "
                "Webhooks); one webhook per event type.",
            },
        ],
        "paths": callback_paths()
        | builder_paths()
        | billing_paths()
        | api_key_paths()
        | public_paths()
        | admin_paths()
        | service_paths(),
        "webhooks": webhooks(),
        "components": {
            "schemas": component_schemas() | event_schemas(),
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "RELAY_ADMIN_TOKEN (16+ characters).",
                },
                "projectKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A project's API key (`rk_...`): the builder routes of that project only.",
                },
            },
        },
    }


@cache
def document_bytes() -> bytes:
    return dumps(document()).encode()
