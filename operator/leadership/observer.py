"""Watch one Lease and remember, on the local monotonic clock, when its record last changed.

This is how a follower judges expiry without polling and without trusting remote clocks:
a record is expired once it has been *observed unchanged* for its own duration. The observer

- reads the Lease once (GET), then watches it;
- re-watches from the last version seen when the server ends a watch, and re-lists on 410;
- retries transient errors with bounded, jittered backoff;
- in steady state issues no request besides its one open watch.

A silent watch is no evidence. A watch whose TCP connection went half-open delivers nothing
and raises nothing, so "no renewal seen for a whole duration" may only mean "nothing heard".
Before anyone acts on an expiry, `confirm_expiry()` reads the Lease once more. If that read
shows a version the watch never delivered, the watch is stale: the read's state is taken in
(a live holder's renewal restarts its expiry clock) and the watch is restarted on a fresh
connection. Only an expiry the read agrees with is reported. The cost is one GET per expiry,
none in steady state.

One failure signal: a fatal error (401, 403, a missing namespace) ends `run()`, is kept in
`error` and sets the `failed` event; `raise_if_failed()` re-raises it in the consumer.
Everything else is retried inside.

"Changed" means the election fields of ``spec`` changed (as client-go compares records):
a label or annotation written by someone else does not restart the expiry clock.

The rule itself lives in `ExpiryTracker`, which owns no watch: feed it every state of one
Lease in order, from wherever they come. `LeaseObserver` feeds it from its own watch; an
operator following thousands of Leases feeds one tracker per Lease from one shared watch,
and so judges expiry exactly as the candidates do.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from .clock import Clock, wait_until
from .errors import FatalStoreError, StoreError, WatchExpiredError, describe_error
from .record import (
    JSONDict,
    LeaseRecord,
    ParsedLease,
    effective_duration,
    parse_lease,
    resource_version,
)
from .stores import LeaseStore
from .timing import backoff

log = logging.getLogger("leadership.observer")


@dataclass(frozen=True)
class Observation:
    """One state of the Lease as this process saw it."""

    lease: JSONDict | None
    parsed: ParsedLease
    #: local monotonic time when the record last changed (or was first seen).
    observed_at: float
    #: seconds after `observed_at` at which the holder counts as gone.
    duration: int

    @property
    def record(self) -> LeaseRecord:
        return self.parsed.record

    @property
    def expires_at(self) -> float:
        return self.observed_at + self.duration

    def holder_at(self, now: float) -> str:
        """The holder's identity if it still holds at `now`, else ""."""
        if self.record.is_free or now >= self.expires_at:
            return ""
        return self.record.holder_identity

    def expired_at(self, now: float) -> bool:
        """True if a holder's claim ran out by `now` (a release is not an expiry)."""
        return not self.record.is_free and now >= self.expires_at


