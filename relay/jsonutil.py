"""JSON in and out: compact deterministic output, and parsing that turns every bad body into
InvalidInput.

A body is read as UTF-8 (RFC 8259), strictly. What ``json.loads`` itself cannot take becomes
InvalidInput too: nesting deep enough to exhaust its recursion, an integer of more than 4,300
digits (Python's limit on converting long digit strings). Two things it accepts are refused
after it, because nothing downstream can hold them: nesting deeper than ``MAX_DEPTH`` (serialisers
and Redis's Lua JSON give up long before the parser does) and a ``\\ud800``-style escape that leaves
a lone surrogate, which UTF-8 cannot encode, in a string or a key.
"""

from __future__ import annotations

import json
import re
from typing import Any

from relay.errors import InvalidInput

MAX_DEPTH = 64
# A \uD800-\uDFFF escape: only then can a parsed string hold a surrogate (decoding is strict).
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def parse(body: bytes | str) -> Any:
    try:
        text = body.decode() if isinstance(body, bytes) else body
        value = json.loads(text)
    except json.JSONDecodeError:
        raise InvalidInput("body is not valid JSON") from None
    except UnicodeDecodeError:
        raise InvalidInput("body is not UTF-8") from None
    except RecursionError:
        raise InvalidInput(f"body is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # the int-string limit: more digits than Python converts
        raise InvalidInput("body has a number too long to read") from None
    # Both checks walk the value: skip them when the text shows it cannot fail them (brackets
    # inside strings count too, which only errs toward walking).
    deep = text.count("{") + text.count("[") > MAX_DEPTH
    surrogates = SURROGATE_ESCAPE.search(text) is not None or (isinstance(body, str) and not text.isascii())
    if deep or surrogates:
        _check_shape(value, surrogates=surrogates)
    return value


def parse_object(body: bytes | str) -> dict[str, Any]:
    value = parse(body)
    if not isinstance(value, dict):
        raise InvalidInput("body must be a JSON object")
    return value


def _check_shape(value: Any, *, surrogates: bool) -> None:
    """Refuse nesting past MAX_DEPTH and (when the text may hold any) lone surrogates. Iterative:
    a body that is deep is exactly what this must not recurse over."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        current, depth = pending.pop()
        if isinstance(current, dict):
            if depth > MAX_DEPTH:
                raise InvalidInput(f"body is nested deeper than {MAX_DEPTH} levels")
            if surrogates:
                for key in current:
                    _check_text(key)
            pending.extend((child, depth + 1) for child in current.values())
        elif isinstance(current, list):
            if depth > MAX_DEPTH:
                raise InvalidInput(f"body is nested deeper than {MAX_DEPTH} levels")
            pending.extend((child, depth + 1) for child in current)
        elif surrogates and isinstance(current, str):
            _check_text(current)


def _check_text(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise InvalidInput("body has a string that is not valid Unicode (a lone surrogate)") from None
