"""The domain's records, validated by pydantic on the way into and out of Redis and the API."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import regex
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FieldSerializationInfo,
    StrictInt,
    field_serializer,
    model_validator,
)
from pydantic_core import PydanticSerializationError

from relay.event_body import metadata_json
from relay.periods import Interval

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# A merchant's own order id (a shop payment's): DESIGN.md's 1-64 of A-Za-z0-9._-
MERCHANT_ORDER_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
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


ORDER_ID_RANDOM_BYTES = 8


def new_order_id(item_id: str) -> str:
    """``item-<first 8 of the item id>-<16 random hex>``: 64 random bits, so ids do not collide in
    practice; the store still creates a purchase only when its id is new (create_purchase.lua)."""
    return f"item-{item_id[:8]}-{secrets.token_hex(ORDER_ID_RANDOM_BYTES)}"


def new_payment_order_id() -> str:
    """The order id the gateway sees for a shop payment: ``pay-`` and 96 random bits. Drawn, not
    derived from the merchant's order id: a merchant id used again once retention deleted its
    payment makes a new gateway order, which no notification of the old one can pay."""
    return f"pay-{secrets.token_hex(12)}"


def new_subscription_order_id(subscription_id: str) -> str:
    """A subscription's first invoice: ``sub-<first 8 of the subscription's hex>-<16 random hex>``."""
    return f"sub-{subscription_id.removeprefix('sub_')[:8]}-{secrets.token_hex(ORDER_ID_RANDOM_BYTES)}"


def renewal_order_id(subscription_id: str, period_start: datetime) -> str:
    """A renewal's invoice, one per subscription and period: drawn again (a sweep that died, an
    invoice API that failed) it is the same order, never a second one."""
    digest = hashlib.sha256(f"{subscription_id}\n{iso_z(period_start)}".encode()).hexdigest()
    return f"sub-{subscription_id.removeprefix('sub_')[:8]}-{digest[:16]}"


def new_subscription_id() -> str:
    return "sub_" + secrets.token_hex(12)


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
    try:
        size = len(metadata_json(value).encode())  # UTF-8 bytes, as stored and as sent
    except PydanticSerializationError:  # nested too deeply, or a string UTF-8 cannot encode
        raise ValueError("metadata cannot be written as JSON (nested too deeply, or not UTF-8)") from None
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes of UTF-8 JSON")
    return value


def _utc_when_naive(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


WebhookUrl = Annotated[str | None, AfterValidator(_webhook_url)]
# A time filter: any ISO 8601 instant, UTC when it names no offset.
Instant = Annotated[datetime, AfterValidator(_utc_when_naive)]
Currency = Annotated[str, AfterValidator(_currency)]
Amount = Annotated[StrictInt, Field(gt=0, le=10**15)]
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]
Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]


PUBLIC_ITEM_FIELDS = (
    *("id", "name", "description", "price", "currency", "amount_min", "amount_max", "amount_step"),
    *("sku", "category_id", "required_fields"),
)


class PurchaseStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    FAILED = "failed"
    EXPIRED = "expired"
    REFUNDED = "refunded"


# Statuses only move up this ladder; failed and expired share a rung. A settlement that arrives
# after an expiry still wins (the money arrived), a late pending never un-pays, refunds are final.
# One exception to "only up": the first settlement of a purchase writes its item.purchased event
# even when a refund or chargeback came first (reordered callbacks); the status stays refunded.
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


# Times written to the second, as the event bodies write them.
SECOND_FIELDS = frozenset(
    {"paid_at", "period_start", "period_end", "current_period_start", "current_period_end", "anchor"}
)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_serializer("*", when_used="json", check_fields=False)
    def _dates(self, value: Any, info: FieldSerializationInfo) -> Any:
        """Times as UTC with ``Z``; ``paid_at`` and periods to the second, as in the event body."""
        if not isinstance(value, datetime):
            return value
        return iso_z(value) if info.field_name in SECOND_FIELDS else iso_ms(value)


MAX_RETIRED_SECRETS = 4  # replaced secrets that keep signing next to the current one


class RetiredSecret(Record):
    """A replaced signing secret: it keeps signing, next to the current one, until ``expires_at``."""

    secret: str
    expires_at: datetime


class Project(Record):
    id: Identifier
    name: str = Field(min_length=1, max_length=200)
    webhook_url: WebhookUrl = None
    client_id: str
    webhook_secret: str
    # Every secret replaced in the last 24 h, newest first: each signs for its own full grace
    # period, however often the secret is rotated in between.
    previous_secrets: list[RetiredSecret] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime

    def signing_secrets(self, now: datetime) -> list[str]:
        """The current secret, then every replaced one still within its grace period."""
        return [self.webhook_secret, *(old.secret for old in self.previous_secrets if now < old.expires_at)]

    def rotated(self, new_secret: str, *, now: datetime, grace: timedelta) -> Project:
        """The project signing with ``new_secret``; the current secret keeps signing for ``grace``,
        and so does every earlier one for the rest of its own grace (expired ones are dropped), the
        newest MAX_RETIRED_SECRETS of them: every one signs every webhook, so unbounded they would
        grow the signature header past what endpoints accept."""
        retired = RetiredSecret(secret=self.webhook_secret, expires_at=now + grace)
        kept = [old for old in self.previous_secrets if now < old.expires_at][: MAX_RETIRED_SECRETS - 1]
        return self.model_copy(
            update={"webhook_secret": new_secret, "previous_secrets": [retired, *kept], "updated_at": now}
        )

    def public_view(self) -> dict[str, Any]:
        """What the API shows: never a secret (the new one is added by rotate and create alone)."""
        return self.model_dump(mode="json", exclude={"webhook_secret", "previous_secrets"})


class ItemStatus(StrEnum):
    """Only a published item is listed to buyers and sold; an archived one keeps its orders."""

    DRAFT = "draft"
    PUBLISHED = "published"
    ARCHIVED = "archived"


def _pattern(value: str | None) -> str | None:
    if value is not None:
        if len(value) > 200:
            raise ValueError("pattern is longer than 200 characters")
        try:
            compiled_pattern(value)
        except Exception as error:  # regex.error, and what a pathological pattern raises
            raise ValueError(f"pattern is not a regular expression: {error}") from None
    return value


@functools.lru_cache(maxsize=4096)
def compiled_pattern(pattern: str) -> regex.Pattern[str]:
    """A merchant's buyer-field pattern, compiled once per process: stored items are validated,
    their patterns with them, on every read (the public catalogue)."""
    return regex.compile(pattern)


class RequiredField(BaseModel):
    """What a buyer must give to buy an item (a game's user id): checked at purchase, delivered in
    the event's ``metadata.fields``."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    label: str = Field(min_length=1, max_length=100)
    required: bool = True
    pattern: Annotated[str | None, AfterValidator(_pattern)] = Field(default=None, max_length=200)


class Category(Record):
    """A shelf of a project's catalogue; ``parent_id`` nests it in another of the same project."""

    id: Identifier
    project_id: Identifier
    name: str = Field(min_length=1, max_length=200)
    parent_id: Identifier | None = None
    sort_order: int = Field(default=0, ge=-(10**6), le=10**6)
    created_at: datetime
    updated_at: datetime


StockCount = Annotated[StrictInt, Field(ge=0, le=10**9)]
RequiredFields = Annotated[list[RequiredField], Field(max_length=20)]


class Item(Record):
    id: Identifier
    project_id: Identifier
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    price: Amount
    currency: Currency = "IDR"
    # Bounds of a buyer-chosen ``amount`` (the whole amount paid). None: the price (so a buyer never
    # pays less than the price unless the item allows it), and no upper bound; ``amount_step``: the
    # amount is ``amount_min`` plus a multiple of it.
    amount_min: Amount | None = None
    amount_max: Amount | None = None
    amount_step: Amount | None = None
    webhook_url: WebhookUrl = None
    sku: str | None = Field(default=None, min_length=1, max_length=64)
    category_id: Identifier | None = None
    status: ItemStatus = ItemStatus.PUBLISHED
    # Units left to sell (reserved ones are not left); None: unlimited. Redis keeps the live count
    # (relay.catalogue); this is what it was set to.
    stock: StockCount | None = None
    required_fields: RequiredFields = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="after")
    def _bounds_hold_the_price(self) -> Item:
        """The price is the amount of a purchase that names none, so it must lie within the bounds;
        ``amount_min`` below the price is a choice (donations)."""
        if self.amount_min is not None and self.amount_min > self.price:
            raise ValueError(f"amount_min {self.amount_min} is above the price {self.price}")
        if self.amount_max is not None and self.amount_max < self.price:
            raise ValueError(f"amount_max {self.amount_max} is below the price {self.price}")
        return self

    @property
    def lowest_amount(self) -> int:
        return self.price if self.amount_min is None else self.amount_min

    def amount_problem(self, amount: int) -> str | None:
        """Why a buyer may not pay ``amount`` for this item, naming the bound; None when allowed."""
        if amount < self.lowest_amount:
            return f"amount {amount} is below this item's amount_min {self.lowest_amount}"
        if self.amount_max is not None and amount > self.amount_max:
            return f"amount {amount} is above this item's amount_max {self.amount_max}"
        if self.amount_step is not None and (amount - self.lowest_amount) % self.amount_step:
            return (
                f"amount {amount} is not amount_min {self.lowest_amount} plus a multiple of this "
                f"item's amount_step {self.amount_step}"
            )
        return None

    def public_view(self) -> dict[str, Any]:
        """What buyers see, what a checkout form needs: the price, the bounds of a chosen amount
        (``amount_min`` resolved), the fields to ask for, and the units left (``stock``, null when
        unlimited) with whether any is (``available``)."""
        shown = self.model_dump(mode="json", include=set(PUBLIC_ITEM_FIELDS))
        available = self.status is ItemStatus.PUBLISHED and (self.stock is None or self.stock > 0)
        return shown | {"amount_min": self.lowest_amount, "stock": self.stock, "available": available}


