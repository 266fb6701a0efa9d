"""The domain's records, validated by pydantic on the way into and out of Redis and the API."""

from __future__ import annotations

import os
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FieldSerializationInfo,
    StrictInt,
    field_serializer,
)

from relay.jsonutil import dumps

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s.]{2,63}$")
MAX_METADATA_BYTES = 4096


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_z(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, second precision: the event's ``paid_at`` format."""
    return moment.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def iso_ms(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, millisecond precision: stored and API timestamps."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_ms(moment: datetime) -> int:
    """Unix milliseconds: the score of every time-ordered Redis set."""
    return int(moment.timestamp() * 1000)


def new_id() -> str:
    return str(uuid.uuid4())


def new_client_id() -> str:
    return "cl_" + secrets.token_hex(12)


def new_order_id(item_id: str) -> str:
    return f"item-{item_id[:8]}-{secrets.token_hex(4)}"


def new_event_id() -> str:
    """``evt_`` and 128 random bits in hex (the form of a uuid4's hex, at a fifth of its cost)."""
    return "evt_" + os.urandom(16).hex()


def _webhook_url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"}:
        raise ValueError("webhook_url must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("webhook_url must name a host")
    if parts.username or parts.password:
        raise ValueError("webhook_url must not carry credentials")
    if len(value) > 2048:
        raise ValueError("webhook_url is longer than 2048 characters")
    return value


def _currency(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{3}", value):
        raise ValueError("currency must be a 3-letter ISO 4217 code such as IDR")
    return value.upper()


def _email(value: str) -> str:
    if not EMAIL_RE.match(value):
        raise ValueError("buyer_email is not an email address")
    return value


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    if len(dumps(value)) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes of JSON")
    return value


WebhookUrl = Annotated[str | None, AfterValidator(_webhook_url)]
Currency = Annotated[str, AfterValidator(_currency)]
Amount = Annotated[StrictInt, Field(gt=0, le=10**15)]
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]
Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]


class PurchaseStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    FAILED = "failed"
    EXPIRED = "expired"
    REFUNDED = "refunded"


# Statuses only move up this ladder; failed and expired share a rung. A settlement that arrives
# after an expiry still wins (the money arrived), a late pending never un-pays, refunds are final.
# The ingest script (relay/lua/ingest.lua) is loaded with this table.
RANK = {
    PurchaseStatus.PENDING: 0,
    PurchaseStatus.FAILED: 1,
    PurchaseStatus.EXPIRED: 1,
    PurchaseStatus.PAID: 2,
    PurchaseStatus.REFUNDED: 3,
}


class WebhookStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"
    NO_ENDPOINT = "no_endpoint"


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_serializer("*", when_used="json", check_fields=False)
    def _dates(self, value: Any, info: FieldSerializationInfo) -> Any:
        """Times as UTC with ``Z``; ``paid_at`` to the second, as in the event body."""
        if not isinstance(value, datetime):
            return value
        return iso_z(value) if info.field_name == "paid_at" else iso_ms(value)


class Project(Record):
    id: Identifier
    name: str = Field(min_length=1, max_length=200)
    webhook_url: WebhookUrl = None
    client_id: str
    webhook_secret: str
    previous_webhook_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    created_at: datetime
    updated_at: datetime

    def signing_secrets(self, now: datetime) -> list[str]:
        """The current secret, plus the previous one during its 24 h grace period."""
        found = [self.webhook_secret]
        expires = self.previous_secret_expires_at
        if self.previous_webhook_secret and expires and now < expires:
            found.append(self.previous_webhook_secret)
        return found

    def public_view(self) -> dict[str, Any]:
        return self.model_dump(
            mode="json", exclude={"webhook_secret", "previous_webhook_secret", "previous_secret_expires_at"}
        )


class Item(Record):
    id: Identifier
    project_id: Identifier
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    price: Amount
    currency: Currency = "IDR"
    webhook_url: WebhookUrl = None
    created_at: datetime
    updated_at: datetime

    def public_view(self) -> dict[str, Any]:
        return self.model_dump(mode="json", include={"id", "name", "description", "price", "currency"})


class Attempt(Record):
    at: datetime
    url: str | None
    status_code: int | None = None
    error: str | None = None
    duration_ms: int
    next_attempt_at: datetime | None = None


class Purchase(Record):
    order_id: str
    item_id: str
    project_id: str
    item_name: str
    amount: int
    currency: str
    buyer_email: str
    buyer_name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    gateway: str = "midtrans"
    status: PurchaseStatus = PurchaseStatus.PENDING
    paid_at: datetime | None = None
    webhook_status: WebhookStatus | None = None
    event_id: str | None = None
    created_at: datetime
    updated_at: datetime


class ItemPurchasedEvent(BaseModel):
    """The webhook body, exactly these keys in this order (DESIGN.md, "The event")."""

    model_config = ConfigDict(extra="forbid")

    event: str = "item.purchased"
    order_id: str
    item_id: str
    item_name: str
    buyer_email: str
    buyer_name: str | None
    amount: int
    currency: str
    paid_at: str
    metadata: dict[str, Any]


PAID_AT_SLOT = ',"paid_at":""'


def event_body_parts(purchase: Purchase) -> tuple[str, str]:
    """The purchase's ``item.purchased`` body before and after its ``paid_at`` value, so that
    ``head + iso_z(paid_at) + tail`` is the body ``ItemPurchasedEvent`` makes. Stored with the
    purchase, they let the ingest script write the event without the purchase leaving Redis."""
    body = ItemPurchasedEvent(
        order_id=purchase.order_id,
        item_id=purchase.item_id,
        item_name=purchase.item_name,
        buyer_email=purchase.buyer_email,
        buyer_name=purchase.buyer_name,
        amount=purchase.amount,
        currency=purchase.currency,
        paid_at="",
        metadata=purchase.metadata,
    ).model_dump_json()
    # The first match is the top-level key: every value before it is a number, null, or a string
    # whose quotes are escaped.
    head, slot, tail = body.partition(PAID_AT_SLOT)
    assert slot, body
    return head + ',"paid_at":"', '"' + tail


class EventRecord(Record):
    """An event and its delivery state; ``body`` is the exact signed JSON, fixed at creation."""

    id: str
    project_id: str
    order_id: str
    item_id: str
    body: str
    state: WebhookStatus = WebhookStatus.PENDING
    seq: int = 0
    attempts: int = 0
    created_at: datetime
    next_attempt_at: datetime | None = None
    dead_at: datetime | None = None


@dataclass(frozen=True)
class PaymentOutcome:
    """What a gateway says happened to one order, in the relay's terms (``relay.gateways``)."""

    gateway: str
    order_id: str
    status: PurchaseStatus
    amount: Decimal
    paid_at: datetime | None
    raw_status: str
    reference: str | None = None
    # "exact": the amount must equal the purchase amount; "at_least": it may exceed it (Xendit's
    # paid_amount includes fees the buyer chose to pay). Checked by the ingest script (relay/lua).
    amount_rule: Literal["exact", "at_least"] = "exact"


class DeadLetter(BaseModel):
    """One row of the dead-letter queue as the admin API, the console and the CLI show it."""

    model_config = ConfigDict(extra="forbid")

    event_id: str
    project_id: str
    order_id: str
    item_id: str
    attempts: int
    created_at: str
    dead_at: str | None
    last_attempt: Attempt | None


# --- API input --------------------------------------------------------------------------------


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ProjectIn(Input):
    id: Identifier | None = None
    name: str = Field(min_length=1, max_length=200)
    webhook_url: WebhookUrl = None


class ItemIn(Input):
    id: Identifier | None = None
    project_id: Identifier
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    price: Amount
    currency: Currency = "IDR"
    webhook_url: WebhookUrl = None


class PurchaseIn(Input):
    client_id: str = Field(min_length=1, max_length=100)
    item_id: Identifier
    buyer_email: Email
    buyer_name: str | None = Field(default=None, max_length=200)
    amount: Amount | None = None
    metadata: Metadata = Field(default_factory=dict)
    gateway: str | None = Field(default=None, min_length=1, max_length=64)