class ExpiryTracker:
    """The expiry rule for one Lease, fed from any source: `update()` with each state in order.

    A record expires `leaseDurationSeconds` after this process first saw it (on `clock`), not
    at the remote ``renewTime`` plus duration: remote clocks are never trusted. A Lease
    deleted while held is waited out from the moment the deletion was seen; and one
    re-created free (a new uid: re-applied from a manifest, say) while that claim still runs
    does not end it either: the holder, which may not have noticed, still believes it leads
    until its next renewal fails. A holder whose duration cannot be read is waited out for
    `fallback_ttl`, never taken at once.
    """

    def __init__(self, clock: Clock, fallback_ttl: int, where: str = "lease") -> None:
        self.clock, self.fallback_ttl, self.where = clock, fallback_ttl, where
        self.current: Observation | None = None
        self._reported: set[str] = set()
        self._carried_uid: str | None = None  # of a re-created Lease whose old claim runs on

    def update(self, lease: JSONDict | None) -> tuple[Observation, bool]:
        """Take in a state of the Lease (None: there is none). Returns the observation now in
        force and whether the election record changed (else only the object is newer)."""
        prev = self.current
        if lease is None and prev is not None and prev.lease is not None and (
                not prev.record.is_free):
            # Deleted under a holder, which may renew right up to now: its claim is waited
            # out from this moment, as if the deletion were a renewal. Never free at once.
            log.warning("%s was deleted while held by %r; waiting it out for %ds",
                        self.where, prev.record.holder_identity, prev.duration)
            self.current = Observation(None, prev.parsed, self.clock.now(), prev.duration)
            return self.current, True
        parsed = parse_lease(lease)
        for problem in parsed.problems:
            if problem not in self._reported:
                self._reported.add(problem)
                log.warning("%s is malformed: %s; its holder %r is waited out, never stolen",
                            self.where, problem, parsed.record.holder_identity)
        first = self._carried_uid
        carried = self._carried_claim(prev, lease, parsed)
        if carried is not None:
            self.current = carried
            # A change the first time (the Lease is there again: whoever waited for it wakes,
            # and now waits for the claim's end), not at each later look at the same Lease.
            return carried, first != self._carried_uid
        if prev is not None and prev.parsed.spec == parsed.spec and (prev.lease is None) == (
                lease is None):
            # Same record: keep the expiry clock running, remember the newer object.
            self.current = Observation(lease, parsed, prev.observed_at, prev.duration)
            return self.current, False
        self.current = Observation(lease, parsed, self.clock.now(),
                                   effective_duration(parsed.record, self.fallback_ttl))
        return self.current, True


    def _carried_claim(self, prev: Observation | None, lease: JSONDict | None,
                       parsed: ParsedLease) -> Observation | None:
        """The claim seen before, still in force on a Lease re-created free; else None."""
        if (prev is None or prev.record.is_free or lease is None or not parsed.record.is_free
                or self.clock.now() >= prev.expires_at):
            self._carried_uid = None
            return None
        uid = _uid(lease)
        if prev.lease is not None and _uid(prev.lease) == uid and self._carried_uid != uid:
            return None  # the same Lease, released by its holder: free at once
        if self._carried_uid != uid:
            self._carried_uid = uid
            log.warning("%s was re-created free while %r's claim still runs; waiting it out "
                        "for %.0fs more", self.where, prev.record.holder_identity,
                        prev.expires_at - self.clock.now())
        return Observation(lease, prev.parsed, prev.observed_at, prev.duration)


def _uid(lease: JSONDict) -> str:
    return str((lease.get("metadata") or {}).get("uid") or "")