# How much of an endpoint's answer an attempt keeps: the first bytes of its body (UTF-8; a longer
# one ends with "…"), and its first headers, each value cut to a length.
RESPONSE_EXCERPT_BYTES = 4096
RESPONSE_HEADERS = 20
RESPONSE_HEADER_NAME_CHARS = 64
RESPONSE_HEADER_CHARS = 200
RESPONSE_HEADER_BYTES = 2048
# Answers' headers that are credentials or say how to get one: not kept, so not shown or exported.
NOT_KEPT_HEADERS = frozenset({"set-cookie", "www-authenticate", "proxy-authenticate"})


class ErrorClass(StrEnum):
    """What kind of failure an attempt was (``Attempt.error_class``)."""

    HTTP_STATUS = "http_status"  # the endpoint answered, not 2xx
    GONE = "gone"  # 410 Gone: dead-lettered at once, not retried
    ABORTED = "aborted"  # "webhook-delivery: abort-message": the endpoint asked to stop this message
    TIMEOUT = "timeout"
    CONNECTION = "connection"  # no connection (refused, reset, DNS)
    TRANSPORT = "transport"  # the connection broke off mid-request
    REFUSED_TARGET = "refused_target"  # the address is one deliveries may not reach (SSRF guard)
    INVALID_URL = "invalid_url"
    SECRET_UNDECRYPTABLE = "secret_undecryptable"  # noqa: S105 (a class, not a secret)
    INTERNAL = "internal"  # a bug in the relay: retried on the schedule


