"""`Follower`: stream who leads an election, without campaigning (the seed's ``follower.go``).

It yields the current holder's identity, de-duplicated, and ``""`` while the Lease is free or
expired. Expiry is judged like a candidate judges it: the record observed unchanged for its
``leaseDurationSeconds`` on this process's monotonic clock, with a timer, not a poll.

Before it reports an expiry it confirms it with one fresh read (see `leadership.observer`): a
watch gone silent over a half-open connection therefore never turns a live leader into
``""``; the read restarts that watch instead. If the read itself fails, nothing live can be
shown, and the expiry is reported.

It makes no request besides one GET, its watch, and that one read per expiry. Transient
errors are retried inside; an error retrying cannot fix (401, 403, a missing namespace) ends
the iterator with that exception.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator
from types import TracebackType

from .clock import Clock, SystemClock, wait_until
from .errors import TransientStoreError
from .observer import LeaseObserver, Observation
from .stores import LeaseStore
from .validation import check_clock, check_store, validate_key, validate_ttl

log = logging.getLogger("leadership.follower")


class Follower:
    """Follow the Lease `key` in `store`. `async for leader in follower: ...`

    `ttl` is only used to wait out a holder whose own duration is unreadable.
    """

    def __init__(self, store: LeaseStore, key: str, *, ttl: int = 15,
                 clock: Clock | None = None) -> None:
        self.store = check_store(store)
        self.key = validate_key(key)
        self.ttl = validate_ttl(ttl)
        self.clock: Clock = check_clock(clock) or SystemClock()
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
        # Every observation is queued, so two changes that arrive together are all seen.
        pending: collections.deque[Observation] = collections.deque()
        observer.listeners.append(pending.append)
        watcher = asyncio.get_running_loop().create_task(observer.run())
        last: str | None = None
        latest: Observation | None = None
        try:
            while not self._stop.is_set():
                changed = observer.changed_event()
                if pending:
                    latest = pending.popleft()
                if latest is not None:
                    now = self.clock.now()
                    if last and not pending and latest.expired_at(now):
                        await self._confirm(observer)
                        if pending:
                            continue  # the read showed something newer: take it in first
                    leader = latest.holder_at(now)
                    if leader != last:
                        last = leader
                        yield leader
                    if pending:
                        continue
                expires = latest.expires_at if latest is not None and last else None
                await wait_until(self.clock, expires, changed, self._stop, observer.failed)
                observer.raise_if_failed()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _confirm(self, observer: LeaseObserver) -> None:
        try:
            await observer.confirm_expiry()
        except TransientStoreError as exc:
            log.warning("%s: could not confirm that %s expired (%s); reporting it",
                        observer.where, observer.current and
                        observer.current.record.holder_identity, exc)
