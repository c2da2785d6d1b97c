"""`Candidate`: campaign for one Lease and stream whether this process leads.

The port of docker/leadership's ``candidate.go``, on client-go's Lease semantics.

Guarantees (on this process's monotonic clock):

- The stream starts with False, never repeats a value, and always ends with False.
- `is_leader` is True only while the last successful renewal was *sent* less than
  `renew_deadline` ago, so it turns False by itself after a pause (SIGSTOP, a long GC, a frozen
  VM) even before the campaign task gets to run again.
- The leader stops believing it leads `ttl - renew_deadline` seconds before any follower that
  watches the same Lease may take it over, whatever the request latency: the deadline counts
  from when the renewal was sent; a follower's wait counts from when it saw the write.
- Voluntary step-down (`resign`, `stop`) flips `is_leader`, yields False and lets the
  `run_while_leading` work finish cancelling *before* the Lease is released.
- Nothing here blocks on the consumer: an absent or slow reader never delays a renewal.

Non-guarantees (see docs/library.md):

- Clock *rate* skew larger than ``(ttl - renew_deadline) / ttl`` between leader and follower,
  or a pause of the leader between checking `is_leader` and acting, can overlap two leaders.
  Protect the shared resource with `fencing_token` where that matters.
- A process whose identity is not unique is not detected: two processes with one identity
  share one leadership.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Literal

from .errors import ConflictError, FatalStoreError, NotFoundError, StoreError, TransientStoreError
from .metrics import CandidateMetrics
from .observer import LeaseObserver, Observation
from .record import (
    JSONDict,
    acquire_changes,
    build_lease,
    parse_lease,
    release_changes,
    renew_changes,
    with_spec_changes,
)
from .stores import LeaseStore, check_store
from .timing import Clock, DeadlineExceeded, SystemClock, Timing, backoff, race, wait_until

log = logging.getLogger("leadership.candidate")

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

StepDown = Literal["stop", "resign", "lost"]


def default_identity() -> str:
    """The pod name (``POD_NAME``, from the downward API), else the host name."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def validate_key(key: object, argument: str = "key") -> str:
    if not isinstance(key, str):
        raise TypeError(f"{argument} must be a str (the Lease name), got {type(key).__name__}")
    if len(key) > 253 or not _DNS_SUBDOMAIN.match(key):
        raise ValueError(f"{argument} must be a valid DNS subdomain name (lowercase letters, "
                         f"digits, '-' and '.', at most 253 characters), got {key!r}")
    return key


def validate_identity(node: object, argument: str = "node") -> str:
    if node is None:
        node = default_identity()
    if not isinstance(node, str):
        raise TypeError(f"{argument} must be a str identity, got {type(node).__name__}")
    if not node.strip():
        raise ValueError(f"{argument} must be a non-empty identity, got {node!r}")
    return node


class _Stream:
    """An unbounded, de-duplicating, single-consumer queue of bools with a terminal state."""

    def __init__(self) -> None:
        self._items: collections.deque[bool] = collections.deque()
        self._last: bool | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._error: BaseException | None = None

    def push(self, value: bool) -> None:
        if self._closed or value == self._last:
            return
        self._last = value
        self._items.append(value)
        self._wake.set()

    def close(self, error: BaseException | None = None) -> None:
        if self._closed:
            return
        self.push(False)
        self._closed, self._error = True, error
        self._wake.set()

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> bool:
        while not self._items:
            if self._closed:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        return self._items.popleft()


