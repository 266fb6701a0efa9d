"""Per-endpoint isolation, and a bounded share for endpoints that hold slots without answering.

Two limits, per worker process:

- **Per endpoint** (scheme, host, port): at most ``limit`` deliveries in flight
  (RELAY_WORKER_HOST_CONCURRENCY). A busy but healthy endpoint is waited for: the worker starts a
  poll's jobs together, so a backlog for one merchant arrives ``max_jobs`` at a time, and a
  delivery that finds its endpoint full waits for a slot, first come first served, for as long as
  the endpoint's requests keep finishing.
- **Together, for suspect endpoints**: an endpoint is *proven* once a request to it finished within
  ``slow_after`` (1 s: a merchant that answers in a few hundred milliseconds is healthy); one that
  has not (new to this worker, or its last request was slower) gets one request at a time, and a
  request out ``slow_after`` and more is *stuck*. Requests to endpoints not proven, and stuck
  requests, may hold together at most ``stuck_slots`` of the worker's slots
  (RELAY_WORKER_STUCK_SHARE of RELAY_WORKER_MAX_JOBS). Past that, a delivery to such an endpoint is
  postponed (not attempted, not counted as an attempt).

So 50 dead merchants (or one merchant's 50 hostnames) hold at most half the slots however many
there are, and a healthy merchant keeps the rest; the first request to a healthy merchant proves it
in milliseconds, and its backlog then flows ``limit`` at a time. A merchant this worker has never
seen gets its first request even while the share is taken, out of a small reserve for such trials
(a tenth of the share), so dead endpoints cannot keep it from proving itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

STALL_AFTER = 0.2
SLOW_AFTER = 1.0
# Never-seen endpoints may have one trial request each past the stuck share, up to this fraction
# of it in all (a tenth: 5 of a worker's 100 slots with the default share).
TRIAL_SHARE = 10
REMEMBERED = 10_000  # endpoints whose health a worker remembers (the least recently used are forgotten)


def endpoint(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


@dataclass(eq=False)
class Slot:
    """One delivery in flight: ``acquire`` hands it out, ``release`` takes it back."""

    key: str
    started: float
    suspect: bool  # granted to an endpoint not proven: counted in the stuck share from the start
    trial: bool = False  # granted to a never-seen endpoint out of the reserve past the share


class HostLimiter:
    def __init__(
        self,
        limit: int,
        *,
        stuck_slots: int | None = None,
        stall_after: float = STALL_AFTER,
        slow_after: float = SLOW_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.stuck_slots = stuck_slots  # None: no shared bound
        self.stall_after = stall_after
        self.slow_after = slow_after
        self.clock = clock
        self._started: dict[str, list[Slot]] = {}  # endpoint -> its requests in flight
        self._waiters: dict[str, deque[asyncio.Future[Slot]]] = {}
        self._proven: OrderedDict[str, bool] = OrderedDict()  # endpoint -> its last request was quick

    async def acquire(self, key: str) -> Slot | None:
        """A slot for ``key`` (``release`` it), or None: the endpoint is stuck, or endpoints not
        proven already hold the stuck share."""
        first = True
        while True:
            # Read again on every pass: while this waiter slept, the endpoint's lists may have been
            # dropped (its last slot released) and made anew.
            started = self._started.setdefault(key, [])
            waiters = self._waiters.setdefault(key, deque())
            now = self.clock()
            age = now - min(slot.started for slot in started) if started else 0.0
            if len(started) < self._cap(key) and (not waiters or not first):
                slot = self._grant(key, now, stuck=age >= self.slow_after)
                if slot is None:
                    self._forget(key)
                return slot
            first = False
            if age >= self.stall_after:
                self._forget(key)
                return None
            waiter: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
            waiters.append(waiter)
            try:
                return await asyncio.wait_for(waiter, self.stall_after - age)  # ``release`` hands over
            except TimeoutError:
                continue
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed a slot, then cancelled
                    self.release(key, waiter.result(), used=False)
                raise
            finally:
                if waiter in waiters:
                    waiters.remove(waiter)

    def release(self, key: str, slot: Slot, *, used: bool = True) -> None:
        """Give ``slot`` back; a request that ``used`` it tells whether the endpoint is quick."""
        now = self.clock()
        if used:
            self._remember(key, quick=now - slot.started < self.slow_after)
        started = self._started[key]
        started.remove(slot)
        waiters = self._waiters.get(key, deque())
        while waiters and len(started) < self._cap(key):
            waiter = waiters.popleft()
            if waiter.done():
                continue
            handed = self._grant(key, now, stuck=False)
            if handed is None:  # the stuck share is taken: the waiter gives up when its wait ends
                waiters.appendleft(waiter)
                break
            waiter.set_result(handed)
        self._forget(key)

    def in_flight(self, key: str) -> int:
        return len(self._started.get(key, ()))

    def suspect_in_flight(self) -> int:
        """Requests in flight to endpoints not proven, or out ``slow_after`` and more."""
        now = self.clock()
        return sum(
            1
            for slots in self._started.values()
            for slot in slots
            if slot.suspect or now - slot.started >= self.slow_after
        )

    def _cap(self, key: str) -> int:
        """``limit`` for a proven endpoint, one request at a time for any other."""
        return self.limit if self._proven.get(key) else 1

    def _grant(self, key: str, now: float, *, stuck: bool) -> Slot | None:
        """A slot, unless the endpoint is suspect and the stuck share is taken. An endpoint this
        worker has never seen may still have its trial request, out of a small reserve: else dead
        endpoints holding the share would keep a healthy merchant from ever proving itself."""
        proven = self._proven.get(key)
        suspect = stuck or not proven
        trial = False
        if suspect and self.stuck_slots is not None and self.suspect_in_flight() >= self.stuck_slots:
            trial = proven is None and not stuck and self._trials_in_flight() < self._trial_slots()
            if not trial:
                return None
        slot = Slot(key, now, suspect, trial)
        self._started.setdefault(key, []).append(slot)
        return slot

    def _trial_slots(self) -> int:
        return max(1, (self.stuck_slots or 0) // TRIAL_SHARE)

    def _trials_in_flight(self) -> int:
        return sum(1 for slots in self._started.values() for slot in slots if slot.trial)

    def _remember(self, key: str, *, quick: bool) -> None:
        self._proven[key] = quick
        self._proven.move_to_end(key)
        while len(self._proven) > REMEMBERED:
            self._proven.popitem(last=False)

    def _forget(self, key: str) -> None:
        if not self._started.get(key) and not self._waiters.get(key):
            self._started.pop(key, None)
            self._waiters.pop(key, None)
