"""`run_while_leading`: run a coroutine only while a `Candidate` leads.

A supervisor built on the candidate's public surface only: its stream of "am I leader?",
`Candidate.on_step_down` (awaited at every step-down, before a voluntary release) and
`stop()`. The rules, which `Candidate.run_while_leading` documents:

- leadership lost: `work` is cancelled at once, and called again when leadership is regained;
- `work` returns: the candidate stops (releasing the Lease) and this returns;
- `work` raises: the candidate stops, then the exception propagates;
- `stop()`, or this coroutine cancelled: `work` is cancelled and has finished cancelling
  before the Lease is released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Protocol

log = logging.getLogger("leadership.candidate")


class Campaigner(Protocol):
    """What the supervisor needs of a `Candidate`: its public surface, nothing more."""

    @property
    def is_leader(self) -> bool: ...

    def run_for_election(self) -> AsyncIterator[bool]: ...

    def on_step_down(self, hook: Callable[[], Awaitable[None]]) -> Callable[[], None]: ...

    async def stop(self) -> None: ...


async def run_while_leading(candidate: Campaigner,
                            work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Campaign with `candidate` and run ``await work()`` only while it leads (see the
    module's doc). Call it once per Candidate: it calls ``run_for_election()``."""
    if not callable(work):
        raise TypeError(f"work must be a coroutine function, got {type(work).__name__}")
    task: asyncio.Task[Any] | None = None
    failure: BaseException | None = None
    stopping: asyncio.Task[None] | None = None

    async def cancel_work() -> None:
        nonlocal task
        running, task = task, None
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    def on_done(done: asyncio.Task[Any]) -> None:
        nonlocal failure, stopping
        if done.cancelled():
            return
        failure = done.exception()
        if failure is not None:
            log.error("%r: work failed while leading; stepping down: %r", candidate, failure)
        else:
            log.info("%r: work finished; leaving the election", candidate)
        stopping = asyncio.ensure_future(candidate.stop())

    remove_hook = candidate.on_step_down(cancel_work)
    try:
        try:
            async for leading in candidate.run_for_election():
                if leading and candidate.is_leader and task is None:
                    task = asyncio.get_running_loop().create_task(work())
                    task.add_done_callback(on_done)
                elif not leading:
                    await cancel_work()
        except asyncio.CancelledError:
            await asyncio.shield(candidate.stop())  # work is cancelled, then the Lease released
            raise
    finally:
        remove_hook()
        await cancel_work()
        if stopping is not None:
            await asyncio.gather(stopping, return_exceptions=True)
    if failure is not None:
        raise failure
