"""Categories of a project's catalogue (builder routes: the admin token, or the project's key)."""

from __future__ import annotations

from aiohttp import web

from relay.api.auth import audit_target, builder, in_scope, principal_of
from relay.api.context import CATEGORIES, CLOCK, OPERATIONS
from relay.api.parsing import parse, read_model, required_query
from relay.errors import Conflict, not_found
from relay.models import Category, CategoryIn, new_id

routes = web.RouteTableDef()


@routes.put("/api/platform/categories")
@builder
async def put_category(request: web.Request) -> web.Response:
    """Create a category, or change the fields given when ``id`` names one of the project's. A
    project key cannot choose a new id (404), as for items."""
    categories, now = request.app[CATEGORIES], request.app[CLOCK]()
    data = await read_model(request, CategoryIn)
    in_scope(request, data.project_id, "project", data.project_id)
    await request.app[OPERATIONS].project(data.project_id)
    existing = await categories.get(data.id) if data.id else None
    if existing is None:
        if data.id and not principal_of(request).admin:  # ids are global: a key draws new ones
            raise not_found("category", data.id)
        fields = data.model_dump() | {"id": data.id or new_id(), "created_at": now, "updated_at": now}
    else:
        in_scope(request, existing.project_id, "category", existing.id)
        if existing.project_id != data.project_id:
            raise Conflict(f"category {existing.id} belongs to another project")
        changes = data.model_dump(include=data.model_fields_set - {"id", "project_id"})
        fields = existing.model_dump() | changes | {"updated_at": now}
    category = parse(Category, fields)
    await categories.put(category)
    audit_target(request, category_id=category.id, project_id=category.project_id)
    return web.json_response({"category": category.model_dump(mode="json")})


@routes.get("/api/platform/categories")
@builder
async def list_categories(request: web.Request) -> web.Response:
    project_id = required_query(request, "project_id")
    in_scope(request, project_id, "project", project_id)
    project = await request.app[OPERATIONS].project(project_id)
    found = await request.app[CATEGORIES].list(project.id)
    return web.json_response({"categories": [category.model_dump(mode="json") for category in found]})