class LeaseObserver:
    """Follows one Lease through `store`. Start `run()` as a task; read `current`."""

    def __init__(self, store: LeaseStore, name: str, clock: Clock, fallback_ttl: int,
                 *, retry_min: float = 0.2, retry_max: float = 5.0,
                 rng: random.Random | None = None) -> None:
        self.store, self.name, self.clock = store, name, clock
        self.fallback_ttl = fallback_ttl
        self.retry_min, self.retry_max = retry_min, retry_max
        self.rng = rng or random.Random()
        self._tracker = ExpiryTracker(clock, fallback_ttl, self.where)
        #: called with every new Observation, in order, before waiters wake.
        self.listeners: list[Callable[[Observation], None]] = []
        #: set, with `error`, when a fatal error ended `run()`.
        self.failed = asyncio.Event()
        self.error: FatalStoreError | None = None
        #: watches found stale by `confirm_expiry()` and restarted.
        self.stale_watches = 0
        self._changed = asyncio.Event()
        self._taken_version: str | None = None  # of the last object taken in
        self._stream: asyncio.Task[str | None] | None = None
        self._watching = False

    @property
    def watching(self) -> bool:
        """True while a watch is open that has delivered its first event: the observer
        follows the Lease live (False while it lists, retries, or has not started)."""
        return self._watching

    @property
    def where(self) -> str:
        return f"lease {self.store.namespace}/{self.name}"

    def changed_event(self) -> asyncio.Event:
        """An event that is set at the next change after this call."""
        return self._changed

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    @property
    def current(self) -> Observation | None:
        """The observation in force (None before the first read)."""
        return self._tracker.current

    def update(self, lease: JSONDict | None) -> Observation:
        """Take in a state of the Lease, from a GET or a watch event (None: there is none)."""
        self._taken_version = resource_version(lease)
        observation, changed = self._tracker.update(lease)
        if changed:
            for listener in self.listeners:
                listener(observation)
            woken, self._changed = self._changed, asyncio.Event()
            woken.set()
        return observation

    async def refresh(self) -> Observation:
        """GET the Lease now (after a lost write race) and take it in, unless the watch
        delivered something while the read was in flight: the read may then be older than
        what the watch said, and must not overwrite it (the live watch will carry anything
        newer)."""
        before = self._taken_version
        lease = await self.store.get(self.name)
        if self._taken_version != before:
            assert self.current is not None
            return self.current
        return self.update(lease)

    async def confirm_expiry(self) -> Observation:
        """Read the Lease once more before an expiry is acted upon; return what is true now.

        If the read shows a version the watch never delivered, the watch is stale: the read
        is taken in and the watch restarted. If the watch delivered something while the read
        was in flight, the watch is alive and its news is at least as new: the read is
        dropped. Store errors propagate (nothing was confirmed).
        """
        before = self._taken_version
        try:
            lease = await self.store.get(self.name)
        except StoreError:
            self._restart_watch()  # nothing heard and nothing read: trust neither connection
            raise
        if self._taken_version != before:
            assert self.current is not None
            return self.current
        if resource_version(lease) != before:
            self.stale_watches += 1
            log.warning("%s: the watch missed an update (it delivered version %s, a read "
                        "shows %s); restarting it", self.where, before,
                        resource_version(lease))
            observation = self.update(lease)
            self._restart_watch()
            return observation
        return self.update(lease)

    def _restart_watch(self) -> None:
        if self._stream is not None:
            self._stream.cancel()  # run() opens a new watch at once

    def _backoff(self, attempt: int) -> float:
        return backoff(self.rng, attempt, self.retry_min, self.retry_max)

    async def run(self) -> None:
        """List, then watch, until cancelled or a fatal error (kept in `error`)."""
        try:
            await self._list_and_watch()
        except FatalStoreError as exc:
            log.error("%s: cannot observe it: %s", self.where, exc)
            self.error = exc
            self.failed.set()

    async def _list_and_watch(self) -> None:
        """After a (re-)list the watch starts without a resourceVersion ("the current state,
        then every change"): an idle Lease's own version may be older than the server's watch
        window, and watching from it would only earn another 410."""
        attempt = 0
        version: str | None = None
        need_list = True
        while True:
            try:
                if need_list:
                    self.update(await self.store.get(self.name))
                    version, need_list = None, False
                stream = asyncio.ensure_future(self._follow_watch(version))
                self._stream = stream
                try:
                    await asyncio.wait([stream])
                finally:
                    self._stream = None
                    if not stream.done():  # run() itself is being cancelled
                        stream.cancel()
                        await asyncio.gather(stream, return_exceptions=True)
                if stream.cancelled():
                    # confirm_expiry() found the watch stale (or could not check it).
                    version, attempt = None, 0
                    continue
                # The server ended the watch (its timeout): go on from the last version seen.
                version = stream.result() or version
                attempt = 0
                continue
            except WatchExpiredError:
                log.info("%s: watch version expired (410); re-listing", self.where)
                need_list = True
                if attempt == 0:
                    attempt += 1
                    continue
                failure = "repeated 410s"
            except FatalStoreError:
                raise
            except StoreError as exc:
                failure = describe_error(exc)
                need_list = True
            except Exception as exc:  # a store bug must not end the observer silently
                log.exception("%s: unexpected error from %r", self.where, self.store)
                failure = describe_error(exc)
                need_list = True
            delay = self._backoff(attempt)
            attempt += 1
            log.warning("%s: %s; retrying in %.2fs", self.where, failure, delay)
            await wait_until(self.clock, self.clock.now() + delay)

    async def _follow_watch(self, version: str | None) -> str | None:
        """Take in every event of one watch; return the last version seen when it ends."""
        try:
            async for event in self.store.watch(self.name, version):
                self._watching = True
                if event.type == "DELETED":
                    self.update(None)
                elif event.type != "BOOKMARK":
                    self.update(event.object)
                version = resource_version(event.object) or version
            return version
        finally:
            self._watching = False
