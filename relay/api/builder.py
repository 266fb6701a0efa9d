"""Builder API (bearer admin token): projects, items, and a project's purchases."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import Field

from relay.api.auth import admin_only, audit_target, builder, in_scope, principal_of
from relay.api.clients import own_base_url
from relay.api.context import API_KEYS, CATEGORIES, CLOCK, OPERATIONS, PORTAL_LINKS, SETTINGS, STORE
from relay.api.parsing import parse, parse_webhook_status, query_int, read_model, required_query
from relay.catalogue import item_matches
from relay.errors import Conflict, Forbidden, InvalidInput, not_found
from relay.jsonutil import parse_object
from relay.models import (
    Category,
    CategoryIn,
    Input,
    Item,
    ItemIn,
    ItemStatus,
    Plan,
    PlanIn,
    Project,
    ProjectIn,
    iso_z,
    new_client_id,
    new_id,
)
from relay.portal import LINK_TTL
from relay.settings import Settings
from relay.signing import new_webhook_secret

routes = web.RouteTableDef()


def check_target(settings: Settings, url: str | None) -> None:
    """Refuse at registration the webhook URLs deliveries would refuse (the worker checks again)."""
    if url is None:
        return
    try:
        settings.check_target(url)
    except ValueError as error:
        raise InvalidInput(f"webhook_url: {error}") from None


async def change_project(request: web.Request, project_id: str, changes: dict[str, Any]) -> Project:
    """The project with ``changes`` (ProjectIn's fields), applied to it as it is when written
    (``Store.update_project``: a rotation meanwhile is kept): the API's PUT and the portal's webhook
    URL form. A webhook URL deliveries would refuse is refused here (400)."""
    settings, now = request.config_dict[SETTINGS], request.config_dict[CLOCK]()

    def change(current: Project) -> Project:
        changed = parse(Project, current.model_dump() | changes | {"updated_at": now})
        check_target(settings, changed.webhook_url)
        return changed

    project = await request.config_dict[STORE].update_project(project_id, change)
    if project is None:
        raise not_found("project", project_id)
    return project


async def put_fields(
    request: web.Request,
    kind: str,
    existing: Item | Plan | Category | None,
    data: ItemIn | PlanIn | CategoryIn,
    *,
    now: datetime,
) -> dict[str, Any]:
    """The fields a PUT of a project's item, plan or category makes: the existing one with the
    fields sent changed (409 when it belongs to another project), or a new one (its id given or
    drawn).

    A project key reaches its own project's only: another's is a 404, as if it did not exist. Ids
    are global, so a key cannot choose a new one either (404): it could learn that another project
    has it, or take ids another project would choose; what it makes gets drawn ids."""
    in_scope(request, data.project_id, "project", data.project_id)
    check_target(request.app[SETTINGS], getattr(data, "webhook_url", None))  # a category has none
    await request.app[OPERATIONS].project(data.project_id)
    if existing is None:
        if data.id and not principal_of(request).admin:
            raise not_found(kind, data.id)
        return data.model_dump() | {"id": data.id or new_id(), "created_at": now, "updated_at": now}
    in_scope(request, existing.project_id, kind, existing.id)
    if existing.project_id != data.project_id:
        raise Conflict(f"{kind} {existing.id} belongs to another project")
    changes = data.model_dump(include=data.model_fields_set - {"id", "project_id"})
    return existing.model_dump() | changes | {"updated_at": now}


@routes.put("/api/platform/projects")
@builder
async def put_project(request: web.Request) -> web.Response:
    """Create a project (admin only), or change one (a project key: its own)."""
    store, now = request.app[STORE], request.app[CLOCK]()
    data = await read_model(request, ProjectIn)
    if not principal_of(request).admin:
        if data.id is None:
            raise Forbidden("a project API key cannot create projects; it needs the admin token")
        in_scope(request, data.id, "project", data.id)
    check_target(request.app[SETTINGS], data.webhook_url)
    existing = await store.get_project(data.id) if data.id else None
    if existing is not None:
        project = await change_project(
            request, existing.id, data.model_dump(include=data.model_fields_set - {"id"})
        )
        audit_target(request, project_id=project.id)
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
    audit_target(request, project_id=project.id)
    return web.json_response({"project": project.public_view() | {"webhook_secret": project.webhook_secret}})


@routes.get("/api/platform/projects")
@builder
async def list_projects(request: web.Request) -> web.Response:
    """Every project, oldest first, a page at a time; to a project key, its own project."""
    principal = principal_of(request)
    if not principal.admin:
        own = await request.app[OPERATIONS].project(principal.project_id or "")
        return web.json_response({"projects": [own.public_view()], "next_cursor": None})
    limit = query_int(request, "limit", default=100, low=1, high=1000)
    projects, next_cursor = await request.app[STORE].project_page(
        limit=limit, cursor=request.query.get("cursor")
    )
    return web.json_response(
        {"projects": [project.public_view() for project in projects], "next_cursor": next_cursor}
    )


@routes.get("/api/platform/projects/{project_id}")
@builder
async def get_project(request: web.Request) -> web.Response:
    project = await request.app[OPERATIONS].project(request.match_info["project_id"])
    return web.json_response({"project": project.public_view()})


@routes.post("/api/platform/projects/{project_id}/webhook-secret/rotate")
@builder
async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret; the replaced ones keep signing for a while (``Operations.rotate_secret``)."""
    rotated = await request.app[OPERATIONS].rotate_secret(request.match_info["project_id"])
    return web.json_response(
        {
            "project": rotated.public_view() | {"webhook_secret": rotated.webhook_secret},
            "previous_secret_expires_at": rotated.previous_secrets[0].model_dump(mode="json")["expires_at"],
        }
    )


class ApiKeyIn(Input):
    name: str = Field(min_length=1, max_length=200)


@routes.post("/api/platform/projects/{project_id}/api-keys")
@admin_only
async def create_api_key(request: web.Request) -> web.Response:
    """A new API key of the project: its ``key`` is shown here once and never again."""
    project = await request.app[OPERATIONS].project(request.match_info["project_id"])
    data = await read_model(request, ApiKeyIn)
    api_key, material = await request.app[API_KEYS].create(project.id, data.name, now=request.app[CLOCK]())
    audit_target(request, key_id=api_key.id)
    shown = api_key.model_dump(mode="json", exclude={"project_id"})
    return web.json_response({"api_key": shown | {"key": material}})


@routes.get("/api/platform/projects/{project_id}/api-keys")
@admin_only
async def list_api_keys(request: web.Request) -> web.Response:
    """The project's keys: name, prefix, created and last used; never a key."""
    project = await request.app[OPERATIONS].project(request.match_info["project_id"])
    found = await request.app[API_KEYS].recent(project.id)
    return web.json_response(
        {"api_keys": [key.model_dump(mode="json", exclude={"project_id"}) for key in found]}
    )


@routes.delete("/api/platform/projects/{project_id}/api-keys/{key_id}")
@admin_only
async def revoke_api_key(request: web.Request) -> web.Response:
    """Revoke a key at once, in every process (none caches keys), and the project's portal links
    with it: a link does not say which credential made it, and a leaked key may have made some."""
    project = await request.app[OPERATIONS].project(request.match_info["project_id"])
    key_id = request.match_info["key_id"]
    if not await request.app[API_KEYS].revoke(project.id, key_id):
        raise not_found("api key", key_id)
    await request.app[PORTAL_LINKS].revoke(project.id)
    return web.json_response({"revoked": True, "id": key_id})


class PortalLinkIn(Input):
    expires_in: int = Field(
        default=int(LINK_TTL.total_seconds()),
        ge=60,
        le=int(LINK_TTL.total_seconds()),
        description="Seconds the link works for: from a minute to an hour (the default).",
    )


@routes.post("/api/platform/projects/{project_id}/portal-links")
@builder
async def create_portal_link(request: web.Request) -> web.Response:
    """A link to the project's merchant portal, usable by whoever holds it until ``expires_at``
    (``expires_in`` seconds, an hour at most) or until the project's links are revoked."""
    project = await request.app[OPERATIONS].project(request.match_info["project_id"])
    raw = await request.read()
    data = parse(PortalLinkIn, parse_object(raw) if raw.strip() else {})
    link = await request.app[PORTAL_LINKS].issue(
        project.id, now=request.app[CLOCK](), ttl=timedelta(seconds=data.expires_in)
    )
    audit_target(request, link_id=link.id)
    base = request.app[SETTINGS].public_base_url or own_base_url(request)
    return web.json_response({"url": base + link.path, "expires_at": iso_z(link.expires_at), "id": link.id})


@routes.post("/api/platform/projects/{project_id}/portal-links/revoke")
@builder
async def revoke_portal_links(request: web.Request) -> web.Response:
    """Invalidate every portal link of the project issued so far, at once, in every process."""
    project = await request.app[OPERATIONS].project(request.match_info["project_id"])
    await request.app[PORTAL_LINKS].revoke(project.id)
    return web.json_response({"revoked": True, "project_id": project.id})


class EndpointIn(Input):
    url: str = Field(min_length=1, max_length=2048)


@routes.get("/api/platform/projects/{project_id}/endpoints")
@builder
async def endpoint_health(request: web.Request) -> web.Response:
    """Each endpoint the project's events went to: last success, failing since, disabled."""
    found = await request.app[OPERATIONS].endpoint_health(request.match_info["project_id"])
    return web.json_response({"endpoints": [health.model_dump(mode="json") for health in found]})


@routes.post("/api/platform/projects/{project_id}/endpoints/enable")
@builder
async def enable_endpoint(request: web.Request) -> web.Response:
    """Enable an endpoint disabled after failing too long (a no-op on an enabled one). Its dead
    letters (reason endpoint_disabled) are replayed with the dead-letter replay."""
    data = await read_model(request, EndpointIn)
    health = await request.app[OPERATIONS].enable_endpoint(request.match_info["project_id"], data.url)
    return web.json_response({"endpoint": health.model_dump(mode="json")})


@routes.put("/api/platform/items")
@builder
async def put_item(request: web.Request) -> web.Response:
    store, now = request.app[STORE], request.app[CLOCK]()
    data = await read_model(request, ItemIn)
    existing = await store.get_item(data.id) if data.id else None
    fields = await put_fields(request, "item", existing, data, now=now)
    item = parse(Item, fields)  # 400 when the amount bounds do not hold the price
    if item.category_id is not None:
        await request.app[CATEGORIES].require(item.project_id, item.category_id)
    # The live count is set only when the stock is given: a change of name must not undo sales.
    await store.put_item(item, set_stock=existing is None or "stock" in data.model_fields_set)
    audit_target(request, item_id=item.id, project_id=item.project_id)
    return web.json_response({"item": item.model_dump(mode="json")})


@routes.get("/api/platform/items")
@builder
async def list_items(request: web.Request) -> web.Response:
    """A project's items, oldest first, a page at a time (``page`` from 1, ``per_page``), found
    by ``search`` (any case, in name and sku), ``category_id`` and ``status``; ``total`` counts
    what matches."""
    project_id = required_query(request, "project_id")
    in_scope(request, project_id, "project", project_id)
    project = await request.app[OPERATIONS].project(project_id)
    page = query_int(request, "page", default=1, low=1, high=1_000_000)
    per_page = query_int(request, "per_page", default=100, low=1, high=500)
    found = item_matches(
        await request.app[STORE].list_items(project.id),
        search=request.query.get("search", "").strip(),
        category_id=request.query.get("category_id") or None,
        status=_item_status(request.query.get("status")),
    )
    shown = found[(page - 1) * per_page : page * per_page]
    return web.json_response(
        {
            "items": [item.model_dump(mode="json") for item in shown],
            "page": page,
            "per_page": per_page,
            "total": len(found),
        }
    )


def _item_status(raw: str | None) -> ItemStatus | None:
    if not raw:
        return None
    try:
        return ItemStatus(raw)
    except ValueError:
        raise InvalidInput(
            f"status must be one of: {', '.join(status.value for status in ItemStatus)}"
        ) from None


async def _item(request: web.Request, item_id: str) -> Item:
    """The item, when the request may see its project (else as missing)."""
    item = await request.app[STORE].get_item(item_id)
    if item is None:
        raise not_found("item", item_id)
    in_scope(request, item.project_id, "item", item_id)
    return item


@routes.get("/api/platform/items/{item_id}")
@builder
async def get_item(request: web.Request) -> web.Response:
    item = await _item(request, request.match_info["item_id"])
    return web.json_response({"item": item.model_dump(mode="json")})


@routes.delete("/api/platform/items/{item_id}")
@builder
async def delete_item(request: web.Request) -> web.Response:
    item = await _item(request, request.match_info["item_id"])
    await request.app[STORE].delete_item(item)
    return web.json_response({"deleted": True, "item": item.model_dump(mode="json")})


@routes.get("/api/platform/projects/{project_id}/item-purchases")
@builder
async def list_purchases(request: web.Request) -> web.Response:
    operations = request.app[OPERATIONS]
    purchases = await operations.purchases(
        request.match_info["project_id"],
        webhook_status=parse_webhook_status(request.query.get("webhook_status")),
        limit=query_int(request, "limit", default=100, low=1, high=1000),
    )
    return web.json_response({"purchases": await operations.with_attempts(purchases)})


@routes.get("/api/platform/projects/{project_id}/item-purchases/{purchase_id}")
@builder
async def get_purchase(request: web.Request) -> web.Response:
    operations = request.app[OPERATIONS]
    project = await operations.project(request.match_info["project_id"])
    order_id = await operations.order_id(project.id, request.match_info["purchase_id"])
    purchase = await operations.purchase(project.id, order_id)
    [view] = await operations.with_attempts([purchase])
    return web.json_response({"purchase": view})


@routes.post("/api/platform/projects/{project_id}/item-purchases/{purchase_id}/retry-webhook")
@builder
async def retry_webhook(request: web.Request) -> web.Response:
    operations = request.app[OPERATIONS]
    project = await operations.project(request.match_info["project_id"])
    order_id = await operations.order_id(project.id, request.match_info["purchase_id"])
    purchase = await operations.retry_purchase(project.id, order_id)
    [view] = await operations.with_attempts([purchase])
    return web.json_response({"purchase": view})