class Attempt(Record):
    at: datetime
    url: str | None
    status_code: int | None = None
    error: str | None = None
    duration_ms: int
    next_attempt_at: datetime | None = None
    response: str | None = None  # the first RESPONSE_EXCERPT_BYTES of the answer's body, if any
    response_headers: dict[str, str] | None = None  # the answer's first RESPONSE_HEADERS headers
    error_class: ErrorClass | None = None  # None when delivered


def response_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """What an attempt keeps of an answer's headers: the first RESPONSE_HEADERS, names lowercased
    and cut to RESPONSE_HEADER_NAME_CHARS, values to RESPONSE_HEADER_CHARS, RESPONSE_HEADER_BYTES in
    all (a repeated header's values joined with ", "); never a cookie or a challenge
    (NOT_KEPT_HEADERS). Bytes that are not UTF-8 (aiohttp hands them over as surrogates) are
    replaced, so the attempt can always be stored."""
    kept: dict[str, str] = {}
    size = 0
    for raw_name, raw_value in headers:
        name, value = _text(raw_name)[:RESPONSE_HEADER_NAME_CHARS].lower(), _text(raw_value)
        if name in NOT_KEPT_HEADERS or (name not in kept and len(kept) >= RESPONSE_HEADERS):
            continue
        joined = (f"{kept[name]}, {value}" if name in kept else value)[:RESPONSE_HEADER_CHARS]
        size += len(joined) - len(kept.get(name, "")) + (0 if name in kept else len(name))
        if size > RESPONSE_HEADER_BYTES:
            break
        kept[name] = joined
    return kept


