"""`Candidate`: campaign for one Lease and stream whether this process leads.

The port of docker/leadership's ``candidate.go``, on client-go's Lease semantics. It decides
(when to take the Lease, when to step down); the `LeaseLock` does the writing and the
`LeaseObserver` the watching.

Guarantees (on this process's monotonic clock):

- The stream starts with False, never repeats a value, and always ends with False.
- `is_leader` is True only while the last successful renewal was *sent* less than
  `renew_deadline` ago, so it turns False by itself after a pause (SIGSTOP, a long GC, a frozen
  VM) even before the campaign task gets to run again.
- The leader stops believing it leads `ttl - renew_deadline` seconds before any follower that
  watches the same Lease may take it over, whatever the request latency: the deadline counts
  from when the renewal was sent; a follower's wait counts from when it saw the write.
- A follower takes a Lease over after an expiry only once a fresh read agrees that it expired:
  a watch gone silent is never taken for a dead leader.
- Each renewal attempt is bounded by `Timing.attempt_timeout`, so one hung request costs one
  attempt, not the term.
- Voluntary step-down (`resign`, `stop`) flips `is_leader`, yields False and lets the
  `run_while_leading` work finish cancelling *before* the Lease is released.
- Nothing here blocks on the consumer: an absent or slow reader never delays a renewal.

Non-guarantees (see docs/library.md):

- Clock *rate* skew larger than ``(ttl - renew_deadline) / ttl`` between leader and follower,
  or a pause of the leader between checking `is_leader` and acting, can overlap two leaders.
  Protect the shared resource with `fencing_token` where that matters.
- Identities must be unique per process (the default, ``<pod>_<uuid>``, is). A lease held
  under our identity but not written by this process is waited out like anyone's, so two
  of our candidates sharing an identity never lead at once; a follower that sees such a Lease
  renewed for a full Lease duration (a live twin, not a previous run, which stops renewing),
  and a leader that finds its identity renewed by another process, end their campaign with
  `DuplicateIdentityError`.
  A client-go peer sharing our identity re-takes "its own" Lease at once: both then lead
  until our next renewal finds out (at most one renew interval).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, NamedTuple, TypeVar

from .clock import Clock, DeadlineExceeded, SystemClock, race, unless_set, wait_until
from .errors import (
    ConflictError,
    FatalStoreError,
    NotFoundError,
    PermissionDeniedError,
    StoreError,
    TransientStoreError,
    describe_error,
)
from .lock import LeaseLock
from .metrics import CandidateMetrics
from .observer import LeaseObserver, Observation
from .stores import LeaseStore
from .stream import ElectionStream
from .supervisor import run_while_leading
from .timing import Timing, backoff
from .twins import TwinWatch
from .validation import check_clock, check_store, validate_identity, validate_key

log = logging.getLogger("leadership.candidate")

StepDown = Literal["stop", "resign", "lost"]
T = TypeVar("T")


class Fence(NamedTuple):
    """What a protected resource needs to refuse a stale leader: see `Candidate.fence`."""

    #: ``metadata.uid`` of the Lease: a deleted and re-created Lease has a new one.
    lease_uid: str
    #: ``leaseTransitions``: grows at every change of holder of that Lease.
    token: int


@dataclass(frozen=True)
class Term:
    """One stretch of leadership, as this process knows it."""

    #: monotonic time at which the last successful renewal (or the acquisition) was sent.
    renewed_at: float
    #: the Lease's ``leaseTransitions`` when this term began.
    fencing_token: int
    #: the Lease's ``metadata.uid``.
    lease_uid: str = ""


class Renewal(enum.Enum):
    """What one renewal attempt came to."""

    RENEWED = "renewed"  # the term is extended
    RETRY_NOW = "retry now"  # no answer in time, or a re-read shows it is still ours
    RETRY_LATER = "retry later"  # a transient error: back off, then try again
    LOST = "lost"  # someone else holds it, or it is gone


class Candidate:
    """Campaign for the Lease `key` in `store` as `node`, holding it `ttl` seconds at a time.

    Timing knobs are keyword-only: `renew_interval` (default ttl/3), `renew_deadline`
    (default 2/3 ttl; must stay below ttl and above 1.2 renew intervals) and `resign_grace`
    (default one renew interval: after resigning, a free Lease is left to others that long).
    `clock` (default the system clock) and `rng` (default a fresh `random.Random`) make tests
    deterministic.
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
        self.clock: Clock = check_clock(clock) or SystemClock()
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random, got {type(rng).__name__}")
        self._rng = rng or random.Random()
        # Swapped whole, never mutated, so that `is_leader` can be read from any thread.
        self._term: Term | None = None
        self._lock = LeaseLock(self.store, self.key, self.node, self.clock)
        t = self.timing
        self._observer = LeaseObserver(self.store, self.key, self.clock, t.ttl,
                                       retry_min=t.retry_min, retry_max=max(t.retry_max, 1.0),
                                       rng=self._rng)
        self._observer.listeners.append(self._seen)
        self._stop = asyncio.Event()
        self._resign = asyncio.Event()
        self._resign_waiters: list[asyncio.Future[None]] = []
        self._no_acquire_before = float("-inf")
        self._step_down_hooks: list[Callable[[], Awaitable[None]]] = []
        self._stream: ElectionStream | None = None
        self._task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        #: a live twin (another process under our identity): see `leadership.twins`.
        self._twins = TwinWatch(self._where, self.node, self.timing.ttl)
        #: why the Lease cannot be taken even when free (see `blocked`).
        self._blocked: str | None = None
        #: counters for export; see `leadership.metrics`.
        self.metrics = CandidateMetrics()

    def _seen(self, observation: Observation) -> None:
        if observation.lease is not None:
            self._lock.observe(observation.record)

    def __repr__(self) -> str:
        return (f"Candidate(key={self.key!r}, node={self.node!r}, ttl={self.timing.ttl}, "
                f"store={self.store!r})")

    @property
    def _where(self) -> str:
        return f"lease {self.store.namespace}/{self.key} ({self.node})"

    # --- public surface -------------------------------------------------------------------

    def _valid_term(self) -> Term | None:
        """The current term, if its last renewal was sent under `renew_deadline` ago."""
        term = self._term  # one read: the campaign swaps the whole object
        if term is not None and self.clock.now() < term.renewed_at + self.timing.renew_deadline:
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
        return term.fencing_token if term is not None else None

    @property
    def leading_until(self) -> float | None:
        """While leading: the time on this candidate's clock at which `is_leader` turns
        False unless a renewal lands first (the last renewal's send time + renew_deadline),
        so that work which must end while leading can check the time it has left."""
        term = self._valid_term()
        return term.renewed_at + self.timing.renew_deadline if term is not None else None

    @property
    def leader(self) -> str:
        """Who leads, as this candidate last observed the Lease: the holder's identity, or ""
        when the Lease is free, missing, or its holder's claim ran out on this process's clock.
        Follows every watch event. Its own identity here is no promise: ask `is_leader`."""
        observation = self._observer.current
        return observation.holder_at(self.clock.now()) if observation is not None else ""

    @property
    def watching(self) -> bool:
        """Whether this candidate follows the Lease live: a watch is open and has delivered
        its first event. Followers take a released Lease the moment they see the release."""
        return self._observer.watching

    @property
    def blocked(self) -> str | None:
        """Why this candidate cannot take the Lease even once it is free, else None: the Lease
        does not exist and this candidate may not create it (RBAC without ``create`` on
        Leases, as with a pre-created Lease that someone deleted). It then waits as a
        follower, and campaigns again as soon as the Lease exists: a missing Lease never
        ends the campaign."""
        return self._blocked

    @property
    def fence(self) -> Fence | None:
        """While leading: ``(lease_uid, token)``, to pass with every write to the resource
        this leadership protects (see docs/library.md, "Fencing"); otherwise None."""
        term = self._valid_term()
        return Fence(term.lease_uid, term.fencing_token) if term is not None else None

    def run_for_election(self) -> AsyncIterator[bool]:
        """Start campaigning; iterate over "am I leader?": False, then True, False, ...

        Transient API errors are retried inside. An error retrying cannot fix ends the iterator
        with that exception, after a final False. Call it once per Candidate, in a running loop.
        """
        if self._stream is not None:
            raise RuntimeError(f"{self!r}: run_for_election() may be called only once")
        self._stream = ElectionStream()
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

    def on_step_down(self, hook: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        """Await ``hook()`` at every step-down: after `is_leader` turned False and the
        stream's False is queued, before a voluntary release (so work it stops has stopped
        when the Lease is freed). A hook that raises is logged and the others still run.
        Returns a function that removes the hook."""
        if not callable(hook):
            raise TypeError(f"hook must be a coroutine function, got {type(hook).__name__}")
        self._step_down_hooks.append(hook)

        def remove() -> None:
            if hook in self._step_down_hooks:
                self._step_down_hooks.remove(hook)

        return remove

    async def run_while_leading(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Campaign, and run ``await work()`` only while leading.

        - Leadership lost: `work` is cancelled at once, and started again (a new call) when
          leadership is regained.
        - `work` returns: its job is done, so the candidate stops, releasing the Lease for
          others, and this returns. (To lead for as long as possible, never return.)
        - `work` raises: the candidate stops (stepping down and releasing first) and the
          exception propagates.
        - `stop()` is called: `work` is cancelled and awaited, the Lease released, this
          returns.
        - This coroutine is cancelled: the same as `stop()`, then CancelledError propagates.
        - A fatal store error propagates after the final step-down.

        On every voluntary step-down `work` has finished cancelling before the Lease is
        released. Call it once per Candidate (it calls `run_for_election()`). The supervisor
        is `leadership.supervisor.run_while_leading`, on this class's public surface.
        """
        await run_while_leading(self, work)

    # --- the campaign ---------------------------------------------------------------------

    async def _campaign(self) -> None:
        assert self._stream is not None
        watcher = asyncio.get_running_loop().create_task(self._observer.run())
        error: BaseException | None = None
        try:
            while not self._stop.is_set():
                sent = await self._acquire()
                if sent is None:
                    break
                reason = await self._lead(sent)
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
        """Wait for `deadline` or an event; stop and a failed observer end it too."""
        await wait_until(self.clock, deadline, self._stop, self._observer.failed, *events)
        self._observer.raise_if_failed()

    async def _back_off(self, what: str, exc: BaseException, attempt: int) -> int:
        delay = backoff(self._rng, attempt, self.timing.retry_min, self.timing.retry_max)
        log.warning("%s: %s failed (%s); retrying in %.2fs", self._where, what,
                    describe_error(exc), delay)
        await self._wait(self.clock.now() + delay)
        return attempt + 1

    async def _acquire(self) -> float | None:
        """Wait until the Lease may be taken, then take it; return when the winning write was
        sent. None when stopped first."""
        observer, t = self._observer, self.timing
        attempt = 0
        while not self._stop.is_set():
            changed = observer.changed_event()
            seen = observer.current
            if seen is None:
                await self._wait(None, changed)
                continue
            if seen.lease is not None and self._blocked is not None:
                log.info("%s: the lease exists again; campaigning", self._where)
                self._blocked = None
            now = self.clock.now()
            if not self._may_take(seen, now):
                await self._wait(seen.expires_at, changed)
                continue
            if now < self._no_acquire_before:
                await self._wait(self._no_acquire_before, changed)
                continue
            try:
                if seen.expired_at(now):
                    confirmed = await self._confirm_expiry()
                    if confirmed is None:
                        return None
                    seen = confirmed
                    if not self._may_take(seen, self.clock.now()):
                        continue  # the watch was stale: the holder is alive
                sent = self.clock.now()
                # Not cut at renew_deadline (see `_unless_stopped`); a late answer: `_late`.
                if await self._unless_stopped(self._lock.acquire(seen.lease, t.ttl)) is None:
                    return None
                while self.clock.now() >= sent + t.renew_deadline:
                    late = None if self._stop.is_set() else await self._late(sent)
                    if late is None:  # stopped: the Lease names us, though we never led
                        await self._release(sent)
                        return None
                    sent = late
            except ConflictError as exc:
                self.metrics.acquire_conflicts += 1
                log.debug("%s: lost the race to acquire (%s); re-reading", self._where, exc)
                attempt = await self._refresh(attempt)
                continue
            except PermissionDeniedError as exc:
                if exc.verb != "create":
                    raise
                self._cannot_create(exc)
                await self._wait(None, changed)  # until the watch sees the Lease (re)created
                continue
            except NotFoundError as exc:
                # Leases allow create-on-update, so a 404 on either write means the namespace
                # itself is missing: no retry can fix that.
                raise FatalStoreError(
                    f"cannot create lease {self.key!r}: namespace {self.store.namespace!r} "
                    f"does not exist ({exc})", status=404) from exc
            except TransientStoreError as exc:
                attempt = await self._back_off("acquiring", exc, attempt)
                continue
            return sent
        return None

    def _cannot_create(self, exc: PermissionDeniedError) -> None:
        if self._blocked is None:  # said once per absence, not at every look
            log.warning("%s: the lease does not exist and this candidate may not create it "
                        "(%s); waiting for it to be created", self._where, describe_error(exc))
        self._blocked = (f"lease {self.store.namespace}/{self.key} does not exist and this "
                         f"candidate may not create it (RBAC grants no create on leases)")

    async def _late(self, sent: float) -> float | None:
        """The Lease is ours, but the write that made it so was answered after renew_deadline:
        a term counts from when its write was sent, so this one would already be over.
        Renew (on the cached Lease, from the warm connection) and return when that was sent;
        None if stopped first.

        While every round trip takes longer than renew_deadline, this repeats and nobody
        leads, though the Lease names this candidate: the safe side, and all a slow API server
        can cost."""
        self.metrics.late_acquisitions += 1
        log.warning("%s: the write taking the lease was answered %.2fs after it was sent, "
                    "past renew_deadline (%.2fs): too late for its term to count; renewing",
                    self._where, self.clock.now() - sent, self.timing.renew_deadline)
        sent = self.clock.now()
        return sent if await self._unless_stopped(self._lock.renew()) is not None else None

    async def _unless_stopped(self, request: Awaitable[T]) -> T | None:
        """Await `request` (which the store bounds by its request_timeout) and return its
        answer; None if `stop()` came first. For the reads and writes of a campaign: none of
        them is cut at a deadline, because a cancelled request costs its connection, and a
        slow API server then pays a new one (TLS handshake included) on every retry. Only
        renewals are cut, by attempt_timeout."""
        return await unless_set(request, self._stop)

    def _may_take(self, seen: Observation, now: float) -> bool:
        """Free, expired, or held under our identity by this very process."""
        holder = seen.holder_at(now)
        if holder != self.node or self._lock.wrote(seen.record):
            self._twins.cleared()
            return holder in ("", self.node)
        # Held under our identity by another process: a previous run, or a twin.
        self._twins.held_by_another(seen.observed_at)
        return False

    async def _confirm_expiry(self) -> Observation | None:
        """A fresh read before taking an expired-looking Lease; None if stopped first. A
        late answer is as good as a prompt one: it is judged when it arrives, and the write
        that follows is a compare-and-swap."""
        seen = self._observer.current
        assert seen is not None
        log.debug("%s: %r's claim ran out; confirming with a fresh read", self._where,
                  seen.record.holder_identity)
        return await self._unless_stopped(self._observer.confirm_expiry())

    async def _refresh(self, attempt: int) -> int:
        try:
            await self._unless_stopped(self._observer.refresh())
            return 0
        except TransientStoreError as exc:
            return await self._back_off("re-reading", exc, attempt)

    async def _lead(self, sent: float) -> StepDown:
        """Renew until stopped, resigned, or past the renew deadline."""
        t = self.timing
        self._term = Term(sent, self._lock.record.lease_transitions, self._lock.uid)
        self.metrics.acquisitions += 1
        log.info("%s: became leader (fencing token %d)", self._where, self._term.fencing_token)
        assert self._stream is not None
        self._stream.push(True)
        attempt = 0
        next_try = sent + t.renew_interval
        while True:
            deadline = self._term.renewed_at + t.renew_deadline
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
            outcome = await self._renew_once(min(deadline, now + t.attempt_timeout))
            if outcome is Renewal.LOST:
                return "lost"
            if outcome is Renewal.RENEWED:
                attempt, next_try = 0, self._term.renewed_at + t.renew_interval
            elif outcome is Renewal.RETRY_NOW:
                next_try = self.clock.now()
            else:
                next_try = self.clock.now() + backoff(self._rng, attempt, t.retry_min,
                                                      t.retry_max)
                attempt += 1

    async def _renew_once(self, give_up_at: float) -> Renewal:
        """One renewal attempt, abandoned at `give_up_at`. Only a success extends the term."""
        assert self._term is not None
        sent = self.clock.now()
        try:
            await race(self.clock, self._lock.renew(), give_up_at)
        except DeadlineExceeded:
            self.metrics.renew_failures += 1
            log.warning("%s: renewal got no answer within %.2fs; retrying", self._where,
                        give_up_at - sent)
            return Renewal.RETRY_NOW
        except ConflictError:
            # Someone else wrote: re-read (the slow path) and retry only if still ours.
            self.metrics.slow_path_renewals += 1
            try:
                record = await race(self.clock, self._lock.reread(), give_up_at)
            except DeadlineExceeded:
                return Renewal.RETRY_NOW
            except TransientStoreError as exc:
                log.warning("%s: re-reading after a conflict failed (%s)", self._where,
                            describe_error(exc))
                return Renewal.RETRY_LATER
            if record is None or record.holder_identity != self.node:
                log.warning("%s: the lease was taken by %r; stepping down", self._where,
                            record.holder_identity if record else None)
                return Renewal.LOST
            if not self._lock.wrote(record):
                raise self._twins.error("renewed the lease while this one led",
                                        status=409) from None
            return Renewal.RETRY_NOW
        except NotFoundError:
            log.warning("%s: the lease was deleted; stepping down", self._where)
            return Renewal.LOST
        except PermissionDeniedError as exc:
            if exc.verb != "create":
                raise
            # The renewal's PUT found no Lease, and re-creating it (create-on-update) is not
            # ours to do: the Lease was deleted. Lead no longer; wait for it as a follower.
            log.warning("%s: the lease was deleted and this candidate may not re-create it; "
                        "stepping down", self._where)
            return Renewal.LOST
        except TransientStoreError as exc:
            self.metrics.renew_failures += 1
            log.warning("%s: renewing failed (%s)", self._where, describe_error(exc))
            return Renewal.RETRY_LATER
        self.metrics.renewals += 1
        self.metrics.last_renewal_latency = self.clock.now() - sent
        # A renewal that re-created a deleted Lease (create-on-update) gives it a new uid.
        self._term = Term(sent, self._term.fencing_token, self._lock.uid)
        return Renewal.RENEWED

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
            await self._release(term.renewed_at)
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
        t = self.timing
        deadline = max(renewed_at + t.ttl, self.clock.now() + t.retry_max)
        attempt = 0
        while True:
            try:
                await race(self.clock, self._lock.release(), deadline)
                log.info("%s: released the lease", self._where)
                return
            except ConflictError:
                try:
                    record = await race(self.clock, self._lock.reread(), deadline)
                except (DeadlineExceeded, StoreError) as exc:
                    log.warning("%s: could not release the lease: %s", self._where,
                                describe_error(exc))
                    return
                if record is None or record.holder_identity != self.node:
                    return  # no longer ours: nothing to release
            except (NotFoundError, DeadlineExceeded, FatalStoreError) as exc:
                log.warning("%s: could not release the lease: %s", self._where,
                                describe_error(exc))
                return
            except TransientStoreError as exc:
                delay = backoff(self._rng, attempt, t.retry_min, t.retry_max)
                attempt += 1
                log.warning("%s: releasing failed (%s); retrying in %.2fs", self._where,
                            describe_error(exc), delay)
                await wait_until(self.clock, min(deadline, self.clock.now() + delay))
