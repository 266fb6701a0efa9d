"""Per-endpoint isolation: at most ``limit`` deliveries in flight to one endpoint (scheme, host,
port) per worker process. A hanging merchant then holds at most ``limit`` of the worker's
``max_jobs`` slots; its other deliveries are postponed (not attempted, not counted as attempts)
instead of queueing behind it."""

from __future__ import annotations

from collections import Counter
from urllib.parse import urlsplit


def endpoint(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


class HostLimiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._busy: Counter[str] = Counter()

    def try_acquire(self, key: str) -> bool:
        if self._busy[key] >= self.limit:
            return False
        self._busy[key] += 1
        return True

    def release(self, key: str) -> None:
        self._busy[key] -= 1
        if self._busy[key] <= 0:
            del self._busy[key]

    def in_flight(self, key: str) -> int:
        return self._busy[key]
