"""Project API keys in the OpenAPI document: made, listed and revoked with the admin token only."""

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
    }
