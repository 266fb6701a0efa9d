"""The Lua scripts relay runs inside Redis, one file each.

Each script is one atomic step: Redis runs it without interleaving other commands, which is what
makes a check and the writes it allows one step. Every file opens with a header naming its KEYS
and ARGV; ids travel as ARGV, never parsed back out of a key. Every script is tested on a real Redis
and on the embedded store (fakeredis): through its store in ``tests/test_store.py``,
``tests/test_events.py``, ``tests/test_ingest.py`` and ``tests/test_arq_compat.py``, and as a file
(headers, no orphan) in ``tests/test_lua.py``.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def source(name: str) -> str:
    """The text of ``relay/lua/{name}.lua``."""
    return files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


@cache
def library(name: str) -> str:
    """The text of ``relay/lua/lib/{name}.lua``: functions loaded ahead of the scripts that use them."""
    return files(__name__).joinpath("lib", f"{name}.lua").read_text(encoding="utf-8")
