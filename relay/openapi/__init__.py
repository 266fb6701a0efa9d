"""The OpenAPI 3.1 description of the HTTP interface, served at ``GET /openapi.json``.

Bodies are generated from the pydantic models the handlers validate and serialise with
(``model_json_schema``), so a changed model changes the document. The routes, parameters and status
codes are written here by hand; ``tests/test_openapi.py`` checks them against the app's router in
both directions and fuzzes a live relay with schemathesis against this document.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from relay import __version__
from relay.jsonutil import dumps
from relay.openapi.parts import component_schemas
from relay.openapi.paths import admin_paths, builder_paths, callback_paths, public_paths, service_paths


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
