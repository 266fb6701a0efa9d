"""The operator's actions on webhooks, one implementation for the admin and builder APIs, the
console and the CLI: look up a project's purchases with their attempts, resend an event, retry a
purchase's webhook, replay dead letters, purge them.

Every resend keeps the event's ``webhook-id`` and starts a fresh retry budget (``relay/lua/
requeue.lua`` bumps the event's ``seq``, so a job of its earlier life does nothing). Callers render
what these return and what they raise (``NotFound``, ``Conflict``) in their own way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from arq.connections import ArqRedis

from relay.endpoints import EndpointHealth
from relay.errors import Conflict, InvalidInput, NotFound, not_found
from relay.event_body import WebhookTestEvent
from relay.events import DeadLetterPage
from relay.metrics import Metrics
from relay.models import (
    DeadLetter,
    EventRecord,
    OrderKind,
    Plan,
    Project,
    Purchase,
    Subscription,
    WebhookStatus,
    iso_ms,
    new_event_id,
    to_ms,
    utcnow,
)
from relay.ranges import count_between, member_pages
from relay.signing import new_webhook_secret
from relay.stores import Stores
from workers.arq_compat import enqueue_delivery, job_write

PAGE = 500  # dead letters read per round trip when walking them all
REPLAY_AT_ONCE = 50  # resends in flight at once in a bulk replay
MAX_WINDOW_REPLAY = 10_000  # events one API call may replay; the CLI takes any number
ROTATION_GRACE = timedelta(hours=24)  # how long a replaced signing secret keeps signing
TEST_EVENT_EVERY = timedelta(seconds=2)  # a project's test events: no flood of stored events


@dataclass(frozen=True)
class Window:
    """A project's events created in [since, until]; with ``webhook_status``, only those in that
    state now (the window replay's selection)."""

    project_id: str
    since: datetime
    until: datetime | None = None
    webhook_status: WebhookStatus | None = None


def _refuse_over(count: int, limit: int, *, more: bool = False) -> None:
    """InvalidInput when a window holds more than ``limit`` events (``more``: at least ``count``)."""
    if count > limit:
        holds = f"more than {limit}" if more else f"{count}"
        raise InvalidInput(
            f"the window holds {holds} events; one call replays at most {limit}: narrow it with until, "
            "or run `relay events replay`"
        )


class Progress(Protocol):
    """What bulk actions report to as they go (a CLI progress bar)."""

    def update(self, n_steps: int) -> None: ...


@dataclass(frozen=True)
class Replayed:
    count: int
    missing: list[str] = field(default_factory=list)


class Operations:
    def __init__(
        self,
        stores: Stores,
        arq: ArqRedis,
        *,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = stores.store
        self.events = stores.events
        self.endpoints = stores.endpoints
        self.retention = stores.retention
        self.subscriptions = stores.subscriptions
        self.cooldowns = stores.cooldowns
        self.search = stores.search
        self.arq = arq
        self.clock = clock
        self.metrics = metrics

    # --- lookups -------------------------------------------------------------------------------

    async def project(self, project_id: str) -> Project:
        project = await self.store.get_project(project_id)
        if project is None:
            raise not_found("project", project_id)
        return project

    async def purchase(self, project_id: str, order_id: str) -> Purchase:
        """A purchase of the project; one of another project is as absent as a missing one."""
        purchase = await self.store.get_purchase(order_id)
        if purchase is None or purchase.project_id != project_id:
            raise not_found("purchase", order_id)
        return purchase

    async def purchases(
        self, project_id: str, *, webhook_status: WebhookStatus | None = None, limit: int = 100
    ) -> list[Purchase]:
        """The project's purchases, newest first."""
        project = await self.project(project_id)
        return await self.store.list_purchases(project.id, webhook_status=webhook_status, limit=limit)

    async def order_id(self, project_id: str, given: str) -> str:
        """The gateway's order id of the project's order ``given`` names: ``given`` itself, or,
        when no order has that id, the project's shop payment whose own order id it is (as the API
        and ``relay purchases list`` show it). ``given`` when neither exists."""
        if await self.store.get_purchase(given) is None:
            payment = await self.store.payment(project_id, given)
            if payment is not None and payment.kind is OrderKind.PAYMENT:
                return payment.order_id
        return given

    async def refunds(self, purchase: Purchase) -> list[EventRecord]:
        """The events the order's refunds sent (``*.refunded``), oldest first."""
        refunds = await self.events.get_many(purchase.refund_event_ids)
        return sorted(refunds, key=lambda event: (event.created_at, event.id))

    async def plans(self, project_id: str) -> list[Plan]:
        project = await self.project(project_id)
        return await self.store.list_plans(project.id)

    async def recent_subscriptions(self, project_id: str, *, limit: int = 100) -> list[Subscription]:
        """The project's subscriptions, newest first."""
        project = await self.project(project_id)
        return await self.subscriptions.recent(project.id, limit=limit)

    async def with_attempts(self, purchases: list[Purchase]) -> list[dict[str, Any]]:
        """Purchases as the API shows them, each with its delivery attempts (one round trip)."""
        logs = await self.events.attempts([purchase.event_id for purchase in purchases if purchase.event_id])
        views = []
        for purchase in purchases:
            view = purchase.view()
            attempts = logs.get(purchase.event_id, []) if purchase.event_id else []
            view["attempts"] = [attempt.model_dump(mode="json") for attempt in attempts]
            views.append(view)
        return views

    # --- sending again -------------------------------------------------------------------------

    async def resend(self, event_id: str) -> EventRecord:
        """Send an event again with a fresh retry budget and the same ``webhook-id``."""
        event = await self.events.get(event_id)
        seq = await self.events.requeue(event, now=self.clock()) if event is not None else None
        if event is None or seq is None:
            raise not_found("event", event_id)
        await enqueue_delivery(self.arq, event.id, seq)
        if self.metrics is not None:
            self.metrics.replays.inc()
        return event

    async def rotate_secret(self, project_id: str) -> Project:
        """A new signing secret. The one it replaces keeps signing for ROTATION_GRACE, and so does
        each one replaced before it for the rest of its own (the newest few: ``Project.rotated``):
        a merchant still on any of them keeps verifying. Two rotations at once are two rotations,
        each answer's secret kept (``Store.update_project``)."""
        now = self.clock()
        rotated = await self.store.update_project(
            project_id, lambda project: project.rotated(new_webhook_secret(), now=now, grace=ROTATION_GRACE)
        )
        if rotated is None:
            raise not_found("project", project_id)
        return rotated

    async def send_test(self, project_id: str) -> EventRecord:
        """Send a ``webhook.test`` to the project's webhook URL, signed like every webhook: a new
        event with its own attempt log, at most one per project every TEST_EVENT_EVERY."""
        project = await self.project(project_id)
        if project.webhook_url is None:
            raise InvalidInput("the project has no webhook URL to send a test event to; set one first")
        await self.cooldowns.claim("test event", project.id, every=TEST_EVENT_EVERY)
        now = self.clock()
        body = WebhookTestEvent(
            project_id=project.id,
            message=f"A test webhook for {project.name}: nothing was paid.",
            sent_at=iso_ms(now),
        )
        event = EventRecord(
            id=new_event_id(),
            type=body.event,
            project_id=project.id,
            body=body.model_dump_json(),
            created_at=now,
        )
        await self.events.add(event, job_write(self.arq, event.id, 0, now_ms=to_ms(now)))
        return event

    async def retry_purchase(self, project_id: str, order_id: str) -> Purchase:
        """Send a purchase's webhook again (delivered, failed or never sent); the purchase after."""
        purchase = await self.purchase(project_id, order_id)
        if purchase.event_id is None:
            raise Conflict(
                f"purchase {purchase.order_id} is {purchase.status.value}; it has no webhook to send"
            )
        await self.resend(purchase.event_id)
        return await self.purchase(project_id, order_id)

    async def require_events(self, event_ids: Iterable[str]) -> None:
        """NotFound for the first of ``event_ids`` that does not exist, before anything is sent."""
        for event_id in event_ids:
            if await self.events.get(event_id) is None:
                raise not_found("event", event_id)

    async def replay(self, event_ids: Iterable[str], *, progress: Progress | None = None) -> Replayed:
        """Resend each event (each id once), REPLAY_AT_ONCE at a time; the ones that do not exist
        are skipped and named."""
        ids = list(dict.fromkeys(event_ids))
        missing: list[str] = []

        async def one(event_id: str) -> None:
            try:
                await self.resend(event_id)
            except NotFound:
                missing.append(event_id)

        for start in range(0, len(ids), REPLAY_AT_ONCE):
            chunk = ids[start : start + REPLAY_AT_ONCE]
            await asyncio.gather(*(one(event_id) for event_id in chunk))
            if progress is not None:
                progress.update(len(chunk))
        position = {event_id: index for index, event_id in enumerate(ids)}
        return Replayed(len(ids) - len(missing), sorted(missing, key=position.__getitem__))

    async def window(self, window: Window, *, limit: int | None = None) -> list[str]:
        """The ids of the window's events, oldest first. More than ``limit`` of them is an
        InvalidInput, found before the ids are all read."""
        project = await self.project(window.project_id)
        key = self.events.keys.project_events(project.id)
        redis, since, until = self.events.redis, window.since, window.until
        if limit is not None and window.webhook_status is None:
            _refuse_over(await count_between(redis, key, since=since, until=until), limit)
        ids: list[str] = []
        async for page in member_pages(redis, key, since=since, until=until):
            ids += await self._in_state(page, window.webhook_status)
            if limit is not None:
                _refuse_over(len(ids), limit, more=True)
        return ids

    async def _in_state(self, event_ids: list[str], webhook_status: WebhookStatus | None) -> list[str]:
        if webhook_status is None:
            return event_ids
        states = await self.events.states(event_ids)
        return [event_id for event_id in event_ids if states.get(event_id) == webhook_status]

    async def replay_window(self, window: Window, *, limit: int | None = None) -> Replayed:
        """Resend every event of the window, delivered ones too (a merchant restored a backup),
        with their own webhook-id. More than ``limit`` of them is refused, before anything is sent."""
        return await self.replay(await self.window(window, limit=limit))

    async def replay_dead_letters(
        self, *, project_id: str | None, since: datetime | None, limit: int | None = None
    ) -> int:
        """Resend every dead letter matching the filter (the oldest ``limit`` of them); how many."""
        ids = await self.dead_letter_ids(project_id=project_id, since=since, limit=limit)
        return (await self.replay(ids)).count

    # --- endpoints ----------------------------------------------------------------------------

    async def endpoint_health(self, project_id: str) -> list[EndpointHealth]:
        """The health of every endpoint the project's events went to."""
        project = await self.project(project_id)
        return await self.endpoints.of_project(project.id)

    async def enable_endpoint(self, project_id: str, url: str) -> EndpointHealth:
        """Enable a disabled endpoint (idempotent); its dead letters are then the caller's to
        replay. NotFound when no event of the project ever went to ``url``."""
        project = await self.project(project_id)
        health = await self.endpoints.enable(project.id, url)
        if health is None:
            raise not_found("endpoint", url)
        return health

    # --- dead letters --------------------------------------------------------------------------

    async def dead_letter_page(
        self, *, project_id: str | None, since: datetime | None, limit: int, cursor: str | None
    ) -> tuple[list[DeadLetter], str | None]:
        """Oldest first; the rows and the cursor of the next page (None on the last)."""
        page = await self.events.dead_letters(project_id=project_id, since=since, limit=limit, cursor=cursor)
        return await self.dead_letter_views(page.events), page.next_cursor

    async def all_dead_letters(
        self, *, project_id: str | None, since: datetime | None
    ) -> AsyncIterator[EventRecord]:
        cursor = None
        while True:
            page: DeadLetterPage = await self.events.dead_letters(
                project_id=project_id, since=since, limit=PAGE, cursor=cursor
            )
            for event in page.events:
                yield event
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def dead_letter_ids(
        self, *, project_id: str | None, since: datetime | None, limit: int | None = None
    ) -> list[str]:
        ids: list[str] = []
        async for event in self.all_dead_letters(project_id=project_id, since=since):
            if limit is not None and len(ids) >= limit:
                break
            ids.append(event.id)
        return ids

    async def dead_letter_views(self, records: list[EventRecord]) -> list[DeadLetter]:
        last = await self.events.last_attempts([event.id for event in records])
        views = []
        for event in records:
            dumped = event.model_dump(mode="json")
            views.append(
                DeadLetter(
                    event_id=event.id,
                    kind=event.kind,
                    type=event.type_name,
                    project_id=event.project_id,
                    order_id=event.order_id,
                    item_id=event.item_id,
                    attempts=event.attempts,
                    created_at=dumped["created_at"],
                    dead_at=dumped["dead_at"],
                    reason=event.dead_reason,
                    last_attempt=last.get(event.id),
                )
            )
        return views

    async def purge_dead_letter(self, event_id: str) -> None:
        """Remove one dead letter for good (the purchase keeps its attempt log)."""
        event = await self.events.get(event_id)
        if event is None or not await self.events.purge_dead_letter(event, now=self.clock()):
            raise not_found("dead letter", event_id)

    async def purge(self, event_ids: Iterable[str], *, progress: Progress | None = None) -> int:
        """Remove each of these dead letters (each id once); how many were dead letters."""
        done = 0
        for event_id in dict.fromkeys(event_ids):
            event = await self.events.get(event_id)
            if event is not None:
                done += await self.events.purge_dead_letter(event, now=self.clock())
            if progress is not None:
                progress.update(1)
        return done
