"""The webhook bodies: their models, and the templates the ingest script fills.

Every body has ``event`` first and ``metadata`` last; every time is ISO 8601 UTC with a ``Z``. An
order stores its paying event's body up to the first value only a payment knows (``body_head``:
``paid_at``, or ``period_start`` for a subscription's first payment, whose period starts when it
is paid) and, once, its metadata as the body writes it (``metadata_json``); ``relay/lua/ingest.lua``
joins them around those values when the order is paid, so the body is byte for byte what its model
makes. A refund's body is the paid body with ``refunded_at``, ``refund_amount`` and ``reason``
before ``metadata`` (the ingest script again). Which type goes with which order is
``relay.event_types``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter

# The body ends ``..."paid_at":"<paid_at>","metadata":<metadata>}``: the ingest script joins the
# order's stored head, the paid_at, METADATA_JOIN, the order's stored metadata and BODY_END.
METADATA_JOIN = '","metadata":'
BODY_END = "}"
# A subscription's first payment: the head stops at period_start, and the script writes
# ``<period_start>","period_end":"<period_end>","paid_at":"<paid_at>`` there.
FIRST_PERIOD_TAIL = ',"period_end":"","paid_at":"","metadata":{}}'

_METADATA = TypeAdapter(dict[str, Any])
_REASON = TypeAdapter(str | None)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemPurchasedEvent(Body):
    """The seed's webhook body, exactly these keys in this order (DESIGN.md, "The event")."""

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


class PaymentPaidEvent(Body):
    """A shop payment paid: ``order_id`` is the merchant's own."""

    event: str = "payment.paid"
    order_id: str
    amount: int
    currency: str
    buyer_email: str
    buyer_name: str | None
    description: str | None
    paid_at: str
    metadata: dict[str, Any]


class SubscriptionEvent(Body):
    """A subscription's period: activated (its first) and renewed, the period just paid;
    expired and canceled, the last period that was paid. ``order_id`` is the order that paid it."""

    event: str
    subscription_id: str
    plan_id: str
    plan_name: str
    user_id: str | None
    buyer_email: str
    buyer_name: str | None
    order_id: str
    amount: int
    currency: str
    period_start: str
    period_end: str
    paid_at: str | None
    metadata: dict[str, Any]


class SubscriptionRenewalDueEvent(Body):
    """The next period's invoice, RELAY_RENEWAL_NOTICE before the current period ends: ``order_id``
    and ``invoice_url`` are the new invoice's, the period the one it pays for."""

    event: str = "subscription.renewal_due"
    subscription_id: str
    plan_id: str
    plan_name: str
    user_id: str | None
    buyer_email: str
    buyer_name: str | None
    order_id: str
    amount: int
    currency: str
    period_start: str
    period_end: str
    paid_at: None = None
    invoice_url: str | None
    metadata: dict[str, Any]


class ItemRefundedEvent(Body):
    event: str = "item.refunded"
    order_id: str
    item_id: str
    item_name: str
    buyer_email: str
    buyer_name: str | None
    amount: int
    currency: str
    paid_at: str
    refunded_at: str
    refund_amount: int
    reason: str | None
    metadata: dict[str, Any]


class PaymentRefundedEvent(Body):
    event: str = "payment.refunded"
    order_id: str
    amount: int
    currency: str
    buyer_email: str
    buyer_name: str | None
    description: str | None
    paid_at: str
    refunded_at: str
    refund_amount: int
    reason: str | None
    metadata: dict[str, Any]


class SubscriptionRefundedEvent(Body):
    event: str = "subscription.refunded"
    subscription_id: str
    plan_id: str
    plan_name: str
    user_id: str | None
    buyer_email: str
    buyer_name: str | None
    order_id: str
    amount: int
    currency: str
    period_start: str
    period_end: str
    paid_at: str
    refunded_at: str
    refund_amount: int
    reason: str | None
    metadata: dict[str, Any]


class WebhookTestEvent(Body):
    """What "send test event" sends (the merchant portal, the console): nothing was paid; it shows
    the endpoint answering a webhook signed like every other."""

    event: str = "webhook.test"
    project_id: str
    message: str
    sent_at: str


def metadata_json(metadata: dict[str, Any]) -> str:
    """Metadata as the body writes it (pydantic's JSON): the form an order stores it in, once."""
    return _METADATA.dump_json(metadata).decode()


def reason_json(reason: str | None) -> str:
    """A refund's reason as its body writes it (the ingest script puts it in as given)."""
    return _REASON.dump_json(reason).decode()


def body_head(body: Body, *, slot: str = "paid_at") -> str:
    """``body`` up to its ``slot`` value, which must be "" in ``body`` (and every later value
    empty, ``metadata`` {}): what the ingest script completes when the order is paid."""
    text = body.model_dump_json()
    # The first match is the top-level key: every value before it is a number, null, or a string
    # whose quotes are escaped.
    head, found, tail = text.partition(f',"{slot}":""')
    assert found, text
    expected = FIRST_PERIOD_TAIL if slot == "period_start" else METADATA_JOIN[1:] + "{}" + BODY_END
    assert tail == expected, text
    return head + f',"{slot}":"'


def event_body(head: str, paid_at: str, metadata: str) -> str:
    """A body as the ingest script joins it: ``paid_at`` in ``iso_z`` form, ``metadata`` JSON."""
    return head + paid_at + METADATA_JOIN + metadata + BODY_END
