"""Every event type a merchant receives, as data: its body's model, whose ``webhook_url`` comes
before the project's, the type its refund sends, and how an order's template is built.

Adding a type is one entry here (and, for a type a payment sends, its order kind in ``PAYING``):
the ingest script is loaded with ``REFUND_OF`` (``lua_refund_table``), deliveries resolve their URL
through ``webhook_source``, and the console, the CLI and the OpenAPI document list ``TYPES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from relay.event_body import (
    Body,
    ItemPurchasedEvent,
    ItemRefundedEvent,
    PaymentPaidEvent,
    PaymentRefundedEvent,
    SubscriptionEvent,
    SubscriptionRefundedEvent,
    SubscriptionRenewalDueEvent,
    WebhookTestEvent,
    body_head,
)
from relay.models import Purchase, iso_z


class Webhook(StrEnum):
    """Whose ``webhook_url`` an event goes to before the project's."""

    ITEM = "item"  # the item's, else the project's
    PLAN = "plan"  # the plan's, else the project's
    PROJECT = "project"  # the project's


@dataclass(frozen=True)
class EventType:
    name: str
    body: type[Body]
    webhook: Webhook
    summary: str
    refund: str | None = None  # the type a refund of an order paid with this one sends


TYPES: tuple[EventType, ...] = (
    EventType("item.purchased", ItemPurchasedEvent, Webhook.ITEM, "An item was paid.", "item.refunded"),
    EventType("item.refunded", ItemRefundedEvent, Webhook.ITEM, "A paid item was refunded or charged back."),
    EventType(
        "payment.paid", PaymentPaidEvent, Webhook.PROJECT, "A shop payment was paid.", "payment.refunded"
    ),
    EventType("payment.refunded", PaymentRefundedEvent, Webhook.PROJECT, "A paid shop payment was refunded."),
    EventType(
        "subscription.activated",
        SubscriptionEvent,
        Webhook.PLAN,
        "A subscription's first period was paid.",
        "subscription.refunded",
    ),
    EventType(
        "subscription.renewed",
        SubscriptionEvent,
        Webhook.PLAN,
        "A renewal invoice was paid: the next period starts where the last ended.",
        "subscription.refunded",
    ),
    EventType(
        "subscription.renewal_due",
        SubscriptionRenewalDueEvent,
        Webhook.PLAN,
        "The next period's invoice, RELAY_RENEWAL_NOTICE before the period ends.",
    ),
    EventType(
        "subscription.expired",
        SubscriptionEvent,
        Webhook.PLAN,
        "The renewal was still unpaid RELAY_SUBSCRIPTION_GRACE after the period ended.",
    ),
    EventType("subscription.canceled", SubscriptionEvent, Webhook.PLAN, "A canceled subscription ended."),
    EventType(
        "subscription.refunded",
        SubscriptionRefundedEvent,
        Webhook.PLAN,
        "A subscription payment was refunded.",
    ),
    EventType(
        "webhook.test",
        WebhookTestEvent,
        Webhook.PROJECT,
        "Sent on request from the merchant portal or the console to try the endpoint: nothing was paid.",
    ),
)
REGISTRY: dict[str, EventType] = {event_type.name: event_type for event_type in TYPES}
# What an event stored before events carried their type is.
DEFAULT_TYPE = "item.purchased"


def event_type(name: str) -> EventType:
    """A type by name ('' for an event stored before types were: item.purchased)."""
    return REGISTRY[name or DEFAULT_TYPE]


def lua_refund_table() -> str:
    """``REFUND_OF`` as the ingest script is loaded with it: paying type -> its refund's type."""
    pairs = ", ".join(f'["{kind.name}"] = "{kind.refund}"' for kind in TYPES if kind.refund)
    return f"local REFUND_OF = {{{pairs}}}"


# --- the templates of paying orders --------------------------------------------------------------------


def _item_head(purchase: Purchase) -> str:
    return body_head(
        ItemPurchasedEvent(
            order_id=purchase.order_id,
            item_id=purchase.item_id,
            item_name=purchase.item_name,
            buyer_email=purchase.buyer_email,
            buyer_name=purchase.buyer_name,
            amount=purchase.amount,
            currency=purchase.currency,
            paid_at="",
            metadata={},
        )
    )


def _payment_head(purchase: Purchase) -> str:
    return body_head(
        PaymentPaidEvent(
            order_id=purchase.merchant_order_id or purchase.order_id,
            amount=purchase.amount,
            currency=purchase.currency,
            buyer_email=purchase.buyer_email,
            buyer_name=purchase.buyer_name,
            description=purchase.description,
            paid_at="",
            metadata={},
        )
    )


def _subscription_head(purchase: Purchase) -> str:
    """A renewal's period is its invoice's; a first payment's starts when it is paid."""
    first = purchase.period_start is None or purchase.period_end is None
    body = SubscriptionEvent(
        event=purchase.event_type,
        subscription_id=purchase.subscription_id or "",
        plan_id=purchase.plan_id or "",
        plan_name=purchase.item_name,
        user_id=purchase.user_id,
        buyer_email=purchase.buyer_email,
        buyer_name=purchase.buyer_name,
        order_id=purchase.order_id,
        amount=purchase.amount,
        currency=purchase.currency,
        period_start="" if first or purchase.period_start is None else iso_z(purchase.period_start),
        period_end="" if first or purchase.period_end is None else iso_z(purchase.period_end),
        paid_at="",
        metadata={},
    )
    return body_head(body, slot="period_start" if first else "paid_at")


# The body template of each type a payment sends.
PAYING: dict[str, Callable[[Purchase], str]] = {
    "item.purchased": _item_head,
    "payment.paid": _payment_head,
    "subscription.activated": _subscription_head,
    "subscription.renewed": _subscription_head,
}


def event_body_head(purchase: Purchase) -> str:
    """The order's paying body up to the values its payment fills (relay.event_body.body_head)."""
    return PAYING[purchase.event_type](purchase)
