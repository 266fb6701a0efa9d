"""Every repository over one Redis client, built one way for the ingress, the worker and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from relay.api_keys import ApiKeys
from relay.audit import AuditLog
from relay.categories import Categories
from relay.crypto import SecretBox
from relay.endpoints import Endpoints
from relay.events import EventStore
from relay.portal import PortalLinks
from relay.ratelimit import LINK_FAILURES, Cooldown, FailedAuth, PurchaseLimit
from relay.retention import Retention
from relay.schema import Keys
from relay.search import OrderSearch
from relay.sessions import SessionStore
from relay.settings import Settings
from relay.store import Store
from relay.subscriptions import Subscriptions


@dataclass(frozen=True)
class Stores:
    keys: Keys
    store: Store  # projects, items, purchases, and the ingest script
    events: EventStore  # events, attempts, the outbox, the dead-letter queue
    retention: Retention  # purchase expiry and the deletion of finished orders
    endpoints: Endpoints  # endpoint health: failing since, disabled
    subscriptions: Subscriptions  # subscriptions and their timers
    sessions: SessionStore  # console sessions
    purchase_limit: PurchaseLimit  # public purchases per client and address (RELAY_PURCHASE_RATE_LIMIT)
    failed_auth: FailedAuth  # failed bearer tokens and console logins per address
    failed_links: FailedAuth  # refused portal links per address (their own count: no lockout of operators)
    cooldowns: Cooldown  # one test event, one portal bulk replay per project at a time
    api_keys: ApiKeys  # project API keys
    audit: AuditLog  # every change through the API, the console and the portal
    portal_links: PortalLinks  # the merchant portal's signed links
    search: OrderSearch  # a project's orders by id, or filtered a page at a time
    categories: Categories  # the shelves of a project's catalogue


def make_stores(redis: Redis, settings: Settings) -> Stores:
    """The stores over ``redis``, which must answer ``str`` (``decode_responses``); it is borrowed,
    not owned: its owner closes it."""
    prefix, lifetimes = settings.key_prefix, settings.lifetimes
    store = Store(redis, prefix=prefix, box=SecretBox(settings.fernet_keys), lifetimes=lifetimes)
    events = EventStore(redis, prefix=prefix, lifetimes=lifetimes)
    return Stores(
        keys=Keys(prefix),
        store=store,
        events=events,
        retention=Retention(redis, prefix=prefix, lifetimes=lifetimes),
        endpoints=Endpoints(redis, prefix=prefix),
        subscriptions=Subscriptions(redis, prefix=prefix, store=store, lifetimes=lifetimes),
        sessions=SessionStore(redis, prefix=prefix),
        purchase_limit=PurchaseLimit(redis, prefix=prefix, limit=settings.purchase_rate_limit),
        failed_auth=FailedAuth(redis, prefix=prefix),
        failed_links=FailedAuth(redis, prefix=prefix, limit=LINK_FAILURES, subject="link-failed"),
        cooldowns=Cooldown(redis, prefix=prefix),
        api_keys=ApiKeys(redis, prefix=prefix),
        audit=AuditLog(redis, prefix=prefix, retention=lifetimes.retention),
        portal_links=PortalLinks(redis, prefix=prefix),
        search=OrderSearch(redis, store, events, prefix=prefix),
        categories=Categories(redis, prefix=prefix),
    )
