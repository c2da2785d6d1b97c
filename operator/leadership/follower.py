"""`Follower`: stream who leads an election, without campaigning (the seed's ``follower.go``).

It yields the current holder's identity, de-duplicated, and ``""`` while the Lease is free or
expired. Expiry is judged like a candidate judges it: the record observed unchanged for its
``leaseDurationSeconds`` on this process's monotonic clock, with a timer, not a poll. It makes
no request besides one GET and its watch; transient errors are retried inside, and an error
retrying cannot fix (401, 403, a missing namespace) ends the iterator with that exception.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from types import TracebackType

from .candidate import validate_key
from .observer import LeaseObserver, Observation
from .stores import LeaseStore, check_store
from .timing import Clock, SystemClock, validate_ttl, wait_until


class Follower:
    """Follow the Lease `key` in `store`. `async for leader in follower: ...`

    `ttl` is only used to wait out a holder whose own duration is unreadable.
    """

    def __init__(self, store: LeaseStore, key: str, *, ttl: int = 15,
                 clock: Clock | None = None) -> None:
        self.store = check_store(store)
        self.key = validate_key(key)
        self.ttl = validate_ttl(ttl)
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a Clock, got {type(clock).__name__}")
        self.clock: Clock = clock or SystemClock()
        self._stop = asyncio.Event()
        self._started = False

    def __repr__(self) -> str:
        return f"Follower(key={self.key!r}, store={self.store!r})"

    def __aiter__(self) -> AsyncIterator[str]:
        if self._started:
            raise RuntimeError(f"{self!r} can be iterated only once")
        self._started = True
        return self._follow()

    async def stop(self) -> None:
        """End the iteration (idempotent)."""
        self._stop.set()

    async def __aenter__(self) -> Follower:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _follow(self) -> AsyncIterator[str]:
        observer = LeaseObserver(self.store, self.key, self.clock, self.ttl)
        # Every observation is queued, so two changes that arrive together are both seen.
        pending: collections.deque[Observation] = collections.deque()
        observer.listeners.append(pending.append)
        watcher = asyncio.get_running_loop().create_task(observer.run())
        watcher_done = asyncio.Event()
        watcher.add_done_callback(lambda _task: watcher_done.set())
        last: str | None = None
        latest: Observation | None = None
        try:
            while not self._stop.is_set():
                changed = observer.changed_event()
                if pending:
                    latest = pending.popleft()
                if latest is not None:
                    leader = latest.holder_at(self.clock.now())
                    if leader != last:
                        last = leader
                        yield leader
                    if pending:
                        continue
                expires = latest.expires_at if latest is not None and last else None
                await wait_until(self.clock, expires, changed, self._stop, watcher_done)
                if watcher.done() and not watcher.cancelled():
                    error = watcher.exception()
                    if error is not None:
                        raise error
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
