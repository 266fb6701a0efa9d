"""The server-rendered pages' templates (``relay/templates``): the console and the sandbox checkout
share one Jinja environment, autoescaping everything."""

from __future__ import annotations

from datetime import datetime

import jinja2

from relay.models import iso_z


def make_templates() -> jinja2.Environment:
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("relay", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    templates.filters["money"] = _money
    templates.filters["when"] = _when
    return templates


def _money(amount: int) -> str:
    return f"{amount:,}"


def _when(moment: datetime | None) -> str:
    return iso_z(moment).replace("T", " ") if moment else ""
