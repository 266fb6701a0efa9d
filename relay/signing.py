"""Standard Webhooks signing (https://www.standardwebhooks.com): secrets and request headers.

The HMAC itself is the reference ``standardwebhooks`` library's, so a merchant verifying with that
library (or any Standard Webhooks implementation) sees exactly what it expects.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from standardwebhooks import Webhook

SECRET_BYTES = 32


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature_header(secrets_: list[str], *, msg_id: str, timestamp: datetime, body: str) -> str:
    """``v1,<sig>`` for each secret, space-separated (several during a rotation's grace period)."""
    return " ".join(Webhook(secret).sign(msg_id, timestamp, body) for secret in secrets_)


USER_AGENT = "relay-webhooks/0.1"  # what every webhook is sent with (the console shows it)


def webhook_headers(secrets_: list[str], *, msg_id: str, timestamp: datetime, body: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature_header(secrets_, msg_id=msg_id, timestamp=timestamp, body=body),
        "user-agent": USER_AGENT,
    }
