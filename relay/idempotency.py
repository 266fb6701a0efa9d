"""``Idempotency-Key`` on creating POSTs: a client that retries a request it got no answer to (a
timeout, a double click) gets the first answer again instead of a second order.

The contract: a key is scoped to a client (or project) and a route. The same key and body within
24 h answers the first response again, with ``Idempotent-Replayed: true``; the same key with
another body is a 409; a duplicate while the first is still in flight is a 409. Without the header
every request creates. A route opts in with one line (``idempotent``), once it has the scope.

Each key is one Redis STRING (``relay.schema.Keys.idempotency``), JSON, in one of two states:

    (absent)  --SET NX GET, expires in IN_FLIGHT_TTL->  in_flight {body digest, claim token}
    in_flight --a 2xx answer, expires after 24 h----->  done {body digest, status, content type, text}
    in_flight --an error, a non-2xx answer, cancel--->  (absent): the client may retry with the key

Claiming and reading what holds the key are one command (``SET NX GET``, Redis 7.0 or later), so
no request sees the key taken and then finds nothing there.

The claim is short-lived and the answer long-lived, rather than both 24 h: a process that dies
mid-request leaves a claim nobody will release, and with 24 h on it the client's retries would be
refused as "in flight" for a day. IN_FLIGHT_TTL is well past the longest a creating handler runs
(a gateway call is cut off at 15 s, each Redis call at 5 s), so a live request keeps its claim.
Should one outlive it all the same, the claim's random token fences what it does next: it stores
or releases only its own claim, never the claim of a request that took the key over since.

Bodies are compared by the SHA-256 of their raw bytes: the same JSON written differently is
another body. The key itself is never logged nor stored; the log line carries the start of the
key name's digest.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, Field, TypeAdapter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay import lua
from relay.api.context import STORE
from relay.errors import REDIS_DOWN, Conflict, InvalidInput

log = structlog.get_logger("relay.idempotency")

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
IDEMPOTENCY_TTL = timedelta(hours=24)
IN_FLIGHT_TTL = timedelta(minutes=2)
# Printable ASCII (space to tilde), 1 to 255 characters: a UUID, a ULID or any token a client makes.
KEY_PATTERN = r"^[\x20-\x7e]{1,255}$"
# What failing to write a record looks like (redis-py's errors, and the socket's own when Redis goes away).
STORE_FAILED = (RedisError, *REDIS_DOWN)
# The key's slot in the log line: enough of the key name's digest to find its record.
LOGGED_DIGEST = 12


class InFlight(BaseModel):
    state: Literal["in_flight"] = "in_flight"
    body: str
    token: str  # random: which request holds the claim, the only one that may store or release it


class Done(BaseModel):
    state: Literal["done"] = "done"
    body: str
    status: int
    content_type: str
    text: str


RECORD: TypeAdapter[InFlight | Done] = TypeAdapter(Annotated[InFlight | Done, Field(discriminator="state")])

Answer = Callable[[], Awaitable[web.Response]]


async def idempotent(request: web.Request, *, scope: str, answer: Answer) -> web.Response:
    """``answer()``, once per ``Idempotency-Key`` within ``scope`` (a client or project id) and the
    request's route; without the header, every time. Call it after the body is parsed (the scope
    is usually in it) and before anything is created."""
    key = idempotency_key(request)
    if key is None:
        return await answer()
    store = request.config_dict[STORE]
    name = store.keys.idempotency(scope, route_of(request), key)
    structlog.contextvars.bind_contextvars(idempotency_key=name.rpartition(":")[2][:LOGGED_DIGEST])
    return await Idempotency(store.redis).run(name, await request.read(), answer)


def idempotency_key(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key``, None without one; InvalidInput when it is not one
    header of 1 to 255 printable ASCII characters."""
    given = request.headers.getall(HEADER, [])
    if not given:
        return None
    if len(given) > 1:
        raise InvalidInput(f"send one {HEADER} header, not {len(given)}")
    if not re.fullmatch(KEY_PATTERN, given[0]):
        raise InvalidInput(f"{HEADER} must be 1 to 255 printable ASCII characters")
    return given[0]


def route_of(request: web.Request) -> str:
    """The route template the request matched (``/api/platform/public-items/purchase``), so a key
    reused on another route is another key."""
    resource = request.match_info.route.resource
    return request.path if resource is None else resource.canonical


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class Idempotency:
    """The records in Redis: claim a key, answer again from it, store the answer or let go."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._store_answer = redis.register_script(lua.source("idempotency_store"))
        self._release_claim = redis.register_script(lua.source("idempotency_release"))

    async def run(self, name: str, body: bytes, answer: Answer) -> web.Response:
        """``answer()`` under a claim on the record ``name``, or the record's first answer again,
        or Conflict."""
        claim = InFlight(body=body_digest(body), token=secrets.token_hex(16))
        earlier = await self.redis.set(name, claim.model_dump_json(), nx=True, get=True, ex=IN_FLIGHT_TTL)
        if earlier is not None:  # the key is taken: its record, unchanged
            return replay(RECORD.validate_json(earlier), claim.body)
        try:
            response = await answer()
        except BaseException:  # errors and cancellation alike: let go of the key, then re-raise
            await asyncio.shield(self._release(name, claim))
            raise
        if 200 <= response.status < 300:
            await asyncio.shield(self._store(name, claim, response))
        else:
            await asyncio.shield(self._release(name, claim))
        return response

    async def _store(self, name: str, claim: InFlight, response: web.Response) -> None:
        """Keep a 2xx answer for 24 h. Failing to is logged, not raised: what the handler created
        exists and the client should have its answer; the claim then expires and a retry creates again."""
        done = Done(
            body=claim.body,
            status=response.status,
            content_type=response.headers.get("Content-Type", "application/json"),
            text=response.text or "",
        )
        try:
            stored = await self._store_answer(
                keys=[name],
                args=[claim.model_dump_json(), done.model_dump_json(), int(IDEMPOTENCY_TTL.total_seconds())],
            )
        except STORE_FAILED as error:
            log.warning("idempotency_not_stored", error=type(error).__name__)
            return
        if not stored:
            log.warning("idempotency_claim_lost", reason="the claim expired before the answer")

    async def _release(self, name: str, claim: InFlight) -> None:
        """Delete the claim, so the client may retry with the same key. Failing to is logged,
        not raised, over the error being handled: the claim expires after IN_FLIGHT_TTL."""
        try:
            await self._release_claim(keys=[name], args=[claim.model_dump_json()])
        except STORE_FAILED as error:
            log.warning("idempotency_not_released", error=type(error).__name__)


def replay(record: InFlight | Done, digest: str) -> web.Response:
    """The stored answer again, or why there is none. Another body is told first: unlike "in
    flight", it stays true, so a client waiting it out would wait for nothing."""
    if record.body != digest:
        raise Conflict(f"this {HEADER} was used with another body")
    if isinstance(record, InFlight):
        raise Conflict(f"a request with this {HEADER} is still in flight")
    structlog.contextvars.bind_contextvars(idempotent_replayed=True)
    return web.Response(
        status=record.status,
        body=record.text.encode(),
        headers={"Content-Type": record.content_type, REPLAYED: "true"},
    )
