"""P3 peer: the same deliveries the way many Python shops do them: a Celery task (Redis broker)
that signs the body (the same ``standardwebhooks`` HMAC), POSTs it with ``requests`` (one Session
per process, so connections are reused), retries with ``autoretry_for`` + ``retry_backoff``, and
records the outcome with one Redis HSET (relay's analogue is its attempt bookkeeping).

    BENCH_BROKER=redis://127.0.0.1:6379/10 celery -A tests.perf.celery_peer worker \
        --pool prefork --concurrency 1
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import redis
import requests
from celery import Celery
from standardwebhooks import Webhook

BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/10")

app = Celery("relay_bench", broker=BROKER)
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,  # at-least-once, like relay
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
session = requests.Session()
store = redis.Redis.from_url(BROKER)


@app.task(
    name="bench.deliver",
    autoretry_for=(requests.RequestException,),
    retry_backoff=True,
    retry_backoff_max=36000,
    max_retries=7,
)
def deliver(url: str, body: str, secret: str, msg_id: str) -> None:
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
    }
    response = session.post(url, data=body.encode(), headers=headers, timeout=15, allow_redirects=False)
    response.raise_for_status()
    store.hset(f"celery:delivery:{msg_id}", mapping={"status": "delivered", "code": response.status_code})
