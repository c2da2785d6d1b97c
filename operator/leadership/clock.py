"""The clock every decision reads, and the two ways of waiting on it.

Time comes from one injectable `Clock`: monotonic seconds (`now`) for every decision, and UTC
wall time (`wall`) only for the human-readable MicroTime fields written into the Lease. No
decision in this package reads wall time, so a wall clock that jumps (NTP, a VM restore,
libfaketime) changes nothing but the timestamps people read.

`SystemClock` is the real one; `leadership.testing.ManualClock` moves only when told to.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


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


class DeadlineExceeded(Exception):
    """`race()` hit its deadline before the awaitable finished (which was cancelled)."""

    def __str__(self) -> str:
        return "no answer before the deadline"


async def unless_set(aw: Awaitable[T], event: asyncio.Event) -> T | None:
    """Await `aw` and return its answer (or raise its error); None if `event` is set first,
    and `aw` is then cancelled. No deadline: for requests that their store bounds itself."""
    answer = asyncio.ensure_future(aw)
    setting = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({answer, setting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (setting, answer):
            if not waiter.done():
                waiter.cancel()
        await asyncio.gather(setting, answer, return_exceptions=True)
    if answer not in done:
        return None
    return answer.result()


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
