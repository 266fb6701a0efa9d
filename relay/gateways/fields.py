"""Reading gateway callbacks: headers, required fields, dotted paths, amounts and times.

Every helper turns what it cannot read into InvalidInput (400), naming the field, never the value
of a secret. Text that UTF-8 cannot carry (undecodable header bytes reach Python as lone
surrogates) is never a token, signature or order id. A gateway's own time of payment never makes
a correctly signed callback fail (``paid_time``): unreadable or implausible, it is logged and the
relay's clock stands in.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog

from relay.errors import InvalidInput
from relay.models import PurchaseStatus

log = structlog.get_logger("relay.gateways")

MAX_FIELD = 256
# A payment time outside these is not believed (year 1, year 9999): the relay's clock stands in.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
UNIX_DIGITS = 12


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup (aiohttp's headers already are; a plain dict is not). A value
    that is not UTF-8 counts as absent: no token, signature or timestamp is made of such bytes."""
    found = headers.get(name)
    if found is None:
        lowered = name.lower()
        found = next((value for key, value in headers.items() if key.lower() == lowered), None)
    return found if found is None or readable(found) else None


def readable(value: str) -> bool:
    """Whether UTF-8 can carry ``value``: no lone surrogates (what aiohttp makes of undecodable
    header bytes, and what a JSON ``"\\ud800"`` escape decodes to)."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def same(expected: str, given: str) -> bool:
    """Constant-time comparison of two secrets or signatures. ``surrogatepass`` encodes any string
    (lone surrogates too) and distinct strings distinctly, so nothing a client sends can raise."""
    return hmac.compare_digest(_bytes(expected), _bytes(given))


def _bytes(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def text(payload: Mapping[str, Any], path: str) -> str:
    """A required, non-empty string of at most 256 characters at a dotted ``path``."""
    value = dig(payload, path)
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD or not readable(value):
        raise InvalidInput(f"{path} must be a non-empty string")
    return value


def dig(payload: Any, path: str) -> Any:
    """The value at a dotted path ("data.order.id"; a numeric part indexes a list), None if absent."""
    current = payload
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.isascii() and part.isdigit() and int(part) < len(current):
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
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+07:00 is before year 1 in UTC
        raise InvalidInput(f"{field} {value[:40]!r} is out of range") from None


def unix_time(value: Any, field: str) -> datetime:
    """Unix seconds (a JSON integer, or a string of digits) in UTC."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= UNIX_DIGITS:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 10**11:
        raise InvalidInput(f"{field} must be unix seconds")
    return datetime.fromtimestamp(value, UTC)


def unix_or_iso_time(value: Any, field: str) -> datetime:
    """Unix seconds (an integer or a string of digits), else an ISO 8601 time with a zone."""
    digits = isinstance(value, int) or (isinstance(value, str) and value.isascii() and value.isdigit())
    return unix_time(value, field) if digits else iso_time(value, field)


def paid_time(value: Any, field: str, parse: Callable[[Any, str], datetime]) -> datetime | None:
    """When the gateway says the payment happened, or None: when it does not say, or says something
    ``parse`` cannot read or outside [2000, 2100). A gateway's own clock never makes a correctly
    signed callback fail: the relay's clock stands in, and the ignored value is logged."""
    if value is None or value == "":
        return None
    try:
        moment = parse(value, field)
    except InvalidInput as error:
        log.warning("gateway_time_ignored", field=field, reason=error.detail)
        return None
    if not EARLIEST <= moment < LATEST:
        log.warning("gateway_time_ignored", field=field, reason=f"{moment.isoformat()} is implausible")
        return None
    return moment


def currency(value: Any, field: str) -> str | None:
    """The currency a callback states ("IDR"), None when it states none; the ingest script refuses
    one that is not the purchase's."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 16 or not readable(value):
        raise InvalidInput(f"{field} must be a currency code such as IDR")
    return value.strip()


def mapped(table: Mapping[str, PurchaseStatus], raw: str, field: str) -> PurchaseStatus:
    """The relay status a gateway's ``raw`` status stands for; InvalidInput for one it does not know."""
    status = table.get(raw)
    if status is None:
        raise InvalidInput(f"unknown {field} {raw[:40]!r}")
    return status
