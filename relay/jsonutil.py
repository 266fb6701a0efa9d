"""JSON in and out: compact deterministic output, and parsing that turns every bad body into
InvalidInput (including nesting deep enough to exhaust the parser's recursion)."""

from __future__ import annotations

import json
from typing import Any

from relay.errors import InvalidInput


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def parse(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise InvalidInput("body is not valid JSON") from None


def parse_object(body: bytes | str) -> dict[str, Any]:
    value = parse(body)
    if not isinstance(value, dict):
        raise InvalidInput("body must be a JSON object")
    return value
