"""Categories of a project's catalogue (builder routes: the admin token, or the project's key)."""

from __future__ import annotations

from aiohttp import web

from relay.api.auth import audit_target, builder, in_scope
from relay.api.builder import put_fields
from relay.api.context import CATEGORIES, CLOCK, OPERATIONS
from relay.api.parsing import parse, read_model, required_query
from relay.models import Category, CategoryIn

routes = web.RouteTableDef()


@routes.put("/api/platform/categories")
@builder
async def put_category(request: web.Request) -> web.Response:
    """Create a category, or change the fields given when ``id`` names one of the project's
    (``put_fields``: as for items and plans, a project key cannot choose a new id)."""
    categories, now = request.app[CATEGORIES], request.app[CLOCK]()
    data = await read_model(request, CategoryIn)
    existing = await categories.get(data.id) if data.id else None
    category = parse(Category, await put_fields(request, "category", existing, data, now=now))
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