def _text(value: str) -> str:
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def response_excerpt(body: bytes) -> str | None:
    """What an attempt keeps of an answer's body: its first RESPONSE_EXCERPT_BYTES, decoded
    (anything not UTF-8 replaced), ending with "…" when cut; None for an empty body."""
    if not body:
        return None
    kept = body[:RESPONSE_EXCERPT_BYTES].decode("utf-8", errors="replace")
    if len(body) <= RESPONSE_EXCERPT_BYTES:
        return kept
    return kept.removesuffix("\ufffd") + "…"  # a character cut in two is not shown half


class OrderKind(StrEnum):
    """What an order pays for (DESIGN.md, "Every payment kind on one project webhook")."""

    ITEM = "item"  # a catalogue item, bought through the public route
    PAYMENT = "payment"  # a shop payment: the merchant's own amount and order id
    SUBSCRIPTION = "subscription"  # one period of a subscription


class Purchase(Record):
    """An order of any kind (the name is the seed's). ``order_id`` is the one the gateway sees; a
    shop payment's own is ``merchant_order_id``. ``event_type`` is what its payment sends
    (relay.event_types). A subscription's order names its plan in ``item_name``; a renewal's
    carries the period it pays for, a first payment's period starts when it is paid."""

    order_id: str
    kind: OrderKind = OrderKind.ITEM
    event_type: str = "item.purchased"
    item_id: str = ""
    project_id: str
    item_name: str = ""
    merchant_order_id: str | None = None
    description: str | None = None
    subscription_id: str | None = None
    plan_id: str | None = None
    user_id: str | None = None
    interval: Interval | None = None
    interval_count: int | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    invoice_url: str | None = None
    # Until when its invoice may be paid, when that is not RELAY_PURCHASE_EXPIRY (a renewal's: until
    # its subscription would expire unpaid); the gateway's hosted page is asked to last as long.
    pay_by: datetime | None = None
    # The events its refunds sent, read from its hash (``refund:{key}`` fields), never stored in doc.
    refund_event_ids: list[str] = Field(default_factory=list)
    quantity: int = 1  # units of the item (amount = price x quantity unless the buyer chose it)
    # Units sold twice: it was paid after it expired and its units had been sold again (ingest.lua).
    oversold: int | None = None
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

    def view(self) -> dict[str, Any]:
        """The order as the API shows it: a shop payment's ``order_id`` is the merchant's, the
        gateway's is ``gateway_order_id``; unset fields of other kinds are left out."""
        shown = self.model_dump(
            mode="json", exclude_none=True, exclude={"merchant_order_id", "refund_event_ids"}
        )
        for name in ("buyer_name", "paid_at", "webhook_status", "event_id"):
            shown.setdefault(name, None)
        if self.kind is OrderKind.PAYMENT:
            shown |= {"order_id": self.merchant_order_id, "gateway_order_id": self.order_id}
        if self.kind is not OrderKind.ITEM:
            shown.pop("item_id", None)
        return shown


