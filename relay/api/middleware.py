"""The ingress's one middleware: a request id, the canonical log line of every request, the edge's
own refusals, and the JSON API's errors as ``{"error": ClassName, "detail": ...}``.

- The request id is the client's ``X-Request-Id`` when it has a safe shape (1-64 of
  ``A-Za-z0-9._-``), else a generated one; it is bound for every log line and sent back.
- The canonical line (``request``: method, path, status, duration, error) is written for every
  request whatever happens: an answer, a redirect, the handler raising past everything, the client
  going away, or a bound field that the log renderer cannot write (then every value is escaped).
- A raw path that percent-encodes a character needing no encoding (``/%6detrics``) would reach the
  route it disguises, since the router matches the decoded path: it matches nothing here (404).
- Request bodies held at once are bounded per process (``BodyBudget``): past the budget a request
  is refused at once with 503 ``Overloaded`` and ``Retry-After``. A response given before its
  request's body arrived (413 on the declared Content-Length, 503, 408) closes the connection
  instead of reading the rest.

What an exception means to a client is ``relay.errors.classify``'s answer; this renders it as JSON.
A sub-application (the console, under ``/console``) reads its own body and renders its own errors,
as HTML, from the same classification; its requests still get their id, log line and budget here.
The edge's own refusals (a disguised path, an exhausted budget) come before any of that, so they
are JSON under ``/console`` too.
"""

from __future__ import annotations

import asyncio
import os
import re
import string
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from relay.api.clients import client_address, limit_key
from relay.api.context import METRICS, REPLICAS, SETTINGS
from relay.api.parsing import read_body
from relay.errors import NotFound, Overloaded, RelayError, classify, report
from relay.metrics import UNMATCHED