class Candidate:
    """Campaign for the Lease `key` in `store` as `node`, holding it `ttl` seconds at a time.

    Timing knobs are keyword-only: `renew_interval` (default ttl/3), `renew_deadline`
    (default 2/3 ttl; must stay below ttl and above 1.2 renew intervals) and `resign_grace`
    (default one renew interval: after resigning, a free Lease is left to others that long).
    """

    def __init__(
        self,
        store: LeaseStore,
        key: str,
        node: str | None = None,
        ttl: int = 15,
        *,
        renew_interval: float | None = None,
        renew_deadline: float | None = None,
        resign_grace: float | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = check_store(store)
        self.key = validate_key(key)
        self.node = validate_identity(node)
        self.timing = Timing.from_args(ttl, renew_interval, renew_deadline, resign_grace)
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a Clock (now, wall, sleep_until), "
                            f"got {type(clock).__name__}")
        self.clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        # (renewal sent at, fencing token) while leading; one tuple, swapped atomically, so
        # that `is_leader` can be read from any thread.
        self._term: tuple[float, int] | None = None
        self._lease: JSONDict | None = None
        self._stop = asyncio.Event()
        self._resign = asyncio.Event()
        self._resign_waiters: list[asyncio.Future[None]] = []
        self._no_acquire_before = float("-inf")
        self._step_down_hooks: list[Callable[[], Awaitable[None]]] = []
        self._stream: _Stream | None = None
        self._task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._observer_error: Exception | None = None
        self._observer_failed = asyncio.Event()
        #: counters for export; see `leadership.metrics`.
        self.metrics = CandidateMetrics()

    def __repr__(self) -> str:
        return (f"Candidate(key={self.key!r}, node={self.node!r}, ttl={self.timing.ttl}, "
                f"store={self.store!r})")

    @property
    def _where(self) -> str:
        return f"lease {self.store.namespace}/{self.key} ({self.node})"

    # --- public surface -------------------------------------------------------------------

    def _valid_term(self) -> tuple[float, int] | None:
        """The current term, if its last renewal was sent under `renew_deadline` ago."""
        term = self._term  # one read: the campaign swaps the whole tuple
        if term is not None and self.clock.now() < term[0] + self.timing.renew_deadline:
            return term
        return None

    @property
    def is_leader(self) -> bool:
        """True only while the last successful renewal was sent under `renew_deadline` ago."""
        return self._valid_term() is not None

    @property
    def fencing_token(self) -> int | None:
        """While leading: the Lease's ``leaseTransitions`` (grows at every change of holder)."""
        term = self._valid_term()
        return term[1] if term is not None else None

    def run_for_election(self) -> AsyncIterator[bool]:
        """Start campaigning; iterate over "am I leader?": False, then True, False, ...

        Transient API errors are retried inside. An error retrying cannot fix ends the iterator
        with that exception, after a final False. Call it once per Candidate, in a running loop.
        """
        if self._stream is not None:
            raise RuntimeError(f"{self!r}: run_for_election() may be called only once")
        self._stream = _Stream()
        self._stream.push(False)
        if self._stop.is_set():
            self._stream.close()
            self._done.set()
        else:
            self._task = asyncio.get_running_loop().create_task(
                self._campaign(), name=f"leadership-campaign-{self.key}")
        return self._stream

    async def resign(self) -> None:
        """Step down, release the Lease, and campaign again at once. No effect unless leading.

        Returns once the Lease has been released (or the campaign has ended)."""
        if self._term is None or self._task is None or self._task.done():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._resign_waiters.append(waiter)
        self._resign.set()
        await asyncio.shield(waiter)

    async def stop(self) -> None:
        """Quit the election, releasing the Lease if held. Idempotent; safe at any time.

        Returns once the campaign has ended (the stream's final False is queued)."""
        self._stop.set()
        if self._task is not None:
            await asyncio.shield(self._done.wait())

    async def __aenter__(self) -> Candidate:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def run_while_leading(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Campaign, and run ``await work()`` only while leading.

        `work` is cancelled the moment leadership is lost (and awaited before a voluntary
        release), and started again when leadership is regained. Returns after `stop()`.
        If `work` raises, the candidate stops (stepping down and releasing first) and the
        exception propagates; a fatal store error propagates likewise.
        """
        task: asyncio.Task[Any] | None = None
        failure: BaseException | None = None

        async def cancel_work() -> None:
            nonlocal task
            running, task = task, None
            if running is not None:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)

        def on_done(done: asyncio.Task[Any]) -> None:
            nonlocal failure
            if not done.cancelled() and done.exception() is not None:
                failure = done.exception()
                log.error("%s: work failed while leading; stepping down: %r", self._where,
                          failure)
                self._stop.set()

        self._step_down_hooks.append(cancel_work)
        try:
            async for leading in self.run_for_election():
                if leading and self.is_leader and task is None:
                    task = asyncio.get_running_loop().create_task(work())
                    task.add_done_callback(on_done)
                elif not leading:
                    await cancel_work()
        finally:
            self._step_down_hooks.remove(cancel_work)
            await cancel_work()
        if failure is not None:
            raise failure

    # --- the campaign ---------------------------------------------------------------------

    async def _watch(self, observer: LeaseObserver) -> None:
        try:
            await observer.run()
        except Exception as exc:
            self._observer_error = exc
            self._observer_failed.set()

    def _raise_if_observer_failed(self) -> None:
        if self._observer_error is not None:
            raise self._observer_error

    async def _campaign(self) -> None:
        assert self._stream is not None
        t = self.timing
        observer = LeaseObserver(self.store, self.key, self.clock, t.ttl,
                                 retry_min=t.retry_min, retry_max=max(t.retry_max, 1.0),
                                 rng=self._rng)
        watcher = asyncio.get_running_loop().create_task(self._watch(observer))
        error: BaseException | None = None
        try:
            while not self._stop.is_set():
                acquired = await self._acquire(observer)
                if acquired is None:
                    break
                reason = await self._lead(*acquired)
                await self._step_down(reason)
        except Exception as exc:
            if not isinstance(exc, FatalStoreError):
                log.exception("%s: campaign failed", self._where)
            else:
                log.error("%s: giving up: %s", self._where, exc)
            error = exc
            if self._term is not None:
                await self._step_down("lost")
        finally:
            self._term = None
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            self._wake_resigners()
            self._stream.close(error)
            self._done.set()

    async def _wait(self, deadline: float | None, *events: asyncio.Event) -> None:
        await wait_until(self.clock, deadline, self._stop, self._observer_failed, *events)
        self._raise_if_observer_failed()

    def _backoff(self, attempt: int) -> float:
        return backoff(self._rng, attempt, self.timing.retry_min, self.timing.retry_max)

    async def _acquire(self, observer: LeaseObserver) -> tuple[JSONDict, float] | None:
        """Wait until the Lease may be taken, then take it. None when stopped first."""
        attempt = 0
        while not self._stop.is_set():
            changed = observer.changed_event()
            obs = observer.current
            if obs is None:
                await self._wait(None, changed)
                continue
            now = self.clock.now()
            holder = obs.holder_at(now)
            if holder not in ("", self.node):
                await self._wait(obs.expires_at, changed)
                continue
            if now < self._no_acquire_before:
                await self._wait(self._no_acquire_before, changed)
                continue
            sent = self.clock.now()
            try:
                lease = await race(self.clock, self._write_acquire(obs),
                                   sent + self.timing.renew_deadline)
            except ConflictError as exc:
                self.metrics.acquire_conflicts += 1
                log.debug("%s: lost the race to acquire (%s); re-reading", self._where, exc)
                attempt = await self._refresh(observer, attempt)
                continue
            except NotFoundError as exc:
                # Leases allow create-on-update, so a 404 on either write means the namespace
                # itself is missing: no retry can fix that.
                raise FatalStoreError(
                    f"cannot create lease {self.key!r}: namespace {self.store.namespace!r} "
                    f"does not exist ({exc})", status=404) from exc
            except (TransientStoreError, DeadlineExceeded) as exc:
                delay = self._backoff(attempt)
                attempt += 1
                log.warning("%s: acquiring failed (%s); retrying in %.2fs", self._where,
                            exc or "no answer within the renew deadline", delay)
                await self._wait(self.clock.now() + delay)
                continue
            return lease, sent
        return None

    async def _refresh(self, observer: LeaseObserver, attempt: int) -> int:
        try:
            await observer.refresh()
            return 0
        except TransientStoreError as exc:
            delay = self._backoff(attempt)
            log.warning("%s: re-reading failed (%s); retrying in %.2fs", self._where, exc, delay)
            await self._wait(self.clock.now() + delay)
            return attempt + 1

    async def _write_acquire(self, obs: Observation) -> JSONDict:
        now = self.clock.wall()
        if obs.lease is None:
            return await self.store.create(
                build_lease(self.key, acquire_changes(None, self.node, self.timing.ttl, now)))
        changes = acquire_changes(obs.record, self.node, self.timing.ttl, now)
        return await self.store.replace(with_spec_changes(obs.lease, **changes))

    def _holder_of(self, lease: JSONDict | None) -> str:
        return parse_lease(lease).record.holder_identity

    async def _lead(self, lease: JSONDict, sent: float) -> StepDown:
        """Renew from the cached object until stopped, resigned, or past the renew deadline."""
        t = self.timing
        self._lease = lease
        self._term = (sent, parse_lease(lease).record.lease_transitions)
        self.metrics.acquisitions += 1
        log.info("%s: became leader (fencing token %d)", self._where, self._term[1])
        assert self._stream is not None
        self._stream.push(True)
        attempt = 0
        next_try = sent + t.renew_interval
        while True:
            renewed_at = self._term[0]
            deadline = renewed_at + t.renew_deadline
            await wait_until(self.clock, min(next_try, deadline), self._stop, self._resign)
            if self._stop.is_set():
                return "stop"
            if self._resign.is_set():
                return "resign"
            now = self.clock.now()
            if now >= deadline:
                log.warning("%s: no successful renewal within %.3gs; stepping down",
                            self._where, t.renew_deadline)
                return "lost"
            try:
                renewed = await race(self.clock, self.store.replace(
                    with_spec_changes(self._lease, **renew_changes(self.clock.wall()))), deadline)
            except DeadlineExceeded:
                self.metrics.renew_failures += 1
                continue  # the loop steps down: now >= deadline
            except ConflictError:
                # Someone else wrote: re-read (the slow path) and retry only if still ours.
                self.metrics.slow_path_renewals += 1
                try:
                    current = await race(self.clock, self.store.get(self.key), deadline)
                except DeadlineExceeded:
                    continue
                except TransientStoreError as exc:
                    next_try, attempt = self._retry_later(exc, attempt)
                    continue
                holder = self._holder_of(current)
                if current is None or holder != self.node:
                    log.warning("%s: the lease was taken by %r; stepping down", self._where,
                                holder)
                    return "lost"
                self._lease, next_try = current, self.clock.now()
                continue
            except NotFoundError:
                log.warning("%s: the lease was deleted; stepping down", self._where)
                return "lost"
            except TransientStoreError as exc:
                self.metrics.renew_failures += 1
                next_try, attempt = self._retry_later(exc, attempt)
                continue
            self.metrics.renewals += 1
            self.metrics.last_renewal_latency = self.clock.now() - now
            self._lease = renewed
            self._term = (now, self._term[1])
            attempt = 0
            next_try = now + t.renew_interval

    def _retry_later(self, exc: StoreError, attempt: int) -> tuple[float, int]:
        delay = self._backoff(attempt)
        log.warning("%s: renewing failed (%s); retrying in %.2fs", self._where, exc, delay)
        return self.clock.now() + delay, attempt + 1

    async def _step_down(self, reason: StepDown) -> None:
        """Stop believing, tell the consumer, let work stop; then release if voluntary."""
        term, self._term = self._term, None
        self.metrics.step_downs += 1
        self.metrics.last_step_down = reason
        assert self._stream is not None
        self._stream.push(False)
        log.info("%s: stepped down (%s)", self._where, reason)
        for hook in list(self._step_down_hooks):
            try:
                await hook()
            except Exception:
                log.exception("%s: a step-down hook failed", self._where)
        if reason != "lost" and term is not None:
            await self._release(term[0])
        if reason == "resign":
            self._no_acquire_before = self.clock.now() + self.timing.resign_grace
        # A resign() that raced a loss is answered too: there is nothing left to resign.
        self._resign.clear()
        self._wake_resigners()

    def _wake_resigners(self) -> None:
        waiters, self._resign_waiters = self._resign_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _release(self, renewed_at: float) -> None:
        """Free the Lease (compare-and-swap), giving up once it would have expired anyway."""
        lease = self._lease
        deadline = max(renewed_at + self.timing.ttl, self.clock.now() + self.timing.retry_max)
        attempt = 0
        while lease is not None:
            record = parse_lease(lease).record
            try:
                await race(self.clock, self.store.replace(
                    with_spec_changes(lease, **release_changes(record, self.clock.wall()))),
                    deadline)
                log.info("%s: released the lease", self._where)
                return
            except ConflictError:
                try:
                    lease = await race(self.clock, self.store.get(self.key), deadline)
                except (DeadlineExceeded, StoreError) as exc:
                    log.warning("%s: could not release the lease: %r", self._where, exc)
                    return
                if self._holder_of(lease) != self.node:
                    return  # no longer ours: nothing to release
            except (NotFoundError, DeadlineExceeded, FatalStoreError) as exc:
                log.warning("%s: could not release the lease: %r", self._where, exc)
                return
            except TransientStoreError as exc:
                delay = self._backoff(attempt)
                attempt += 1
                log.warning("%s: releasing failed (%s); retrying in %.2fs", self._where, exc,
                            delay)
                await wait_until(self.clock, min(deadline, self.clock.now() + delay))
