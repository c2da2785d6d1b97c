"""`LeaseLock`: owns the Lease object a candidate last read or wrote, like client-go's LeaseLock.

It speaks in election records, not raw Lease dicts: `acquire`, `renew` and `release` each
make one compare-and-swap write (a full PUT carrying the cached object's resourceVersion) and,
on success, cache what the server answered; `reread` is the slow path after a lost race.
A lost race raises `ConflictError`; the lock never retries and never decides: that is the
`Candidate`'s job.

It remembers the ``renewTime`` stamps it sent (`wrote`), so a record that names our identity
but was written by another process (a restarted one, or a duplicate) is told apart from ours:
taking it over starts a new term with a new fencing token, as a change of holder does.

Fencing tokens (``leaseTransitions``) never go backwards through this lock: it remembers the
highest count it has seen (`observe`), and when it has to create the Lease (first use, or
after someone deleted it) it starts above that count instead of at 0.
"""

from __future__ import annotations

import collections

from .clock import Clock
from .errors import FatalStoreError
from .record import (
    JSONDict,
    LeaseRecord,
    acquire_changes,
    build_lease,
    format_microtime,
    parse_lease,
    release_changes,
    renew_changes,
    with_spec_changes,
)
from .stores import LeaseStore

#: how many of its own renewTime stamps the lock remembers (a few terms' worth).
_REMEMBERED_STAMPS = 64
#: the largest leaseTransitions the API accepts (an int32).
MAX_TRANSITIONS = 2**31 - 1


class LeaseLock:
    """The Lease `name` in `store`, as held (or wanted) by `identity`."""

    def __init__(self, store: LeaseStore, name: str, identity: str, clock: Clock) -> None:
        self.store, self.name, self.identity, self.clock = store, name, identity, clock
        self._lease: JSONDict | None = None
        self._highest_transitions: int | None = None
        self._stamps: collections.deque[str] = collections.deque(maxlen=_REMEMBERED_STAMPS)

    @property
    def record(self) -> LeaseRecord:
        """The record of the cached Lease (an empty one before the first read or write)."""
        return parse_lease(self._lease).record

    @property
    def uid(self) -> str:
        """``metadata.uid`` of the cached Lease: it changes when the Lease is re-created."""
        meta = (self._lease or {}).get("metadata") or {}
        return str(meta.get("uid") or "")

    @property
    def held(self) -> bool:
        """Whether the cached Lease names us as its holder."""
        return self._lease is not None and self.record.holder_identity == self.identity

    def wrote(self, record: LeaseRecord) -> bool:
        """Whether this process wrote `record` (its renewTime is one we sent, answered or not)."""
        return record.renew_time is not None and (
            format_microtime(record.renew_time) in self._stamps)

    def _send(self, changes: JSONDict) -> JSONDict:
        self._stamps.append(changes["renewTime"])  # before sending: it may land unanswered
        return changes

    def observe(self, record: LeaseRecord) -> None:
        """Remember a record seen by anyone's read or watch (for `leaseTransitions`)."""
        if self._highest_transitions is None or (
                record.lease_transitions > self._highest_transitions):
            self._highest_transitions = record.lease_transitions

    def _cache(self, lease: JSONDict | None) -> LeaseRecord:
        self._lease = lease
        record = self.record
        self.observe(record)
        return record

    async def acquire(self, current: JSONDict | None, ttl: int) -> LeaseRecord:
        """Take the Lease, given its `current` object (None: there is none, so create it)."""
        now = self.clock.wall()
        if current is None:
            floor = (self._highest_transitions + 1
                     if self._highest_transitions is not None else 0)
            changes = self._counted(acquire_changes(None, self.identity, ttl, now,
                                                    first_transition=floor))
            return self._cache(await self.store.create(build_lease(self.name, self._send(changes))))
        previous = parse_lease(current).record
        changes = self._counted(acquire_changes(previous, self.identity, ttl, now, new_term=not (
            previous.holder_identity == self.identity and self.wrote(previous))))
        return self._cache(await self.store.replace(
            with_spec_changes(current, **self._send(changes))))

    def _counted(self, changes: JSONDict) -> JSONDict:
        """`changes`, unless their fencing token is beyond what the API can store."""
        if changes["leaseTransitions"] > MAX_TRANSITIONS:
            raise FatalStoreError(
                f"lease {self.name}: leaseTransitions is at its maximum ({MAX_TRANSITIONS}, "
                "the API's int32), so no candidate can take it again: an admin deletes and "
                "re-creates the Lease, resets any fencing token the protected resource "
                "stored, and restarts the candidates", status=422)
        return changes

    async def renew(self) -> LeaseRecord:
        """Write a new renewTime onto the cached Lease (the fast path: no read)."""
        if self._lease is None:
            raise RuntimeError("renew() before acquire()")
        return self._cache(await self.store.replace(
            with_spec_changes(self._lease, **self._send(renew_changes(self.clock.wall())))))

    async def reread(self) -> LeaseRecord | None:
        """GET the Lease and cache it (the slow path, after a 409). None if there is none."""
        lease = await self.store.get(self.name)
        if lease is None:
            self._lease = None
            return None
        return self._cache(lease)

    async def release(self) -> None:
        """Free the cached Lease as client-go's ReleaseOnCancel does (free, 1 s, same count)."""
        if self._lease is None:
            raise RuntimeError("release() before acquire()")
        changes = release_changes(self.record, self.clock.wall())
        self._cache(await self.store.replace(
            with_spec_changes(self._lease, **self._send(changes))))
