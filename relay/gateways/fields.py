"""Reading gateway callbacks: headers, required fields, dotted paths, amounts and times.

Every helper turns what it cannot read into InvalidInput (400), naming the field, never the value
of a secret.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from relay.errors import InvalidInput
from relay.models import PurchaseStatus

MAX_FIELD = 256


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup (aiohttp's headers already are; a plain dict is not)."""
    found = headers.get(name)
    if found is not None:
        return found
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)


def same(expected: str, given: str) -> bool:
    """Constant-time comparison of two secrets or signatures."""
    return hmac.compare_digest(expected.encode(), given.encode())


def text(payload: Mapping[str, Any], path: str) -> str:
    """A required, non-empty string of at most 256 characters at a dotted ``path``."""
    value = dig(payload, path)
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
        raise InvalidInput(f"{path} must be a non-empty string")
    return value


def dig(payload: Any, path: str) -> Any:
    """The value at a dotted path ("data.order.id"; a numeric part indexes a list), None if absent."""
    current = payload
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def amount(value: Any, field: str) -> Decimal:
    """A JSON number or a numeric string as a finite Decimal."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"{field} must be a number")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidInput(f"{field} must be a number") from None
    if not number.is_finite():
        raise InvalidInput(f"{field} must be a number")
    return number


def iso_time(value: Any, field: str) -> datetime:
    """An ISO 8601 time with a zone ("2020-01-14T02:32:50.912Z"), in UTC."""
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidInput(f"{field} must be an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{field} {value[:40]!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{field} {value[:40]!r} has no time zone")
    return moment.astimezone(UTC)


def unix_time(value: Any, field: str) -> datetime:
    """Unix seconds (a JSON integer, or a string of digits) in UTC."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 10**11:
        raise InvalidInput(f"{field} must be unix seconds")
    return datetime.fromtimestamp(value, UTC)


def mapped(table: Mapping[str, PurchaseStatus], raw: str, field: str) -> PurchaseStatus:
    """The relay status a gateway's ``raw`` status stands for; InvalidInput for one it does not know."""
    status = table.get(raw)
    if status is None:
        raise InvalidInput(f"unknown {field} {raw[:40]!r}")
    return status
