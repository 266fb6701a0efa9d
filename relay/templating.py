"""The server-rendered pages' templates (``relay/templates``): the console and the sandbox checkout
share one Jinja environment, autoescaping everything."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from importlib.resources import files

import jinja2

from relay.models import iso_z

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
