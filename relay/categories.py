"""A project's categories: a tree of shelves its items sit on (``Item.category_id``).

Each is a JSON record (``{p}:category:{id}``) in its project's set (``{p}:project:{id}:categories``).
A parent is a category of the same project, and never the category itself or one below it (no
cycle): ``put`` walks the chain up (at most MAX_DEPTH) before it writes.
"""

from __future__ import annotations

from redis.asyncio import Redis

from relay.errors import Conflict, InvalidInput, not_found
from relay.models import Category
from relay.schema import Keys

MAX_DEPTH = 10  # levels of nesting
MAX_CATEGORIES = 1_000  # a project's


class Categories:
    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self.redis = redis
        self.keys = Keys(prefix)

    async def get(self, category_id: str) -> Category | None:
        raw = await self.redis.get(self.keys.category(category_id))
        return None if raw is None else Category.model_validate_json(raw)

    async def require(self, project_id: str, category_id: str) -> Category:
        """The project's category, else NotFound (another project's is as absent)."""
        found = await self.get(category_id)
        if found is None or found.project_id != project_id:
            raise not_found("category", category_id)
        return found

    async def put(self, category: Category) -> None:
        if category.parent_id is not None:
            await self._check_parent(category)
        members = self.keys.project_categories(category.project_id)
        new = not await self.redis.sismember(members, category.id)  # type: ignore[misc]
        if new and await self.redis.scard(members) >= MAX_CATEGORIES:  # type: ignore[misc]
            raise InvalidInput(f"a project has at most {MAX_CATEGORIES} categories")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.category(category.id), category.model_dump_json())
            pipe.sadd(members, category.id)
            await pipe.execute()

    async def _check_parent(self, category: Category) -> None:
        parent_id: str | None = category.parent_id
        for _ in range(MAX_DEPTH):
            if parent_id is None:
                return
            if parent_id == category.id:
                raise Conflict(f"category {category.id} cannot be inside itself")
            parent = await self.require(category.project_id, parent_id)
            parent_id = parent.parent_id
        raise InvalidInput(f"categories nest at most {MAX_DEPTH} deep")

    async def list(self, project_id: str) -> list[Category]:
        """The project's categories, by sort_order, then name."""
        ids = sorted(await self.redis.smembers(self.keys.project_categories(project_id)))  # type: ignore[misc]
        raws = await self.redis.mget([self.keys.category(category_id) for category_id in ids]) if ids else []
        found = [Category.model_validate_json(raw) for raw in raws if raw is not None]
        return sorted(
            found, key=lambda category: (category.sort_order, category.name.casefold(), category.id)
        )
