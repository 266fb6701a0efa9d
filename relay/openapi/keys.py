"""Tenancy in the OpenAPI document: project API keys, made, listed and revoked with the admin
token only, and merchant portal links, made and revoked with the admin token or the project's key."""

from __future__ import annotations

from relay.openapi.parts import Schema, error, json_body, obj, ok, operation, path_param, ref
from relay.openapi.paths import PROJECT_ID

KEY_ID = path_param("key_id", "The key's id (`key_...`), as listed.")


def api_key_paths() -> dict[str, Schema]:
    return {
        "/api/platform/projects/{project_id}/api-keys": {
            "post": operation(
                "createApiKey",
                "A new API key of the project (admin token only)",
                tag="builder",
                admin=True,
                keys=False,
                description="`key` (`rk_...`) is shown here once and stored hashed. A key authorises "
                "the builder routes of its own project only: another project's resources answer 404, "
                "admin routes and these key routes 403.",
                parameters=[PROJECT_ID],
                body=json_body(ref("ApiKeyIn")),
                responses={
                    200: ok(obj(api_key=ref("ApiKeyWithKey"))),
                    404: error(404, "`NotFound`: no such project."),
                },
            ),
            "get": operation(
                "listApiKeys",
                "The project's API keys: name, prefix, created and last used; never a key",
                tag="builder",
                admin=True,
                keys=False,
                parameters=[PROJECT_ID],
                responses={
                    200: ok(obj(api_keys={"type": "array", "items": ref("ApiKey")})),
                    404: error(404, "`NotFound`: no such project."),
                },
            ),
        },
        "/api/platform/projects/{project_id}/api-keys/{key_id}": {
            "delete": operation(
                "revokeApiKey",
                "Revoke an API key at once, in every relay process",
                tag="builder",
                admin=True,
                keys=False,
                parameters=[PROJECT_ID, KEY_ID],
                responses={
                    200: ok(obj(revoked={"type": "boolean", "const": True}, id={"type": "string"})),
                    404: error(404, "`NotFound`: no such project, or no such key of it."),
                },
            ),
        },
        "/api/platform/projects/{project_id}/portal-links": {
            "post": operation(
                "createPortalLink",
                "A signed link to the project's merchant portal",
                tag="builder",
                admin=True,
                description="A plain GET on `url` renders the portal, a web page for this project alone "
                "(its orders, attempts, retries and replays, dead letters, signing secret, webhook URL and "
                "a test event), with no other credential, until `expires_at` (`expires_in` seconds, an "
                "hour at most and by default) or until the project's links are revoked. An edited, expired "
                "or revoked link is a 403. The body may be empty.",
                parameters=[PROJECT_ID],
                body=json_body(ref("PortalLinkIn")),
                responses={
                    200: ok(
                        obj(
                            url={"type": "string", "format": "uri"},
                            expires_at={"type": "string", "format": "date-time"},
                            id={"type": "string", "description": "The link's id, as the audit log names it."},
                        )
                    ),
                    404: error(404, "`NotFound`: no such project (or another project's, to its key)."),
                },
            ),
        },
        "/api/platform/projects/{project_id}/portal-links/revoke": {
            "post": operation(
                "revokePortalLinks",
                "Invalidate every portal link of the project issued so far",
                tag="builder",
                admin=True,
                parameters=[PROJECT_ID],
                responses={
                    200: ok(obj(revoked={"type": "boolean", "const": True}, project_id={"type": "string"})),
                    404: error(404, "`NotFound`: no such project (or another project's, to its key)."),
                },
            ),
        },
    }
