"""Watch one Lease and remember, on the local monotonic clock, when its record last changed.

This is how a follower judges expiry without polling and without trusting remote clocks:
a record is expired once it has been *observed unchanged* for its own duration. The observer

- reads the Lease once (GET), then watches it from that resourceVersion;
- re-watches from the last version seen when the server ends a watch, and re-lists on 410;
- retries transient errors with bounded, jittered backoff; a fatal error ends `run()`;
- in steady state issues no request besides its one open watch.

"Changed" means the election fields of ``spec`` changed (as client-go compares records):
a label or annotation written by someone else does not restart the expiry clock.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from .errors import FatalStoreError, StoreError, WatchExpiredError
from .record import (
    JSONDict,
    LeaseRecord,
    ParsedLease,
    effective_duration,
    parse_lease,
    resource_version,
)
from .stores import LeaseStore
from .timing import Clock, backoff, wait_until

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


class LeaseObserver:
    """Follows one Lease through `store`. Start `run()` as a task; read `current`."""

    def __init__(self, store: LeaseStore, name: str, clock: Clock, fallback_ttl: int,
                 *, retry_min: float = 0.2, retry_max: float = 5.0,
                 rng: random.Random | None = None) -> None:
        self.store, self.name, self.clock = store, name, clock
        self.fallback_ttl = fallback_ttl
        self.retry_min, self.retry_max = retry_min, retry_max
        self.rng = rng or random.Random()
        self.current: Observation | None = None
        self._changed = asyncio.Event()
        self._reported: set[str] = set()
        #: called with every new Observation, in order, before waiters wake.
        self.listeners: list[Callable[[Observation], None]] = []

    @property
    def where(self) -> str:
        return f"lease {self.store.namespace}/{self.name}"

    def changed_event(self) -> asyncio.Event:
        """An event that is set at the next change after this call."""
        return self._changed

    def update(self, lease: JSONDict | None) -> Observation:
        """Take in a state of the Lease, from a GET or a watch event (None: there is none)."""
        prev = self.current
        if lease is None and prev is not None and prev.lease is not None and (
                not prev.record.is_free):
            # Deleted under a holder, which may renew right up to now: its claim is waited
            # out from this moment, as if the deletion were a renewal. Never free at once.
            log.warning("%s was deleted while held by %r; waiting it out for %ds",
                        self.where, prev.record.holder_identity, prev.duration)
            return self._changed_to(Observation(None, prev.parsed, self.clock.now(),
                                                prev.duration))
        parsed = parse_lease(lease)
        for problem in parsed.problems:
            if problem not in self._reported:
                self._reported.add(problem)
                log.warning("%s is malformed: %s; its holder %r is waited out, never stolen",
                            self.where, problem, parsed.record.holder_identity)
        if prev is not None and prev.parsed.spec == parsed.spec and (prev.lease is None) == (
                lease is None):
            # Same record: keep the expiry clock running, remember the newer object.
            self.current = Observation(lease, parsed, prev.observed_at, prev.duration)
            return self.current
        return self._changed_to(Observation(
            lease, parsed, self.clock.now(), effective_duration(parsed.record, self.fallback_ttl)))

    def _changed_to(self, observation: Observation) -> Observation:
        self.current = observation
        for listener in self.listeners:
            listener(self.current)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return self.current

    async def refresh(self) -> Observation:
        """GET the Lease now (after a lost write race) and take it in."""
        return self.update(await self.store.get(self.name))

    def backoff(self, attempt: int) -> float:
        return backoff(self.rng, attempt, self.retry_min, self.retry_max)

    async def run(self) -> None:
        """List, then watch, forever. Raises only `FatalStoreError` (or on cancellation).

        After a (re-)list the watch starts without a resourceVersion ("the current state,
        then every change"): an idle Lease's own version may be older than the server's watch
        window, and watching from it would only earn another 410.
        """
        attempt = 0
        rv: str | None = None
        need_list = True
        while True:
            try:
                if need_list:
                    self.update(await self.store.get(self.name))
                    rv, need_list = None, False
                async for event in self.store.watch(self.name, rv):
                    attempt = 0
                    if event.type == "DELETED":
                        self.update(None)
                    elif event.type != "BOOKMARK":
                        self.update(event.object)
                    rv = resource_version(event.object) or rv
                # The server ended the watch (its timeout): go on from the last version seen.
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
                failure = str(exc)
                need_list = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store bug must not end the observer silently
                log.exception("%s: unexpected error from %r", self.where, self.store)
                failure = repr(exc)
                need_list = True
            delay = self.backoff(attempt)
            attempt += 1
            log.warning("%s: %s; retrying in %.2fs", self.where, failure, delay)
            await wait_until(self.clock, self.clock.now() + delay)
