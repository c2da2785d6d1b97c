"""The shared Lease watch's suspicion rule: a watch a read found behind is restarted only if
it then stays silent (a dead connection), never while it delivers (merely behind)."""

from __future__ import annotations

import asyncio
import time

from leadership_operator.leases import LeaseWatch


def watch_with_stream() -> tuple[LeaseWatch, asyncio.Future[None]]:
    watch = LeaseWatch(api=None, namespace=None, state=None,  # type: ignore[arg-type]
                       on_change=lambda: None, metrics=None)  # type: ignore[arg-type]
    stream: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    watch._stream = stream  # type: ignore[assignment]  # as run() holds its open stream
    return watch, stream


async def test_a_suspected_watch_that_stays_silent_is_restarted() -> None:
    watch, stream = watch_with_stream()
    watch.suspect(grace=0.05)
    await asyncio.wait_for(asyncio.wait([stream]), timeout=5)
    assert stream.cancelled()


async def test_a_suspected_watch_that_delivers_anything_is_left_alone() -> None:
    watch, stream = watch_with_stream()
    watch.suspect(grace=0.05)
    watch.last_activity = time.monotonic() + 0.001  # an event (or a bookmark) arrives
    assert watch._suspicion is not None
    await asyncio.wait_for(watch._suspicion, timeout=5)
    assert not stream.done()
    stream.cancel()


async def test_suspicions_while_one_is_pending_do_not_pile_up() -> None:
    watch, stream = watch_with_stream()
    watch.suspect(grace=0.05)
    first = watch._suspicion
    watch.suspect(grace=0.05)
    assert watch._suspicion is first
    await asyncio.wait_for(asyncio.wait([stream]), timeout=5)
    assert stream.cancelled()
