"""Request ids, the canonical request log line, admin auth, and errors as JSON responses."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError
from redis.exceptions import ResponseError

from relay.api.context import SETTINGS
from relay.connections import REDIS_DOWN as REDIS_DOWN  # re-exported for the console
from relay.connections import store_refused
from relay.errors import (
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RelayError,
    RequestTimeout,
    StoreUnavailable,
    Unauthorized,
)
from relay.jsonutil import parse_object
from relay.settings import Settings

log = structlog.get_logger("relay.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ModelT = TypeVar("ModelT", bound=BaseModel)
HTTP_ERROR_NAMES = {404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}


def error_response(error: RelayError) -> web.Response:
    body = {"error": type(error).__name__, "detail": error.detail}
    return web.json_response(body, status=error.status, headers=error.headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id, turn every error into JSON, and write one log line per request."""
    request_id = request.headers.get("x-request-id", "")[:64] or os.urandom(16).hex()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    try:
        response = await _handle(request, handler)
        response.headers["x-request-id"] = request_id
        error_name = _error_name(response) if response.status >= 400 else None
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=response.status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            error=error_name,
        )
        return response
    finally:
        structlog.contextvars.clear_contextvars()


async def _handle(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.body_exists:
            await _read_body(request)
        return await handler(request)
    except RelayError as error:
        return error_response(error)
    except REDIS_DOWN as error:
        log.warning("store_unavailable", error=type(error).__name__)
        return error_response(StoreUnavailable("the store is unavailable; retry later"))
    except ResponseError as error:
        if not store_refused(error):
            return internal_error()
        log.warning("store_refused", reply=str(error)[:80])
        return error_response(StoreUnavailable("the store refuses writes for now; retry later"))
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes
        return error_response(PayloadTooLarge(f"body is larger than {limit} bytes"))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        name = HTTP_ERROR_NAMES.get(error.status, "HTTPError")
        detail = "no such route" if error.status == 404 else error.reason
        return web.json_response({"error": name, "detail": detail}, status=error.status)
    except Exception:
        return internal_error()


def internal_error() -> web.Response:
    """The edge of the app: a bug must still answer JSON, and be logged with its traceback."""
    log.exception("unhandled_error")
    return web.json_response({"error": "InternalError", "detail": "an internal error occurred"}, status=500)


async def _read_body(request: web.Request) -> None:
    """Read the whole body up front, within a deadline: a client trickling its body (slowloris)
    is cut off instead of holding a handler. Handlers then get the body from aiohttp's cache."""
    if request.content.is_eof():  # all of it came with the headers: nothing to wait for
        await request.read()
        return
    deadline = request.app[SETTINGS].body_timeout
    try:
        async with asyncio.timeout(deadline):
            await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {deadline:g} s") from None


def _error_name(response: web.StreamResponse) -> str | None:
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return None
    try:
        body = json.loads(response.body)
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


def admin_token_matches(settings: Settings, given: str) -> bool:
    """Whether ``given`` is RELAY_ADMIN_TOKEN, compared in constant time; never when it is unset."""
    token = settings.admin_token
    expected = token.get_secret_value() if token else ""
    return hmac.compare_digest(given.encode(), expected.encode()) and bool(expected)


def admin_only(handler: Handler) -> Handler:
    """Require ``Authorization: Bearer <RELAY_ADMIN_TOKEN>``, compared in constant time."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        matches = admin_token_matches(request.app[SETTINGS], value.strip())
        if not matches or scheme.lower() != "bearer":
            raise Unauthorized("missing or wrong bearer token")
        return await handler(request)

    return wrapped


async def read_model(request: web.Request, model: type[ModelT]) -> ModelT:
    return parse(model, parse_object(await request.read()))


def parse(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidInput(describe(error)) from None


def describe(error: ValidationError) -> str:
    parts = []
    for problem in error.errors()[:5]:
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        message = problem["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def query_int(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidInput(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def required_query(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if not value:
        raise InvalidInput(f"query parameter {name} is required")
    return value


def not_found(kind: str, key: str) -> NotFound:
    return NotFound(f"{kind} {key[:80]!r} does not exist")
