"""The ``item.purchased`` body: its model, and the template the ingest script fills.

A purchase stores the body up to its ``paid_at`` value (``event_body_head``) and, once, its
metadata as the body writes it (``metadata_json``); ``relay/lua/ingest.lua`` joins them around the
paid_at when the purchase is paid, so the body is byte for byte what ``ItemPurchasedEvent`` makes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, TypeAdapter

if TYPE_CHECKING:
    from relay.models import Purchase

PAID_AT_SLOT = ',"paid_at":""'
# The body ends ``..."paid_at":"<paid_at>","metadata":<metadata>}``: the ingest script joins the
# purchase's stored head, the paid_at, METADATA_JOIN, the purchase's stored metadata and BODY_END.
METADATA_JOIN = '","metadata":'
BODY_END = "}"

_METADATA = TypeAdapter(dict[str, Any])


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


def metadata_json(metadata: dict[str, Any]) -> str:
    """Metadata as the body writes it (pydantic's JSON): the form a purchase stores it in, once."""
    return _METADATA.dump_json(metadata).decode()


def event_body_head(purchase: Purchase) -> str:
    """The purchase's body up to its ``paid_at`` value: ``event_body(head, iso_z(paid_at),
    metadata_json(purchase.metadata))`` is the body ``ItemPurchasedEvent`` makes."""
    body = ItemPurchasedEvent(
        order_id=purchase.order_id,
        item_id=purchase.item_id,
        item_name=purchase.item_name,
        buyer_email=purchase.buyer_email,
        buyer_name=purchase.buyer_name,
        amount=purchase.amount,
        currency=purchase.currency,
        paid_at="",
        metadata={},
    ).model_dump_json()
    # The first match is the top-level key: every value before it is a number, null, or a string
    # whose quotes are escaped.
    head, slot, tail = body.partition(PAID_AT_SLOT)
    assert slot, body
    assert tail == METADATA_JOIN[1:] + "{}" + BODY_END, body
    return head + ',"paid_at":"'


def event_body(head: str, paid_at: str, metadata: str) -> str:
    """The body as the ingest script joins it: ``paid_at`` in ``iso_z`` form, ``metadata`` JSON."""
    return head + paid_at + METADATA_JOIN + metadata + BODY_END