class EventKind(StrEnum):
    """Whom an event is for. The operator's events (relay.alerts) carry the project id
    ``_operator``, which no project can have (ids start alphanumeric), and no order or item."""

    MERCHANT = "merchant"  # to a project's endpoint, about one of its orders
    OPERATOR = "operator"  # the relay's own alert, to RELAY_OPERATOR_WEBHOOK_URL


class DeadReason(StrEnum):
    """Why an event was dead-lettered."""

    EXHAUSTED = "exhausted"  # every attempt of the retry schedule failed
    PERMANENT = "permanent"  # 410 Gone, webhook-delivery: abort-message, or a refused target
    ENDPOINT_DISABLED = "endpoint_disabled"  # its endpoint is disabled: nothing was sent
    SECRET_UNDECRYPTABLE = "secret_undecryptable"  # noqa: S105 (a reason, not a secret): no key decrypts it


class EventRecord(Record):
    """An event and its delivery state; ``body`` is the exact signed JSON, fixed at creation. An
    operator's event has no order or item (empty)."""

    id: str
    kind: EventKind = EventKind.MERCHANT
    type: str = ""  # relay.event_types; '' for one stored before events carried it: item.purchased
    project_id: str
    order_id: str = ""
    item_id: str = ""
    plan_id: str = ""
    body: str
    state: WebhookStatus = WebhookStatus.PENDING
    seq: int = 0
    attempts: int = 0
    created_at: datetime
    next_attempt_at: datetime | None = None
    dead_at: datetime | None = None
    dead_reason: DeadReason | None = None

    @property
    def type_name(self) -> str:
        """Its type: an operator's alert names it in its body; a merchant's event stored before
        events carried one is an item.purchased."""
        if self.type:
            return self.type
        if self.kind is EventKind.OPERATOR:
            return str(json.loads(self.body).get("type", ""))
        return "item.purchased"


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
    # The currency the callback states, when it states one: the ingest script refuses it when it
    # is not the purchase's (compared case-insensitively).
    currency: str | None = None
    # A refund (status refunded): how much (None: the whole amount), why, when (None: now), and
    # the gateway's id of the refund, so each refund of an order is sent once (None: the status
    # and amount stand for it).
    refund_amount: Decimal | None = None
    refund_reason: str | None = None
    refunded_at: datetime | None = None
    refund_key: str | None = None
    # A refund a gateway's status API confirmed, and when that API says the order was paid: the
    # payment is applied first (its event, if the settlement's callback never came). Never from a
    # callback alone, whose status no signature covers.
    settled_at: datetime | None = None


class DeadLetter(BaseModel):
    """One row of the dead-letter queue as the admin API, the console and the CLI show it."""

    model_config = ConfigDict(extra="forbid")

    event_id: str
    kind: EventKind
    type: str
    project_id: str
    order_id: str
    item_id: str
    attempts: int
    created_at: str
    dead_at: str | None
    reason: DeadReason | None
    last_attempt: Attempt | None


class Plan(Record):
    """A subscription's pricing tier: ``price`` every ``interval_count`` ``interval``s."""

    id: Identifier
    project_id: Identifier
    name: str = Field(min_length=1, max_length=200)
    price: Amount
    currency: Currency = "IDR"
    interval: Interval
    interval_count: int = Field(default=1, ge=1, le=365)
    webhook_url: WebhookUrl = None
    created_at: datetime
    updated_at: datetime


