"""Project API keys: a merchant backend's credential for its own project's builder routes.

A key is ``rk_`` and 256 random bits, shown once when made. Redis keeps only its SHA-256: a key is
found by the digest of what is presented (one GET; a digest reveals nothing of a key, so the lookup
needs no constant-time compare), and whoever reads Redis cannot use one. Revoking deletes that
digest's record, so the next request with the key is refused by every process at once (no
process caches keys). ``last_used_at`` is written at most once a minute per key and process.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from pydantic import Field
from redis.asyncio import Redis

from relay.models import Record
from relay.schema import Keys

KEY_PREFIX = "rk_"
SHOWN_PREFIX = 11  # characters of a key the list shows: "rk_" and 8 more
TOUCH_EVERY = timedelta(minutes=1)


class ApiKey(Record):
    id: str
    project_id: str
    name: str = Field(min_length=1, max_length=200)
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class ApiKeys:
    """``redis`` must decode responses to ``str``."""

    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self._touched: dict[str, datetime] = {}

    async def create(self, project_id: str, name: str, *, now: datetime) -> tuple[ApiKey, str]:
        """A new key of ``project_id``, and its material (shown once, never stored)."""
        material = KEY_PREFIX + secrets.token_urlsafe(32)
        api_key = ApiKey(
            id="key_" + secrets.token_hex(8),
            project_id=project_id,
            name=name,
            prefix=material[:SHOWN_PREFIX],
            created_at=now,
        )
        hashed = digest(material)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.api_key(hashed), api_key.model_dump_json())
            pipe.hset(self.keys.project_api_keys(project_id), api_key.id, hashed)
            await pipe.execute()
        return api_key, material

    async def recent(self, project_id: str) -> list[ApiKey]:
        """The project's keys (no key material), oldest first, with when each was last used."""
        digests: dict[str, str] = await self.redis.hgetall(self.keys.project_api_keys(project_id))  # type: ignore[misc]
        if not digests:
            return []
        raws = await self.redis.mget([self.keys.api_key(hashed) for hashed in digests.values()])
        used: dict[str, str] = await self.redis.hgetall(self.keys.project_api_keys_used(project_id))  # type: ignore[misc]
        found = [ApiKey.model_validate_json(raw) for raw in raws if raw is not None]
        found = [key.model_copy(update={"last_used_at": used.get(key.id)}) for key in found]
        return sorted(found, key=lambda key: (key.created_at, key.id))

    async def revoke(self, project_id: str, key_id: str) -> bool:
        """Revoke a key of the project at once; False when it has no such key."""
        hashed = await self.redis.hget(self.keys.project_api_keys(project_id), key_id)  # type: ignore[misc]
        if hashed is None:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.api_key(hashed))
            pipe.hdel(self.keys.project_api_keys(project_id), key_id)
            pipe.hdel(self.keys.project_api_keys_used(project_id), key_id)
            await pipe.execute()
        return True

    async def lookup(self, material: str) -> ApiKey | None:
        """The key ``material`` is, when it is one and not revoked."""
        raw = await self.redis.get(self.keys.api_key(digest(material)))
        return None if raw is None else ApiKey.model_validate_json(raw)

    async def touch(self, api_key: ApiKey, *, now: datetime) -> None:
        """Record that the key was used (at most once every TOUCH_EVERY from this process)."""
        last = self._touched.get(api_key.id)
        if last is not None and now - last < TOUCH_EVERY:
            return
        self._touched[api_key.id] = now
        if len(self._touched) > 10_000:  # bounded: forget the oldest half
            for key_id in sorted(self._touched, key=self._touched.__getitem__)[:5_000]:
                del self._touched[key_id]
        used = self.keys.project_api_keys_used(api_key.project_id)
        await self.redis.hset(used, api_key.id, now.isoformat())  # type: ignore[misc]
