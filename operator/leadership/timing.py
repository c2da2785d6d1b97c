"""Timing configuration, its safety rule, and the clock every decision reads.

The safety rule (validated up front, `ValueError` naming the argument otherwise)::

    0 < 1.2 * renew_interval < renew_deadline < ttl

- The leader renews every `renew_interval` seconds and believes it leads only while its last
  successful renewal was *sent* less than `renew_deadline` ago.
- A follower takes over only after it has watched the record stay unchanged for `ttl`
  (the Lease's ``leaseDurationSeconds``), counted from when it *saw* the change, which is
  never earlier than the write was sent.

So the leader's belief ends at least ``ttl - renew_deadline`` before any follower may act, on
the two processes' own monotonic clocks. That margin absorbs clock *rate* skew of up to
``(ttl - renew_deadline) / ttl`` (a third with the defaults); clock *offset* does not matter
because no remote timestamp is ever compared with the local clock.

Time comes from one injectable `Clock` (monotonic seconds for decisions, UTC wall time only
for the human-readable MicroTime fields written into the Lease). `SystemClock` is the real one;
`ManualClock` lets tests move time by hand, deterministically.
"""

from __future__ import annotations

import asyncio
import datetime
import heapq
import itertools
import math
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

T = TypeVar("T")

#: ``leaseDurationSeconds`` is an int32 in the Lease API.
MAX_TTL = 2**31 - 1
#: client-go's jitter factor: the renew deadline must exceed 1.2 renew intervals.
JITTER_FACTOR = 1.2


@runtime_checkable
class Clock(Protocol):
    """Where time comes from. `now()` is monotonic seconds; `wall()` is aware UTC."""

    def now(self) -> float: ...

    def wall(self) -> datetime.datetime: ...

    async def sleep_until(self, deadline: float) -> None: ...


class SystemClock:
    """The real clock: `time.monotonic()` for decisions, the system wall clock for display."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class ManualClock:
    """A clock that moves only when told to; for deterministic tests.

    `await clock.advance(seconds)` wakes every sleeper whose deadline falls inside the step,
    in deadline order, letting the event loop run until it is idle after each wake-up.
    """

    EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

    def __init__(self, start: float = 1000.0) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> datetime.datetime:
        return self.EPOCH + datetime.timedelta(seconds=self._now)

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), fut))
        await fut

    async def settle(self) -> None:
        """Run the event loop until no callback is ready (every task waits on something)."""
        loop = asyncio.get_running_loop()
        idle_rounds = 0
        for _ in range(10_000):
            await asyncio.sleep(0)
            ready = getattr(loop, "_ready", None)
            idle_rounds = idle_rounds + 1 if not ready else 0
            if idle_rounds >= 3:
                return
        raise RuntimeError("ManualClock.settle: the event loop never became idle")

    def jump(self, seconds: float) -> None:
        """Move time on without running anything: what a paused process (SIGSTOP, a long GC
        pause, a frozen VM) sees when it resumes."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        self._now += seconds

    async def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        target = self._now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline = self._sleepers[0][0]
            self._now = max(self._now, deadline)
            # Everything due at the same instant wakes together, as on a real clock.
            while self._sleepers and self._sleepers[0][0] == deadline:
                _, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    fut.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()


async def wait_until(clock: Clock, deadline: float | None, *events: asyncio.Event) -> None:
    """Return as soon as any of `events` is set or `clock` reaches `deadline` (None: never)."""
    if any(e.is_set() for e in events):
        return
    waiters: list[asyncio.Task[object]] = [asyncio.ensure_future(e.wait()) for e in events]
    if deadline is not None:
        if deadline <= clock.now():
            for w in waiters:
                w.cancel()
            return
        waiters.append(asyncio.ensure_future(clock.sleep_until(deadline)))
    if not waiters:
        raise ValueError("wait_until needs a deadline or at least one event")
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def backoff(rng: random.Random, attempt: int, low: float, high: float) -> float:
    """Jittered exponential backoff: a random delay in [low, min(high, low * 2**attempt)]."""
    ceiling = min(high, low * (2 ** min(attempt, 16)))
    return float(low + rng.random() * max(0.0, ceiling - low))


class DeadlineExceeded(Exception):
    """`race()` hit its deadline before the awaitable finished (which was cancelled)."""


async def race(clock: Clock, aw: Awaitable[T], deadline: float) -> T:
    """Await `aw`, cancelling it and raising `DeadlineExceeded` at `deadline` on `clock`.

    If the caller is cancelled meanwhile, `aw` is cancelled too and CancelledError propagates.
    """
    task = asyncio.ensure_future(aw)
    timer = asyncio.ensure_future(clock.sleep_until(deadline))
    try:
        done, _ = await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        timer.cancel()
        await asyncio.gather(task, timer, return_exceptions=True)
        raise
    timer.cancel()
    await asyncio.gather(timer, return_exceptions=True)
    if task not in done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise DeadlineExceeded()
    return task.result()


@dataclass(frozen=True)
class Timing:
    """Validated timing of one candidate. Build it with `Timing.from_args`."""

    ttl: int
    renew_interval: float
    renew_deadline: float
    #: after resigning, how long a free lease is left to others before campaigning for it.
    resign_grace: float
    #: first and largest delay between retries of a failed request (jittered).
    retry_min: float
    retry_max: float

    @classmethod
    def from_args(
        cls,
        ttl: object,
        renew_interval: object = None,
        renew_deadline: object = None,
        resign_grace: object = None,
    ) -> Timing:
        whole_ttl = validate_ttl(ttl)
        interval = (_positive_seconds("renew_interval", renew_interval)
                    if renew_interval is not None else whole_ttl / 3)
        deadline = (_positive_seconds("renew_deadline", renew_deadline)
                    if renew_deadline is not None else whole_ttl * 2 / 3)
        grace = (_positive_seconds("resign_grace", resign_grace, allow_zero=True)
                 if resign_grace is not None else interval)
        if not deadline < whole_ttl:
            raise ValueError(
                f"renew_deadline ({deadline:g}s) must be less than ttl ({whole_ttl}s): the leader "
                "must step down before any follower may take over")
        if not JITTER_FACTOR * interval < deadline:
            raise ValueError(
                f"renew_interval ({interval:g}s) times {JITTER_FACTOR} must be less than "
                f"renew_deadline ({deadline:g}s), so that a renewal can be retried in time")
        return cls(whole_ttl, interval, deadline, grace,
                   retry_min=min(0.2, interval / 4), retry_max=max(interval / 2, 0.05))


def validate_ttl(ttl: object, name: str = "ttl") -> int:
    """A positive whole number of seconds (an int, or an integral float), at most int32."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"{name} must be a whole number of seconds, got {type(ttl).__name__}")
    if isinstance(ttl, float) and not (math.isfinite(ttl) and ttl.is_integer()):
        raise ValueError(f"{name} must be a whole number of seconds, got {ttl!r}")
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"{name} must be between 1 and {MAX_TTL} seconds, got {ttl!r}")
    return int(ttl)


def _positive_seconds(name: str, value: object, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)
