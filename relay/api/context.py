"""Typed application keys: the resources every handler reaches through ``request.app``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import aiohttp
from aiohttp import web
from arq.connections import ArqRedis

from relay.connections import Connections
from relay.events import EventStore
from relay.gateways import Gateway
from relay.metrics import Metrics
from relay.ratelimit import RateLimit
from relay.settings import Settings
from relay.store import Store

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
CLOCK: web.AppKey[Callable[[], datetime]] = web.AppKey("clock")
GATEWAYS: web.AppKey[dict[str, Gateway]] = web.AppKey("gateways")
CONNECTIONS = web.AppKey("connections", Connections)
STORE = web.AppKey("store", Store)
EVENTS = web.AppKey("events", EventStore)
ARQ = web.AppKey("arq", ArqRedis)
HTTP = web.AppKey("http", aiohttp.ClientSession)
PURCHASE_LIMIT = web.AppKey("purchase_limit", RateLimit)