log = structlog.get_logger("relay.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The error class a response answers with, for the request's log line (set by whichever renders it).
ERROR_NAME = web.ResponseKey("error_name", str)

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# RFC 3986's unreserved characters, which no URI producer should encode (encoded, they are the same
# URI), and "/": every character of this relay's route templates is one of them, so an encoded one
# can only disguise a route, and no id here holds one. (Sub-delims such as "," may be encoded.)
NEEDS_NO_ENCODING = frozenset(string.ascii_letters + string.digits + "-._~/")
ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
# Request bodies one process holds at once, in RELAY_MAX_BODY_BYTES: 16 MiB at the default 64 KiB.
IN_FLIGHT_BODIES = 256
# One source address may hold at most this fraction of the budget (BodyBudget).
ADDRESS_SHARE = 16
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CLIENT_GONE = 499  # nginx's "client closed request": the status the line gives a cancelled request


class BodyBudget:
    """The request body bytes this process may hold at once. A request with a body reserves its
    declared Content-Length (the most a body may be, when it declares none) before the body is
    read, and gives it back once answered: thousands of connections each holding a body just
    under the limit cannot grow memory past the budget. One source address may hold at most a
    sixteenth of it, so one client idling on declared bodies cannot refuse everyone else's
    requests (gateway callbacks included)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.per_address = limit // ADDRESS_SHARE
        self.used = 0
        self._by_address: dict[str, int] = {}

    @classmethod
    def for_max_body(cls, max_body_bytes: int) -> BodyBudget:
        return cls(IN_FLIGHT_BODIES * max_body_bytes)

    def reserve(self, size: int, address: str = "") -> bool:
        held = self._by_address.get(address, 0)
        if self.used + size > self.limit or held + size > self.per_address:
            return False
        self.used += size
        self._by_address[address] = held + size
        return True

    def release(self, size: int, address: str = "") -> None:
        self.used -= size
        held = self._by_address.pop(address, 0) - size
        if held > 0:
            self._by_address[address] = held


BODY_BUDGET = web.AppKey("body_budget", BodyBudget)


def error_response(error: RelayError) -> web.Response:
    body = {"error": type(error).__name__, "detail": error.detail}
    response = web.json_response(body, status=error.status, headers=error.headers)
    response[ERROR_NAME] = type(error).__name__
    return response


PORTAL = re.compile(r"/+portal/+", re.IGNORECASE)


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id, answer errors as JSON (the root app's routes), and write one log line."""
    request_id = request_id_of(request)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    # What the line says if nothing below answers (the handler raised past everything).
    status: int = 500
    error: str | None = "InternalError"
    try:
        try:
            response = await _answer(request, handler)
        except web.HTTPException as passing:  # a redirect (errors were answers above)
            passing.headers["x-request-id"] = request_id
            status, error = passing.status, type(passing).__name__ if passing.status >= 400 else None
            raise
        response.headers["x-request-id"] = request_id
        if request.body_exists and not request.content.is_eof():
            response.force_close()  # answered before the body arrived: do not wait for the rest
        status, error = response.status, response.get(ERROR_NAME)
        return response
    except asyncio.CancelledError:
        status, error = CLIENT_GONE, "Cancelled"
        raise
    finally:
        seconds = time.perf_counter() - started
        request.config_dict[METRICS].http_request(route_of(request), request.method, status, seconds)
        _request_line(request, status=status, error=error, seconds=seconds)
        structlog.contextvars.clear_contextvars()


def route_of(request: web.Request) -> str:
    """The template of the route that answered (``/console/projects/{project_id}``): a bounded
    label, never the path itself."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else UNMATCHED


def request_id_of(request: web.Request) -> str:
    """The client's X-Request-Id when it has a safe shape, else a new random one."""
    given = request.headers.get("x-request-id")
    return given if given is not None and REQUEST_ID.fullmatch(given) else os.urandom(16).hex()


def disguised(raw_path: str) -> bool:
    """Whether a raw request target's path percent-encodes a character that needs no encoding."""
    path = raw_path.partition("?")[0]
    return "%" in path and any(chr(int(code, 16)) in NEEDS_NO_ENCODING for code in ESCAPE.findall(path))


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    if disguised(request.raw_path):
        return error_response(NotFound("no such route"))
    size = _body_size(request)
    budget = request.config_dict[BODY_BUDGET]
    address = (
        limit_key(client_address(request, request.config_dict[SETTINGS].trusted_proxies)) if size else ""
    )
    if not budget.reserve(size, address):  # the request's line says Overloaded: no second line per refusal
        return error_response(Overloaded("too many request bodies in flight; retry shortly"))
    try:
        if len(request.match_info.apps) > 1:  # a sub-application's route: it renders its own errors
            return await handler(request)
        return await answered(request, handler, error_response, log)
    finally:
        budget.release(size, address)


def _body_size(request: web.Request) -> int:
    """What a request's body may hold: nothing, its declared length, or at most the limit."""
    if not request.body_exists:
        return 0
    limit = request.config_dict[SETTINGS].max_body_bytes
    declared = request.content_length
    return limit if declared is None else min(declared, limit)


async def answered(
    request: web.Request,
    handler: Handler,
    render: Callable[[RelayError], web.Response],
    log: structlog.typing.FilteringBoundLogger,
) -> web.StreamResponse:
    """The handler's response, its request's body read first (``read_body``); any error, the
    body's or the handler's, rendered by ``render`` as ``classify`` says it means (and reported
    on ``log``). A redirect, an ``HTTPException`` under 400, passes through raised. The JSON API
    renders with ``error_response``, the console with its HTML error page."""
    try:
        if request.body_exists:
            settings = request.config_dict[SETTINGS]
            await read_body(request, deadline=settings.body_timeout, limit=settings.max_body_bytes)
        try:
            response = await handler(request)
        except web.HTTPException as passing:
            if passing.status < 400:  # a redirect after a form: it acknowledges the form's writes
                await confirmed(request)
            raise
        if response.status < 400:
            await confirmed(request)
        return response
    except web.HTTPException as error:
        if error.status < 400:  # a redirect, not an error
            raise
        return render(classify(error))
    except Exception as error:  # the edge: everything becomes an answer
        classified = classify(error)
        report(error, classified, log)
        return render(classified)


async def confirmed(request: web.Request) -> None:
    """Before a request that may have written is acknowledged (any method but GET, HEAD and
    OPTIONS, answered below 400): its writes, and every write before them, confirmed by
    RELAY_REDIS_MIN_REPLICAS_ACK replicas (``relay.replicas``); ``StoreUnavailable`` (503) else."""
    if request.method not in SAFE_METHODS:
        await request.config_dict[REPLICAS].confirm()


def logged_path(path: str) -> str:
    """A path as the log shows it: a portal link's token is a credential, so only its first
    characters (the start of its unsigned payload) are written, however the path is spelt."""
    found = PORTAL.match(path)
    if found is None:
        return path
    token, slash, rest = path[found.end() :].partition("/")
    return f"{found.group()}{token[:8]}…{slash}{rest}"


def _request_line(request: web.Request, *, status: int, error: str | None, seconds: float) -> None:
    fields: dict[str, Any] = {
        "method": request.method,
        "path": logged_path(request.path),
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "error": error,
    }
    try:
        log.info("request", **fields)
    except (TypeError, ValueError):  # a value the renderer cannot write (orjson: a lone surrogate)
        bound = {key: _escaped(value) for key, value in structlog.contextvars.get_contextvars().items()}
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**bound)
        log.info("request", **{key: _escaped(value) for key, value in fields.items()}, escaped=True)


def _escaped(value: object) -> object:
    """``value`` as something any renderer writes: strings with undecodable parts escaped."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "backslashreplace").decode()
