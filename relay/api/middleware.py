"""The ingress's one middleware: a request id, the canonical log line of every request, and the JSON
API's errors as ``{"error": ClassName, "detail": ...}``.

What an exception means to a client is ``relay.errors.classify``'s answer; this renders it as JSON.
A sub-application (the console, under ``/console``) reads its own body and renders its own errors,
as HTML, from the same classification; its requests still get their id and log line here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from relay.api.context import SETTINGS
from relay.api.parsing import read_body
from relay.errors import RelayError, classify, report

log = structlog.get_logger("relay.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The error class a response answers with, for the request's log line (set by whichever renders it).
ERROR_NAME = web.ResponseKey("error_name", str)


def error_response(error: RelayError) -> web.Response:
    body = {"error": type(error).__name__, "detail": error.detail}
    response = web.json_response(body, status=error.status, headers=error.headers)
    response[ERROR_NAME] = type(error).__name__
    return response


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id, answer errors as JSON (the root app's routes), and write one log line."""
    request_id = request.headers.get("x-request-id", "")[:64] or os.urandom(16).hex()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    try:
        if len(request.match_info.apps) > 1:  # a sub-application's route: it renders its own errors
            response = await handler(request)
        else:
            response = await _json_errors(request, handler)
        response.headers["x-request-id"] = request_id
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=response.status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            error=response.get(ERROR_NAME),
        )
        return response
    finally:
        structlog.contextvars.clear_contextvars()


async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.body_exists:
            settings = request.app[SETTINGS]
            await read_body(request, deadline=settings.body_timeout, limit=settings.max_body_bytes)
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:  # a redirect, not an error
            raise
        return error_response(classify(error))
    except Exception as error:  # the edge of the API: everything becomes an answer
        classified = classify(error)
        report(error, classified, log)
        return error_response(classified)
