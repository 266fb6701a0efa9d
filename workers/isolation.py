"""Per-endpoint isolation: at most ``limit`` deliveries in flight to one endpoint (scheme, host,
port) per worker process. A hanging merchant then holds at most ``limit`` of the worker's
``max_jobs`` slots; its other deliveries are postponed (not attempted, not counted as attempts)
instead of queueing behind it.

A busy but healthy endpoint is another matter: the worker starts a poll's jobs together, so a
backlog for one merchant arrives ``max_jobs`` at a time, and postponing all but ``limit`` of them
would stall a merchant that answers in milliseconds. So a delivery that finds its endpoint full
waits for a slot, first come first served, for as long as the endpoint's requests keep finishing:
once its oldest request in flight has been out ``stall_after`` seconds, the endpoint counts as
stuck and the waiting deliveries are postponed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

STALL_AFTER = 0.2


def endpoint(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


class HostLimiter:
    def __init__(
        self,
        limit: int,
        *,
        stall_after: float = STALL_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.stall_after = stall_after
        self.clock = clock
        self._started: dict[str, list[float]] = {}  # endpoint -> start times of its requests in flight
        self._waiters: dict[str, deque[asyncio.Future[float]]] = {}

    async def acquire(self, key: str) -> float | None:
        """A slot for ``key``: a token to ``release`` it with, or None if the endpoint is stuck."""
        started = self._started.setdefault(key, [])
        waiters = self._waiters.setdefault(key, deque())
        first = True
        while True:
            if len(started) < self.limit and (not waiters or not first):
                token = self.clock()
                started.append(token)
                return token
            first = False
            age = self.clock() - min(started) if started else 0.0
            if age >= self.stall_after:
                self._forget(key)
                return None
            waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            waiters.append(waiter)
            try:
                return await asyncio.wait_for(waiter, self.stall_after - age)  # ``release`` hands over
            except TimeoutError:
                continue
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed a slot, then cancelled
                    self.release(key, waiter.result())
                raise
            finally:
                if waiter in waiters:
                    waiters.remove(waiter)

    def release(self, key: str, token: float) -> None:
        started = self._started[key]
        started.remove(token)
        waiters = self._waiters.get(key, deque())
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                handed = self.clock()
                started.append(handed)
                waiter.set_result(handed)
                return
        self._forget(key)

    def in_flight(self, key: str) -> int:
        return len(self._started.get(key, ()))

    def _forget(self, key: str) -> None:
        if not self._started.get(key) and not self._waiters.get(key):
            self._started.pop(key, None)
            self._waiters.pop(key, None)
