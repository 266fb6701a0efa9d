"""Reading requests: the body within its deadline, JSON bodies into models, query parameters.

Everything here turns what it cannot read into ``InvalidInput`` (400), ``RequestTimeout`` (408) or
``PayloadTooLarge`` (413), naming the field; the API and the console render those their own way.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from relay.errors import InvalidInput, PayloadTooLarge, RequestTimeout
from relay.jsonutil import parse_object
from relay.models import ID_PATTERN, WebhookStatus

ModelT = TypeVar("ModelT", bound=BaseModel)

ISO_EXAMPLE = "2026-05-06T10:00:00Z"


FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"


async def read_body(request: web.Request, *, deadline: float, limit: int) -> None:
    """Read the whole body up front, within ``deadline`` seconds: a client trickling its body
    (slowloris) is cut off instead of holding a handler. Handlers then get the body from aiohttp's
    cache. Over ``limit`` bytes is ``PayloadTooLarge``: at once when the declared Content-Length
    says so, without waiting for a byte of it. A form is decoded here too (aiohttp caches it for
    ``request.post()``), so one that is not text in its charset is a 400, not a handler's crash."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    try:
        if request.content.is_eof():  # all of it came with the headers: nothing to wait for
            await request.read()
        else:
            async with asyncio.timeout(deadline):
                await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {deadline:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"body is larger than {limit} bytes") from None
    if request.content_type in (FORM, MULTIPART):
        await _read_form(request)


async def _read_form(request: web.Request) -> None:
    if request.content_type == MULTIPART:  # the body is read already: aiohttp cannot stream it again
        raise InvalidInput(f"send forms as {FORM}, not {MULTIPART}")
    try:
        await request.post()
    except (ValueError, LookupError):  # not text in its charset (UnicodeDecodeError), no such charset
        raise InvalidInput(f"the form is not {(request.charset or 'utf-8')[:40]} text") from None


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
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise InvalidInput(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def required_query(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if not value:
        raise InvalidInput(f"query parameter {name} is required")
    return value


def parse_time(raw: str, *, name: str = "since") -> datetime:
    """An ISO 8601 instant ("2026-05-06T10:00:00Z", with or without fractions of a second or an
    offset; UTC when it has none)."""
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidInput(f"{name} must be an ISO 8601 time, e.g. {ISO_EXAMPLE}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_since(raw: str | None) -> datetime | None:
    return parse_time(raw) if raw and raw.strip() else None


def parse_webhook_status(raw: str | None) -> WebhookStatus | None:
    if not raw:
        return None
    try:
        return WebhookStatus(raw)
    except ValueError:
        choices = ", ".join(status.value for status in WebhookStatus)
        raise InvalidInput(f"webhook_status must be one of {choices}") from None


def parse_project_id(raw: str | None) -> str | None:
    """An optional project id filter: None when blank, InvalidInput when it cannot be an id."""
    project_id = (raw or "").strip() or None
    if project_id is not None and not re.fullmatch(ID_PATTERN, project_id):
        raise InvalidInput("project_id is not a project id")
    return project_id