class SubscriptionStatus(StrEnum):
    PENDING = "pending"  # its first invoice is unpaid
    ACTIVE = "active"
    PAST_DUE = "past_due"  # the period ended with its renewal unpaid, within RELAY_SUBSCRIPTION_GRACE
    EXPIRED = "expired"
    CANCELED = "canceled"


class Subscription(Record):
    """A buyer's subscription to a plan; price and interval are the plan's when it was taken.
    ``order_id`` is the order that paid the current period (the first invoice's until then),
    ``pending_order_id`` the invoice awaiting payment. ``version`` goes up with every change: the
    timers and the API change a subscription only at the version they read."""

    id: str
    project_id: str
    plan_id: str
    plan_name: str
    amount: int
    currency: str
    interval: Interval
    interval_count: int = 1
    buyer_email: str
    buyer_name: str | None = None
    user_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    gateway: str = "midtrans"
    status: SubscriptionStatus = SubscriptionStatus.PENDING
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    # When its first period began: months and years renew on this day of the month (relay.periods).
    anchor: datetime | None = None
    cancel_at_period_end: bool = False
    order_id: str
    pending_order_id: str | None = None
    invoice_url: str | None = None
    paid_at: datetime | None = None
    version: int = 0
    created_at: datetime
    updated_at: datetime


# --- API input --------------------------------------------------------------------------------


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ProjectIn(Input):
    id: Identifier | None = None
    name: str = Field(min_length=1, max_length=200)
    webhook_url: WebhookUrl = None


class CategoryIn(Input):
    id: Identifier | None = None
    project_id: Identifier
    name: str = Field(min_length=1, max_length=200)
    parent_id: Identifier | None = None
    sort_order: StrictInt = Field(default=0, ge=-(10**6), le=10**6)


class ItemIn(Input):
    id: Identifier | None = None
    project_id: Identifier
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    price: Amount
    currency: Currency = "IDR"
    amount_min: Amount | None = None
    amount_max: Amount | None = None
    amount_step: Amount | None = None
    webhook_url: WebhookUrl = None
    sku: str | None = Field(default=None, min_length=1, max_length=64)
    category_id: Identifier | None = None
    status: ItemStatus = ItemStatus.PUBLISHED
    stock: StockCount | None = None
    required_fields: RequiredFields = Field(default_factory=list)


BuyerFields = Annotated[
    dict[Annotated[str, Field(max_length=40)], Annotated[str, Field(max_length=200)]], Field(max_length=20)
]


class PurchaseIn(Input):
    client_id: str = Field(min_length=1, max_length=100)
    item_id: Identifier
    buyer_email: Email
    buyer_name: str | None = Field(default=None, max_length=200)
    quantity: StrictInt = Field(default=1, ge=1, le=1000)
    fields: BuyerFields = Field(default_factory=dict)  # the item's required_fields, by key
    amount: Amount | None = None
    metadata: Metadata = Field(default_factory=dict)
    gateway: str | None = Field(default=None, min_length=1, max_length=64)


class PaymentIn(Input):
    order_id: str = Field(pattern=MERCHANT_ORDER_ID_PATTERN)
    amount: Amount
    currency: Currency = "IDR"
    buyer_email: Email
    buyer_name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=1000)
    metadata: Metadata = Field(default_factory=dict)
    gateway: str | None = Field(default=None, min_length=1, max_length=64)


class PlanIn(Input):
    id: Identifier | None = None
    project_id: Identifier
    name: str = Field(min_length=1, max_length=200)
    price: Amount
    currency: Currency = "IDR"
    interval: Interval
    interval_count: int = Field(default=1, ge=1, le=365)
    webhook_url: WebhookUrl = None


class SubscribeIn(Input):
    client_id: str = Field(min_length=1, max_length=100)
    plan_id: Identifier
    buyer_email: Email
    buyer_name: str | None = Field(default=None, max_length=200)
    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: Metadata = Field(default_factory=dict)
    gateway: str | None = Field(default=None, min_length=1, max_length=64)
