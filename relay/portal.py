"""Merchant portal links: a signed URL that opens one project's portal, and nothing else, until it
expires or is revoked.

A link is ``/portal/{token}``. The token is ``{payload}.{signature}``, both base64url: the payload
is the JSON ``[project id, link id, generation, expires at (Unix s)]``, the signature its
HMAC-SHA256 under the portal key, a random key made once and kept in Redis
(``{p}:portal:key``, like the sandbox's). Editing any character of the token breaks the signature;
a project id cannot be swapped for another's. Revoking a project's links bumps its generation
(``{p}:project:{id}:portal-generation``): every link issued before names an older one and is
refused, in every process, at once. The link id names the link in the audit log. The portal's forms
carry a CSRF token derived from the link (``csrf_token``).

Links are checked, not stored: issuing one writes nothing, so a merchant's backend may make one
per page view. The HMAC and ``hmac.compare_digest`` are the standard library's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from relay.schema import Keys

LINK_TTL = timedelta(hours=1)  # a link's life unless its issuer asks for less
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,400}\.[A-Za-z0-9_-]{43}")  # anything else is refused unread


@dataclass(frozen=True)
class PortalLink:
    project_id: str
    id: str  # "pl_" + 64 random bits: who acted, in the audit log
    generation: int
    expires_at: datetime
    token: str

    @property
    def path(self) -> str:
        return f"/portal/{self.token}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PortalLinks:
    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self._key: bytes | None = None

    async def key(self) -> bytes:
        """The portal key: the one in Redis, or, the first time, a new random one put there. It
        never changes once made, so each process reads it once."""
        if self._key is None:
            await self.redis.set(self.keys.portal_key, secrets.token_hex(32), nx=True)
            found = await self.redis.get(self.keys.portal_key)
            if not isinstance(found, str):
                raise RuntimeError("the portal key vanished from Redis as it was read")
            self._key = found.encode()
        return self._key

    async def issue(self, project_id: str, *, now: datetime, ttl: timedelta = LINK_TTL) -> PortalLink:
        generation = int(await self.redis.get(self.keys.portal_generation(project_id)) or 0)
        link_id = "pl_" + secrets.token_hex(8)
        expires = int((now + ttl).timestamp())
        payload = _b64(json.dumps([project_id, link_id, generation, expires], separators=(",", ":")).encode())
        token = f"{payload}.{_b64(self._sign(await self.key(), payload))}"
        return PortalLink(project_id, link_id, generation, datetime.fromtimestamp(expires, UTC), token)

    async def open(self, token: str, *, now: datetime) -> PortalLink | None:
        """The link ``token`` is, while it is signed, unexpired and not revoked; else None."""
        if not TOKEN.fullmatch(token):
            return None
        payload, _, signature = token.partition(".")
        # The signature as the relay writes it, compared as text: base64's spare bits in its last
        # character cannot give one link four spellings.
        if not hmac.compare_digest(signature, _b64(self._sign(await self.key(), payload))):
            return None
        project_id, link_id, generation, expires = json.loads(_unb64(payload))  # it is ours: signed
        if now.timestamp() >= expires:
            return None
        current = int(await self.redis.get(self.keys.portal_generation(project_id)) or 0)
        if generation != current:
            return None
        return PortalLink(project_id, link_id, generation, datetime.fromtimestamp(expires, UTC), token)

    async def revoke(self, project_id: str) -> None:
        """Invalidate every link of the project issued so far."""
        await self.redis.incr(self.keys.portal_generation(project_id))

    async def csrf_token(self, link: PortalLink) -> str:
        """What the link's forms carry: a value only a holder of the link is shown."""
        return _b64(hmac.new(await self.key(), f"portal csrf {link.id}".encode(), hashlib.sha256).digest())

    async def csrf_matches(self, link: PortalLink, given: object) -> bool:
        expected = await self.csrf_token(link)
        return isinstance(given, str) and hmac.compare_digest(
            given.encode(errors="surrogateescape"), expected.encode()
        )

    @staticmethod
    def _sign(key: bytes, payload: str) -> bytes:
        return hmac.new(key, f"portal link {payload}".encode(), hashlib.sha256).digest()
