"""Console sessions in Redis: a random session id in an HttpOnly cookie, a CSRF token beside it.

The cookie holds the session id; Redis holds only its SHA-256, so whoever reads Redis (or a backup)
cannot take over a session. Each session has a synchronizer CSRF token that every state-changing
form carries, and an absolute lifetime (``SESSION_TTL``): it is not extended by use.

    {p}:console:session:{sha256(id)}          HASH csrf, created_at; expires after SESSION_TTL
    {p}:console:session:{sha256(id)}:flash    the message for the next page; expires after a minute
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis.asyncio import Redis

from relay.models import iso_ms

SESSION_TTL = timedelta(hours=8)
COOKIE = "relay_console"
COOKIE_PATH = "/console"
MAX_COOKIE_LENGTH = 128
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
        self.prefix = prefix
        self.ttl = ttl

    def _key(self, session_id: str) -> str:
        digest = hashlib.sha256(session_id.encode()).hexdigest()
        return f"{self.prefix}:console:session:{digest}"

    async def create(self, *, now: datetime) -> Session:
        session = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))
        key = self._key(session.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"csrf": session.csrf, "created_at": iso_ms(now)})
            pipe.expire(key, self.ttl)
            await pipe.execute()
        return session

    async def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > MAX_COOKIE_LENGTH:
            return None
        csrf = await self.redis.hget(self._key(session_id), "csrf")  # type: ignore[misc]
        return Session(id=session_id, csrf=csrf) if csrf else None

    async def delete(self, session: Session) -> None:
        key = self._key(session.id)
        await self.redis.delete(key, key + ":flash")

    async def flash(self, session: Session, message: str) -> None:
        """Leave a one-line message for the next page this session renders (kept a minute)."""
        await self.redis.set(self._key(session.id) + ":flash", message, ex=FLASH_TTL)

    async def pop_flash(self, session: Session) -> str | None:
        key = self._key(session.id) + ":flash"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.delete(key)
            message, _ = await pipe.execute()
        return str(message) if message else None
