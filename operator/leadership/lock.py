"""`LeaseLock`: owns the Lease object a candidate last read or wrote, like client-go's LeaseLock.

It speaks in election records, not raw Lease dicts: `acquire`, `renew` and `release` each
make one compare-and-swap write (a full PUT carrying the cached object's resourceVersion) and,
on success, cache what the server answered; `reread` is the slow path after a lost race.
A lost race raises `ConflictError`; the lock never retries and never decides: that is the
`Candidate`'s job.

Fencing tokens (``leaseTransitions``) never go backwards through this lock: it remembers the
highest count it has seen (`observe`), and when it has to create the Lease (first use, or
after someone deleted it) it starts above that count instead of at 0.
"""

from __future__ import annotations

from .clock import Clock
from .record import (
    JSONDict,
    LeaseRecord,
    acquire_changes,
    build_lease,
    parse_lease,
    release_changes,
    renew_changes,
    with_spec_changes,
)
from .stores import LeaseStore


class LeaseLock:
    """The Lease `name` in `store`, as held (or wanted) by `identity`."""

    def __init__(self, store: LeaseStore, name: str, identity: str, clock: Clock) -> None:
        self.store, self.name, self.identity, self.clock = store, name, identity, clock
        self._lease: JSONDict | None = None
        self._highest_transitions: int | None = None

    @property
    def record(self) -> LeaseRecord:
        """The record of the cached Lease (an empty one before the first read or write)."""
        return parse_lease(self._lease).record

    @property
    def held(self) -> bool:
        """Whether the cached Lease names us as its holder."""
        return self._lease is not None and self.record.holder_identity == self.identity

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
            changes = acquire_changes(None, self.identity, ttl, now, first_transition=floor)
            return self._cache(await self.store.create(build_lease(self.name, changes)))
        previous = parse_lease(current).record
        changes = acquire_changes(previous, self.identity, ttl, now)
        return self._cache(await self.store.replace(with_spec_changes(current, **changes)))

    async def renew(self) -> LeaseRecord:
        """Write a new renewTime onto the cached Lease (the fast path: no read)."""
        if self._lease is None:
            raise RuntimeError("renew() before acquire()")
        return self._cache(await self.store.replace(
            with_spec_changes(self._lease, **renew_changes(self.clock.wall()))))

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
        self._cache(await self.store.replace(with_spec_changes(self._lease, **changes)))
