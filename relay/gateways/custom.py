"""Generic HMAC sources (``POST /callbacks/custom/{source}``), configured in RELAY_CUSTOM_SOURCES.

A source names the header carrying the signature, the HMAC algorithm (sha256 or sha512) and its
encoding (hex or base64). The signature covers the raw body, or ``{timestamp}.{body}`` when a
timestamp header is configured; that header holds unix seconds, which must be within ``tolerance``
seconds of the relay's clock, so a captured callback cannot be replayed later. Dotted JSON paths
("data.order.id"; a numeric part indexes a list) say where the order id, status, amount and
optional paid-at time (ISO 8601 with a zone, or unix seconds) and currency are, and ``statuses``
maps the source's status values to the relay's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, field_validator

from relay.errors import InvalidInput, VerificationError
from relay.gateways import GatewayDefaults
from relay.gateways.fields import (
    amount,
    currency,
    dig,
    header,
    mapped,
    paid_time,
    same,
    text,
    unix_or_iso_time,
    unix_time,
)
from relay.jsonutil import parse_object
from relay.models import PaymentOutcome, Purchase, PurchaseStatus, iso_z

ROUTE_PREFIX = "custom/"
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"
JSON_PATH = r"^[^.\s]{1,64}(\.[^.\s]{1,64}){0,15}$"
SourceName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
JsonPath = Annotated[str, Field(pattern=JSON_PATH)]
DIGESTS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


class SourcePaths(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: JsonPath
    status: JsonPath
    amount: JsonPath
    paid_at: JsonPath | None = None
    currency: JsonPath | None = None


class CustomSourceConfig(BaseModel):
    """One generic source, as RELAY_CUSTOM_SOURCES describes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: SecretStr
    header: str = Field(pattern=HEADER_NAME)
    algorithm: Literal["sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    timestamp_header: str | None = Field(default=None, pattern=HEADER_NAME)
    tolerance: int = Field(default=300, ge=1, le=86400)
    paths: SourcePaths
    statuses: dict[Annotated[str, Field(min_length=1, max_length=64)], PurchaseStatus] = Field(min_length=1)

    @field_validator("secret")
    @classmethod
    def _secret_length(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("secret must be at least 16 characters")
        return value


SOURCES = TypeAdapter(dict[SourceName, CustomSourceConfig])


def parse_sources(value: object) -> dict[str, CustomSourceConfig]:
    """RELAY_CUSTOM_SOURCES (JSON text, or a dict when Settings gets keywords) -> validated sources.
    Raises ValueError with one line naming what is wrong, never a secret's value."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("must be a JSON object {name: {secret, header, ...}}") from None
    try:
        return SOURCES.validate_python(value)
    except ValidationError as error:
        problems = []
        for problem in error.errors()[:3]:
            where = ".".join(str(part) for part in problem["loc"])
            message = problem["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else f"must be a JSON object: {message}")
        raise ValueError("; ".join(problems)) from None


def sign(config: CustomSourceConfig, body: bytes, timestamp: str | None) -> str:
    message = body if timestamp is None else timestamp.encode() + b"." + body
    mac = hmac.new(config.secret.get_secret_value().encode(), message, DIGESTS[config.algorithm]).digest()
    return mac.hex() if config.encoding == "hex" else base64.b64encode(mac).decode()


def _put(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        child = document.setdefault(part, {})
        if not isinstance(child, dict):
            raise InvalidInput(f"path {path!r} crosses another configured path")
        document = child
    document[last] = value


class CustomSource(GatewayDefaults):
    ok_body: dict[str, Any] = {"status": "ok"}

    def __init__(self, source: str, config: CustomSourceConfig, *, clock: Callable[[], datetime]) -> None:
        self.name = ROUTE_PREFIX + source
        self._config = config
        self._clock = clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        config = self._config
        given = header(headers, config.header)
        if not given:
            raise VerificationError(f"the {config.header} header is missing or unreadable")
        timestamp = None
        if config.timestamp_header is not None:
            timestamp = header(headers, config.timestamp_header)
            if not timestamp or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
                raise VerificationError(f"the {config.timestamp_header} header must be unix seconds")
        expected = sign(config, body, timestamp)
        given = given.strip().lower() if config.encoding == "hex" else given.strip()
        if not same(expected, given):
            raise VerificationError(f"{config.header} does not match the body")
        if timestamp is not None:
            skew = abs(self._clock() - unix_time(int(timestamp), config.timestamp_header or ""))
            if skew > timedelta(seconds=config.tolerance):
                raise VerificationError(
                    f"{config.timestamp_header} is more than {config.tolerance} s away from now"
                )
        return parse_object(body)

    def normalise(self, payload: dict[str, Any]) -> PaymentOutcome:
        paths = self._config.paths
        raw = dig(payload, paths.status)
        if isinstance(raw, bool) or not isinstance(raw, str | int) or not str(raw):
            raise InvalidInput(f"{paths.status} must be a string or an integer")
        raw_status = str(raw)[:64]
        status = mapped(self._config.statuses, raw_status, "status")
        paid_at = None
        if status is PurchaseStatus.PAID and paths.paid_at:
            paid_at = paid_time(dig(payload, paths.paid_at), paths.paid_at, unix_or_iso_time)
        return PaymentOutcome(
            gateway=self.name,
            order_id=text(payload, paths.order_id),
            status=status,
            amount=amount(dig(payload, paths.amount), paths.amount),
            paid_at=paid_at,
            raw_status=raw_status,
            currency=currency(dig(payload, paths.currency), paths.currency) if paths.currency else None,
        )

    def sandbox_callback(
        self, purchase: Purchase, status: PurchaseStatus, now: datetime
    ) -> tuple[bytes, dict[str, str]]:
        config = self._config
        raw = next((theirs for theirs, ours in config.statuses.items() if ours is status), None)
        if raw is None:
            raise InvalidInput(f"source {self.name} maps no status to {status.value}")
        document: dict[str, Any] = {}
        _put(document, config.paths.order_id, purchase.order_id)
        _put(document, config.paths.status, raw)
        _put(document, config.paths.amount, purchase.amount)
        if config.paths.currency:
            _put(document, config.paths.currency, purchase.currency)
        if config.paths.paid_at and status is PurchaseStatus.PAID:
            _put(document, config.paths.paid_at, iso_z(now))
        body = json.dumps(document).encode()
        headers = {"content-type": "application/json"}
        timestamp = None
        if config.timestamp_header is not None:
            timestamp = str(int(now.timestamp()))
            headers[config.timestamp_header] = timestamp
        headers[config.header] = sign(config, body, timestamp)
        return body, headers
