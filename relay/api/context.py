"""Typed application keys: the resources every handler reaches through ``request.config_dict``
(``request.app`` in the root app's handlers; a sub-application such as the console sees the root's
keys through ``config_dict``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import aiohttp
import jinja2
from aiohttp import web
from arq.connections import ArqRedis

from relay.api_keys import ApiKeys
from relay.audit import AuditLog
from relay.categories import Categories
from relay.connections import Connections
from relay.events import EventStore
from relay.gateways import Gateway
from relay.metrics import Metrics
from relay.portal import PortalLinks
from relay.ratelimit import FailedAuth, PurchaseLimit
from relay.replay import Operations
from relay.replicas import Replicas
from relay.sessions import SessionStore
from relay.settings import Settings
from relay.store import Store
from relay.subscriptions import Subscriptions

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
CLOCK: web.AppKey[Callable[[], datetime]] = web.AppKey("clock")
GATEWAYS: web.AppKey[dict[str, Gateway]] = web.AppKey("gateways")
SANDBOX_KEY: web.AppKey[Callable[[], str]] = web.AppKey("sandbox_key")  # in sandbox mode only
TEMPLATES = web.AppKey("templates", jinja2.Environment)
CONNECTIONS = web.AppKey("connections", Connections)
STORE = web.AppKey("store", Store)
EVENTS = web.AppKey("events", EventStore)
SUBSCRIPTIONS = web.AppKey("subscriptions", Subscriptions)
SESSIONS = web.AppKey("sessions", SessionStore)
OPERATIONS = web.AppKey("operations", Operations)
ARQ = web.AppKey("arq", ArqRedis)
HTTP = web.AppKey("http", aiohttp.ClientSession)
PURCHASE_LIMIT = web.AppKey("purchase_limit", PurchaseLimit)
FAILED_AUTH = web.AppKey("failed_auth", FailedAuth)
FAILED_LINKS = web.AppKey("failed_links", FailedAuth)
API_KEYS = web.AppKey("api_keys", ApiKeys)
AUDIT = web.AppKey("audit", AuditLog)
PORTAL_LINKS = web.AppKey("portal_links", PortalLinks)
CATEGORIES = web.AppKey("categories", Categories)
REPLICAS = web.AppKey("replicas", Replicas)  # confirms acknowledged writes (RELAY_REDIS_MIN_REPLICAS_ACK)
