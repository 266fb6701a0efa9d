"""Endpoint health: for each URL a project's events go to, when it last took one, since when every
delivery to it has failed, and whether it is disabled.

The delivery step keeps it (``relay/lua/finish.lua``, in the step that logs the attempt): a success
clears ``failing_since``; a failure sets it when unset, and the first failure once it is older
than RELAY_ENDPOINT_DISABLE_AFTER disables the endpoint. A disabled endpoint is sent nothing: its
new events go to the dead-letter queue at once (reason ``endpoint_disabled``) until an operator or
the merchant enables it again and replays them. Which of a project's endpoints are disabled is
also kept as one short string per project, read in the same MGET as the project and item on every
delivery (``relay.store.Store.delivery_target``). A success (one already in flight when the
endpoint was disabled) enables it again too.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel
from redis.asyncio import Redis

from relay import lua
from relay.schema import Keys

FIELDS = ["url", "last_success_at", "last_failure_at", "failing_since", "disabled_at", "last_error"]


class EndpointState(StrEnum):
    HEALTHY = "healthy"
    FAILING = "failing"
    DISABLED = "disabled"


class EndpointHealth(BaseModel):
    url: str
    state: EndpointState
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    failing_since: datetime | None = None
    disabled_at: datetime | None = None
    last_error: str | None = None


def _health(values: list[str | None]) -> EndpointHealth | None:
    fields = dict(zip(FIELDS, values, strict=True))
    if not fields["url"]:
        return None
    state = EndpointState.HEALTHY
    if fields["disabled_at"]:
        state = EndpointState.DISABLED
    elif fields["failing_since"]:
        state = EndpointState.FAILING
    return EndpointHealth.model_validate(
        {key: value for key, value in fields.items() if value} | {"state": state}
    )


class Endpoints:
    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self._enable = redis.register_script(lua.source("enable_endpoint"))

    async def get(self, project_id: str, url: str) -> EndpointHealth | None:
        values = await self.redis.hmget(self.keys.endpoint(project_id, url), FIELDS)  # type: ignore[misc]
        return _health(values)

    async def failing_since(self, project_id: str, url: str) -> str | None:
        value = await self.redis.hget(self.keys.endpoint(project_id, url), "failing_since")  # type: ignore[misc]
        return None if value is None else str(value)

    async def of_project(self, project_id: str) -> list[EndpointHealth]:
        """Every endpoint the project's events went to, by URL."""
        digests = sorted(await self.redis.smembers(self.keys.project_endpoints(project_id)))  # type: ignore[misc]
        async with self.redis.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.hmget(self.keys.endpoint_at(project_id, digest), FIELDS)
            rows = await pipe.execute()
        found = [health for health in map(_health, rows) if health is not None]
        return sorted(found, key=lambda health: health.url)

    async def enable(self, project_id: str, url: str) -> EndpointHealth | None:
        """Enable the endpoint again (it stays enabled if it was); None when no event of the
        project ever went to it. Its failing streak starts over."""
        values = await self._enable(
            keys=[self.keys.endpoint(project_id, url), self.keys.project_disabled_endpoints(project_id)],
            args=[self.keys.endpoint_digest(url)],
        )
        return _health([value or None for value in values])
