"""What a purchase of an item must hold (DESIGN.md, "Catalogue depth"): how many units and what it
costs, and the buyer fields the item asks for.

The amount is ``price x quantity`` unless the buyer chose one, and either must lie within the
item's bounds (``Item.amount_problem``). Buyer fields are checked against the item's
``required_fields``: a required one must be given, a given one must match its ``pattern`` (the
merchant's regular expression, run by the ``regex`` library within one budget for all of a
purchase's fields: a pattern that backtracks without end fails the purchase, it does not hold the
event loop), and no other key is taken. What passes goes into the event's ``metadata``
(``fields``, and ``quantity`` when more than one): ``item.purchased`` keeps the seed's keys.
"""

from __future__ import annotations

import time
from typing import Any

from relay.errors import InvalidInput
from relay.models import Item, ItemStatus, compiled_pattern

PATTERN_BUDGET = 0.05  # seconds all of one purchase's buyer-field patterns may run, together
MAX_TOTAL = 10**15  # an order's amount at most (the amounts' own bound)
RELAYS_KEYS = ("fields", "quantity")  # metadata keys the relay writes: a buyer's are dropped


def item_matches(
    items: list[Item], *, search: str = "", category_id: str | None = None, status: ItemStatus | None = None
) -> list[Item]:
    """The items that match: ``search`` in the name or sku (any case), the category, the status."""
    needle = search.casefold()
    return [
        item
        for item in items
        if (not needle or needle in item.name.casefold() or needle in (item.sku or "").casefold())
        and (category_id is None or item.category_id == category_id)
        and (status is None or item.status is status)
    ]


def order_amount(item: Item, *, quantity: int, chosen: int | None) -> int:
    """What the buyer pays: the chosen amount, else ``price x quantity``; InvalidInput (naming the
    bound) outside the item's bounds, or below the least ``quantity`` units may cost."""
    amount = item.price * quantity if chosen is None else chosen
    least = item.lowest_amount * quantity
    if quantity > 1 and amount < least:
        raise InvalidInput(f"amount {amount} is below {least}, this item's amount_min for {quantity} units")
    if amount > MAX_TOTAL:
        raise InvalidInput(f"amount {amount} is above {MAX_TOTAL}")
    problem = item.amount_problem(amount)
    if problem is not None:
        raise InvalidInput(problem)
    return amount


def buyer_fields(item: Item, given: dict[str, str]) -> dict[str, str]:
    """The buyer fields of a purchase, checked against the item's: InvalidInput naming the field
    that is missing, does not match, or is not the item's."""
    known = {field.key: field for field in item.required_fields}
    for key in given:
        if key not in known:
            raise InvalidInput(f"fields.{key}: this item asks for no such field")
    deadline = time.monotonic() + PATTERN_BUDGET
    kept: dict[str, str] = {}
    for key, field in known.items():
        value = given.get(key, "").strip()
        if not value:
            if field.required:
                raise InvalidInput(f"fields.{key}: {field.label} is required")
            continue
        if field.pattern is not None and not _matches(field.pattern, value, deadline):
            raise InvalidInput(f"fields.{key}: {field.label} does not have the expected form")
        kept[key] = value
    return kept


def _matches(pattern: str, value: str, deadline: float) -> bool:
    """Whether ``value`` matches all of ``pattern``; False too when the budget runs out first."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    try:
        return compiled_pattern(pattern).fullmatch(value, timeout=left) is not None
    except TimeoutError:
        return False


def purchase_metadata(metadata: dict[str, Any], *, fields: dict[str, str], quantity: int) -> dict[str, Any]:
    """The buyer's metadata with what the relay adds: the buyer fields, and the quantity when more
    than one. Those names are the relay's alone: a buyer's own ``fields`` or ``quantity`` is dropped,
    so a webhook never carries unchecked ones."""
    added: dict[str, Any] = {"fields": fields} if fields else {}
    if quantity != 1:
        added["quantity"] = quantity
    return {key: value for key, value in metadata.items() if key not in RELAYS_KEYS} | added
