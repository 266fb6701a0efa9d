"""The server-rendered pages' templates (``relay/templates``): the console and the sandbox checkout
share one Jinja environment, autoescaping everything."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from importlib.resources import files

import jinja2

from relay.models import iso_z
from relay.signing import USER_AGENT

# What every server-rendered page is sent with, besides its own Content-Security-Policy: never
# framed, never cached, no referrer to leave with, no content-type sniffing.
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def make_templates() -> jinja2.Environment:
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("relay", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    templates.filters["money"] = _money
    templates.filters["when"] = _when
    templates.filters["duration"] = _duration
    templates.globals["webhook_user_agent"] = USER_AGENT
    return templates


@cache
def static_text(name: str) -> str:
    """A static file served beside the pages (``relay/templates/console.css``, ``sandbox.js``),
    read once per process."""
    return files("relay").joinpath("templates", name).read_text(encoding="utf-8")


def _money(amount: int) -> str:
    return f"{amount:,}"


def _when(moment: datetime | None) -> str:
    return iso_z(moment).replace("T", " ") if moment else ""


def _duration(span: timedelta) -> str:
    """A setting's span as people say it: "5 days", "36 hours", "90 seconds"."""
    if span.total_seconds() != int(span.total_seconds()):
        return f"{span.total_seconds():g} seconds"
    seconds = int(span.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} second{'' if seconds == 1 else 's'}"
