"""`eventually`: the one way the tests, the demo and the benchmarks wait for a condition.

A condition is polled until it returns something true, which is returned; past the
deadline it fails with an `AssertionError` naming what was awaited and the last value seen
(the reason a test failed), or with the error `fail(last)` makes (the control plane's
own waits raise their own errors). No fixed sleep stands in for a condition anywhere: a
wait is for something, with a deadline.

`eventually` blocks the calling thread; `eventually_async` awaits (its polls are
`asyncio.sleep`, so the loop keeps running the code under test).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _failure(what: str, within: float, last: object) -> AssertionError:
    return AssertionError(f"not within {within:g} s: {what} (last seen: {last!r})")


def eventually(condition: Callable[[], T | None], within: float, what: str, *,
               every: float = 0.02, fail: Callable[[Any], BaseException] | None = None) -> T:
    """Poll `condition()` every `every` seconds until it returns something true; return it."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise fail(value) if fail is not None else _failure(what, within, value)
        time.sleep(every)


async def eventually_async(condition: Callable[[], T | Awaitable[T]], within: float,
                           what: str, *, every: float = 0.005,
                           fail: Callable[[Any], BaseException] | None = None) -> T:
    """`eventually` on an event loop: polls between turns of the loop. The condition may be
    a coroutine function (one request per look, say)."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise fail(value) if fail is not None else _failure(what, within, value)
        await asyncio.sleep(every)
