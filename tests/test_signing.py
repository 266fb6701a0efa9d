"""relay/signing.py: headers a merchant verifies with the public standardwebhooks library, unchanged."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from relay.signing import new_webhook_secret, webhook_headers

BODY = json.dumps({"event": "item.purchased", "order_id": "item-abc12345-1a2b3c4d", "amount": 50000})
MSG_ID = "evt_0123456789abcdef0123456789abcdef"


def test_headers_verify_with_one_secret() -> None:
    secret = new_webhook_secret()
    now = datetime.now(UTC)
    headers = webhook_headers([secret], msg_id=MSG_ID, timestamp=now, body=BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    assert headers["webhook-id"] == MSG_ID
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["content-type"] == "application/json"
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]


def test_headers_verify_with_either_of_two_secrets() -> None:
    current, previous = new_webhook_secret(), new_webhook_secret()
    headers = webhook_headers([current, previous], msg_id=MSG_ID, timestamp=datetime.now(UTC), body=BODY)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(signature.startswith("v1,") for signature in signatures)
    assert Webhook(current).verify(BODY, headers) == json.loads(BODY)
    assert Webhook(previous).verify(BODY, headers) == json.loads(BODY)


def test_other_secret_does_not_verify() -> None:
    headers = webhook_headers([new_webhook_secret()], msg_id=MSG_ID, timestamp=datetime.now(UTC), body=BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(BODY, headers)


@pytest.mark.parametrize(
    ("header", "value"),
    [("webhook-id", "evt_other"), ("webhook-timestamp", None)],
)
def test_signature_covers_id_and_timestamp(header: str, value: str | None) -> None:
    secret = new_webhook_secret()
    now = datetime.now(UTC)
    headers = webhook_headers([secret], msg_id=MSG_ID, timestamp=now, body=BODY)
    headers[header] = value if value is not None else str(int(now.timestamp()) - 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers)


def test_signature_covers_the_body() -> None:
    secret = new_webhook_secret()
    headers = webhook_headers([secret], msg_id=MSG_ID, timestamp=datetime.now(UTC), body=BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace("50000", "5000"), headers)


def test_old_timestamp_is_refused_by_the_merchant() -> None:
    secret = new_webhook_secret()
    stale = datetime.now(UTC) - timedelta(minutes=10)
    headers = webhook_headers([secret], msg_id=MSG_ID, timestamp=stale, body=BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers)


def test_new_webhook_secret() -> None:
    secret = new_webhook_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert new_webhook_secret() != secret
