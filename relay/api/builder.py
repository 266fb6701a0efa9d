"""Builder API (bearer admin token): projects, items, and a project's purchases."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import Field

from relay.api.auth import admin_only
from relay.api.context import CLOCK, OPERATIONS, SETTINGS, STORE
from relay.api.parsing import parse, parse_webhook_status, query_int, read_model, required_query
from relay.errors import Conflict, InvalidInput, not_found
from relay.models import Input, Item, ItemIn, Plan, PlanIn, Project, ProjectIn, new_client_id, new_id
from relay.settings import Settings
from relay.signing import new_webhook_secret
from relay.store import Store

ROTATION_GRACE = timedelta(hours=24)
routes = web.RouteTableDef()


def check_target(settings: Settings, url: str | None) -> None:
    """Refuse at registration the webhook URLs deliveries would refuse (the worker checks again)."""
    if url is None:
        return
    try:
        settings.check_target(url)
    except ValueError as error:
        raise InvalidInput(f"webhook_url: {error}") from None


def put_fields(
    kind: str, existing: Item | Plan | None, data: ItemIn | PlanIn, *, now: datetime
) -> dict[str, Any]:
    """The fields a PUT of a project's item or plan makes: the existing one with the fields sent
    changed (409 when it belongs to another project), or a new one (its id given or drawn)."""
    if existing is None:
        return data.model_dump() | {"id": data.id or new_id(), "created_at": now, "updated_at": now}
    if existing.project_id != data.project_id:
        raise Conflict(f"{kind} {existing.id} belongs to another project")
    changes = data.model_dump(include=data.model_fields_set - {"id", "project_id"})
    return existing.model_dump() | changes | {"updated_at": now}


@routes.put("/api/platform/projects")
@admin_only
async def put_project(request: web.Request) -> web.Response:
    store, now = request.app[STORE], request.app[CLOCK]()
    data = await read_model(request, ProjectIn)
    check_target(request.app[SETTINGS], data.webhook_url)
    existing = await store.get_project(data.id) if data.id else None
    if existing is not None:
        changes = data.model_dump(include=data.model_fields_set - {"id"})
        project = Project.model_validate(existing.model_dump() | changes | {"updated_at": now})
        await store.put_project(project)
        return web.json_response({"project": project.public_view()})
    project = Project(
        id=data.id or new_id(),
        name=data.name,
        webhook_url=data.webhook_url,
        client_id=new_client_id(),
        webhook_secret=new_webhook_secret(),
        created_at=now,
        updated_at=now,
    )
    await store.put_project(project)
    return web.json_response({"project": project.public_view() | {"webhook_secret": project.webhook_secret}})


@routes.get("/api/platform/projects/{project_id}")
@admin_only
async def get_project(request: web.Request) -> web.Response:
    project = await request.app[OPERATIONS].project(request.match_info["project_id"])
    return web.json_response({"project": project.public_view()})


@routes.post("/api/platform/projects/{project_id}/webhook-secret/rotate")
@admin_only
async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret. The one it replaces keeps signing for ROTATION_GRACE, and so does each one
    replaced before it for the rest of its own: a merchant still on any of them keeps verifying."""
    store, now = request.app[STORE], request.app[CLOCK]()
    project = await request.app[OPERATIONS].project(request.match_info["project_id"])
    rotated = project.rotated(new_webhook_secret(), now=now, grace=ROTATION_GRACE)
    await store.put_project(rotated)
    return web.json_response(
        {
            "project": rotated.public_view() | {"webhook_secret": rotated.webhook_secret},
            "previous_secret_expires_at": rotated.previous_secrets[0].model_dump(mode="json")["expires_at"],
        }
    )


class EndpointIn(Input):
    url: str = Field(min_length=1, max_length=2048)


@routes.get("/api/platform/projects/{project_id}/endpoints")
@admin_only
async def endpoint_health(request: web.Request) -> web.Response:
    """Each endpoint the project's events went to: last success, failing since, disabled."""
    found = await request.app[OPERATIONS].endpoint_health(request.match_info["project_id"])
    return web.json_response({"endpoints": [health.model_dump(mode="json") for health in found]})


@routes.post("/api/platform/projects/{project_id}/endpoints/enable")
@admin_only
async def enable_endpoint(request: web.Request) -> web.Response:
    """Enable an endpoint disabled after failing too long (a no-op on an enabled one). Its dead
    letters (reason endpoint_disabled) are replayed with the dead-letter replay."""
    data = await read_model(request, EndpointIn)
    health = await request.app[OPERATIONS].enable_endpoint(request.match_info["project_id"], data.url)
    return web.json_response({"endpoint": health.model_dump(mode="json")})


@routes.put("/api/platform/items")
@admin_only
async def put_item(request: web.Request) -> web.Response:
    store, now = request.app[STORE], request.app[CLOCK]()
    data = await read_model(request, ItemIn)
    check_target(request.app[SETTINGS], data.webhook_url)
    await request.app[OPERATIONS].project(data.project_id)
    existing = await store.get_item(data.id) if data.id else None
    item = parse(
        Item, put_fields("item", existing, data, now=now)
    )  # 400 when the bounds do not hold the price
    await store.put_item(item)
    return web.json_response({"item": item.model_dump(mode="json")})


@routes.get("/api/platform/items")
@admin_only
async def list_items(request: web.Request) -> web.Response:
    project = await request.app[OPERATIONS].project(required_query(request, "project_id"))
    items = await request.app[STORE].list_items(project.id)
    return web.json_response({"items": [item.model_dump(mode="json") for item in items]})


async def _item(store: Store, item_id: str) -> Item:
    item = await store.get_item(item_id)
    if item is None:
        raise not_found("item", item_id)
    return item


@routes.get("/api/platform/items/{item_id}")
@admin_only
async def get_item(request: web.Request) -> web.Response:
    item = await _item(request.app[STORE], request.match_info["item_id"])
    return web.json_response({"item": item.model_dump(mode="json")})


@routes.delete("/api/platform/items/{item_id}")
@admin_only
async def delete_item(request: web.Request) -> web.Response:
    store = request.app[STORE]
    item = await _item(store, request.match_info["item_id"])
    await store.delete_item(item)
    return web.json_response({"deleted": True, "item": item.model_dump(mode="json")})


@routes.get("/api/platform/projects/{project_id}/item-purchases")
@admin_only
async def list_purchases(request: web.Request) -> web.Response:
    operations = request.app[OPERATIONS]
    purchases = await operations.purchases(
        request.match_info["project_id"],
        webhook_status=parse_webhook_status(request.query.get("webhook_status")),
        limit=query_int(request, "limit", default=100, low=1, high=1000),
    )
    return web.json_response({"purchases": await operations.with_attempts(purchases)})


@routes.get("/api/platform/projects/{project_id}/item-purchases/{purchase_id}")
@admin_only
async def get_purchase(request: web.Request) -> web.Response:
    operations = request.app[OPERATIONS]
    project = await operations.project(request.match_info["project_id"])
    purchase = await operations.purchase(project.id, request.match_info["purchase_id"])
    [view] = await operations.with_attempts([purchase])
    return web.json_response({"purchase": view})


@routes.post("/api/platform/projects/{project_id}/item-purchases/{purchase_id}/retry-webhook")
@admin_only
async def retry_webhook(request: web.Request) -> web.Response:
    operations = request.app[OPERATIONS]
    project = await operations.project(request.match_info["project_id"])
    purchase = await operations.retry_purchase(project.id, request.match_info["purchase_id"])
    [view] = await operations.with_attempts([purchase])
    return web.json_response({"purchase": view})
