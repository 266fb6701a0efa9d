"""Console sessions in Redis: a random session id (the console keeps it in an HttpOnly cookie)
and a CSRF token beside it.

Redis holds only the id's SHA-256 (``relay.schema.Keys.session``), so whoever reads Redis (or a
backup) cannot take over a session. Each session has a synchronizer CSRF token that every
state-changing form carries, and an absolute lifetime (``SESSION_TTL``): it is not extended by use.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis.asyncio import Redis

from relay.models import iso_ms
from relay.schema import Keys

SESSION_TTL = timedelta(hours=8)
MAX_SESSION_ID_LENGTH = 128
FLASH_TTL = 60


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str

    def csrf_matches(self, given: str) -> bool:
        """Constant-time comparison of a submitted CSRF token with the session's."""
        return hmac.compare_digest(given.encode(), self.csrf.encode())


class SessionStore:
    def __init__(self, redis: Redis, *, prefix: str, ttl: timedelta = SESSION_TTL) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.ttl = ttl

    async def create(self, *, now: datetime) -> Session:
        session = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))
        key = self.keys.session(session.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"csrf": session.csrf, "created_at": iso_ms(now)})
            pipe.expire(key, self.ttl)
            await pipe.execute()
        return session

    async def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
            return None
        csrf = await self.redis.hget(self.keys.session(session_id), "csrf")  # type: ignore[misc]
        return Session(id=session_id, csrf=csrf) if csrf else None

    async def delete(self, session: Session) -> None:
        await self.redis.delete(self.keys.session(session.id), self.keys.session_flash(session.id))

    async def flash(self, session: Session, message: str) -> None:
        """Leave a one-line message for the next page this session renders (kept a minute)."""
        await self.redis.set(self.keys.session_flash(session.id), message, ex=FLASH_TTL)

    async def pop_flash(self, session: Session) -> str | None:
        key = self.keys.session_flash(session.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.delete(key)
            message, _ = await pipe.execute()
        return str(message) if message else None
