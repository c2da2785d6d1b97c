"""The operator's work queue, as controller-runtime's, on the injected clock.

- `add(item)`: the item needs a look (its Lease or its pods changed). An item added while
  it is being worked on is handed out again once that work is `done`: never twice at once,
  never lost.
- `add_at(item, at)`: the item needs a look at `at` (an expiry, a grace running out). Only
  the earliest pending time per item is kept, so the timers stay about one per item however
  often it is re-armed (the work it starts arms the later ones again).
- `failed(item)`: the work failed; the item is handed out again after a jittered
  exponential back-off (`toolkit.backoff`: exactly `RETRY[0]` after the first failure,
  then at random up to twice the last ceiling, at most `RETRY[1]`); `succeeded` resets it.
- `take()` hands out every item due now and not in flight; `wait()` returns when there may
  be more.

It decides nothing and makes no request: the reconciler owns the work.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from leadership import Clock, toolkit

T = TypeVar("T", bound=Hashable)

#: (first, largest) delay in seconds before failed work is tried again.
RETRY = (1.0, 60.0)


class WorkQueue(Generic[T]):
    """See the module's doc. `order` sorts what `take` hands out (for a deterministic
    order); `rng` draws the back-off's jitter."""

    def __init__(self, clock: Clock, *, retry: tuple[float, float] = RETRY,
                 order: Callable[[T], Any] | None = None,
                 rng: random.Random | None = None) -> None:
        self.clock, self.retry, self.order = clock, retry, order
        self.rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._dirty: dict[T, None] = {}  # an ordered set
        self._in_flight: set[T] = set()
        self._timers: list[tuple[float, int, T]] = []  # (when, tie-breaker, item): a heap
        self._due: dict[T, float] = {}  # the earliest pending time per item
        self._failures: dict[T, int] = {}
        self._ties = itertools.count()

    def add(self, item: T) -> None:
        self._dirty[item] = None
        self._wake.set()

    def add_at(self, item: T, at: float) -> None:
        pending = self._due.get(item)
        if pending is not None and pending <= at:
            return
        self._due[item] = at
        heapq.heappush(self._timers, (at, next(self._ties), item))
        self._wake.set()  # the loop may be waiting for a later time, or none

    def take(self) -> list[T]:
        """Every item due now and not in flight, marked in flight; `done` each one."""
        now = self.clock.now()
        while self._timers and self._timers[0][0] <= now:
            at, _, item = heapq.heappop(self._timers)
            if self._due.get(item) == at:
                del self._due[item]
                self._dirty[item] = None
        ready = [item for item in self._dirty if item not in self._in_flight]
        for item in ready:
            del self._dirty[item]
        self._in_flight.update(ready)
        return sorted(ready, key=self.order) if self.order else ready

    def done(self, item: T) -> None:
        self._in_flight.discard(item)
        if item in self._dirty:
            self._wake.set()  # added again while in flight: hand it out again

    def failed(self, item: T) -> float:
        """Count a failure of `item`'s work and schedule it again; the delay chosen."""
        attempt = self._failures.get(item, 0)
        self._failures[item] = attempt + 1
        delay = toolkit.backoff(self.rng, attempt, *self.retry)
        self.add_at(item, self.clock.now() + delay)
        return delay

    def succeeded(self, item: T) -> None:
        self._failures.pop(item, None)

    def forget(self, item: T) -> None:
        """Drop what the queue keeps of `item` (its failures, its pending time)."""
        self._failures.pop(item, None)
        self._due.pop(item, None)  # its heap entry is skipped when it comes up

    def timers(self) -> int:
        """Entries in the timer heap, superseded ones included: about one per item with a
        pending time, not one per `add_at`."""
        return len(self._timers)

    def in_flight(self) -> int:
        return len(self._in_flight)

    async def wait(self) -> None:
        """Until an item is added or handed back, or the next pending time comes."""
        while self._timers and self._due.get(self._timers[0][2]) != self._timers[0][0]:
            heapq.heappop(self._timers)  # superseded or forgotten
        due = self._timers[0][0] if self._timers else None
        await toolkit.wait_until(self.clock, due, self._wake)
        self._wake.clear()
