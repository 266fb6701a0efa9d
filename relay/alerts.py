"""The operator's webhooks: the relay's own alerts, sent to RELAY_OPERATOR_WEBHOOK_URL.

Two types, Standard Webhooks-signed with RELAY_OPERATOR_WEBHOOK_SECRET like a merchant's events
and delivered by the same worker with the same retries and egress rules; the body is
``{"type", "timestamp", "data"}`` (Svix's shape):

- ``message.attempt.exhausted``: a merchant's event was dead-lettered (its retries ran out, or its
  endpoint refused it for good). Not sent for an event dead-lettered because its endpoint is
  disabled: ``endpoint.disabled`` said so once, rather than once per event.
- ``endpoint.disabled``: every delivery to an endpoint failed for RELAY_ENDPOINT_DISABLE_AFTER.

An alert is an event of kind ``operator`` (``relay.models.EventKind``), created in the same atomic
step as what it reports (``relay/lua/finish.lua``), so it is as durable as the dead letter itself.
A failing alert never raises another alert.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from relay.events import Alert
from relay.jsonutil import dumps
from relay.models import EventRecord, iso_ms, new_event_id


class AttemptExhaustedData(BaseModel):
    project_id: str
    order_id: str
    event_id: str
    item_id: str
    attempts: int
    reason: str
    endpoint_url: str | None
    last_error: str | None
    last_status_code: int | None


class EndpointDisabledData(BaseModel):
    project_id: str
    url: str
    failing_since: str
    disabled_at: str
    last_error: str | None


class OperatorMessage(BaseModel):
    type: Literal["message.attempt.exhausted", "endpoint.disabled"]
    timestamp: str
    data: AttemptExhaustedData | EndpointDisabledData


def _alert(message: OperatorMessage) -> Alert:
    return Alert(event_id=new_event_id(), body=dumps(message.model_dump(mode="json")))


def attempt_exhausted(
    event: EventRecord,
    *,
    reason: str,
    url: str | None,
    error: str | None,
    status_code: int | None,
    now: datetime,
) -> Alert:
    data = AttemptExhaustedData(
        project_id=event.project_id,
        order_id=event.order_id,
        event_id=event.id,
        item_id=event.item_id,
        attempts=event.attempts + 1,
        reason=reason,
        endpoint_url=url,
        last_error=error,
        last_status_code=status_code,
    )
    return _alert(OperatorMessage(type="message.attempt.exhausted", timestamp=iso_ms(now), data=data))


def endpoint_disabled(
    project_id: str, *, url: str, failing_since: str | None, error: str | None, now: datetime
) -> Alert:
    data = EndpointDisabledData(
        project_id=project_id,
        url=url,
        failing_since=failing_since or iso_ms(now),
        disabled_at=iso_ms(now),
        last_error=error,
    )
    return _alert(OperatorMessage(type="endpoint.disabled", timestamp=iso_ms(now), data=data))
