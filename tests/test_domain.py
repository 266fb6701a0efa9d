"""relay/domain.py next_status: statuses only move up pending < failed = expired < paid < refunded."""

from __future__ import annotations

import pytest

from relay.domain import next_status
from relay.models import PurchaseStatus

PENDING = PurchaseStatus.PENDING
FAILED = PurchaseStatus.FAILED
EXPIRED = PurchaseStatus.EXPIRED
PAID = PurchaseStatus.PAID
REFUNDED = PurchaseStatus.REFUNDED

# current, incoming, expected (None = the callback does not move the purchase)
TABLE = [
    (PENDING, PENDING, None),
    (PENDING, FAILED, FAILED),
    (PENDING, EXPIRED, EXPIRED),
    (PENDING, PAID, PAID),
    (PENDING, REFUNDED, REFUNDED),
    (FAILED, PENDING, None),
    (FAILED, FAILED, None),
    (FAILED, EXPIRED, None),
    (FAILED, PAID, PAID),
    (FAILED, REFUNDED, REFUNDED),
    (EXPIRED, PENDING, None),
    (EXPIRED, FAILED, None),
    (EXPIRED, EXPIRED, None),
    (EXPIRED, PAID, PAID),  # a settlement after expiry: the money arrived
    (EXPIRED, REFUNDED, REFUNDED),
    (PAID, PENDING, None),  # a late pending never un-pays
    (PAID, FAILED, None),
    (PAID, EXPIRED, None),
    (PAID, PAID, None),  # the same settlement twice: one event
    (PAID, REFUNDED, REFUNDED),
    (REFUNDED, PENDING, None),  # refunded is final
    (REFUNDED, FAILED, None),
    (REFUNDED, EXPIRED, None),
    (REFUNDED, PAID, None),
    (REFUNDED, REFUNDED, None),
]


@pytest.mark.parametrize(("current", "incoming", "expected"), TABLE)
def test_next_status(
    current: PurchaseStatus, incoming: PurchaseStatus, expected: PurchaseStatus | None
) -> None:
    assert next_status(current, incoming) is expected


def test_table_covers_every_pair() -> None:
    pairs = {(current, incoming) for current, incoming, _ in TABLE}
    assert pairs == {(current, incoming) for current in PurchaseStatus for incoming in PurchaseStatus}
