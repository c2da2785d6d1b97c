"""An in-memory `LeaseStore` for unit tests and demos: the API server's Lease semantics
(compare-and-swap on resourceVersion, watch from a version, 410 after compaction) without one.

It is not a stand-in for Kubernetes in integration tests. For unit tests it can:

- count requests per operation (`requests`), to show that followers do not poll;
- store a raw, possibly malformed object without validation (`put_raw`);
- forget old history (`compact`), so that watches from older versions get 410;
- end every open watch (`break_watches`), as an API server restart would;
- refuse to create Leases (`may_create = False`), as RBAC without ``create`` does: a create,
  and a replace of a missing Lease (create-on-update), raise `PermissionDeniedError`.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections import Counter
from collections.abc import AsyncIterator

from ..clock import Clock, SystemClock
from ..errors import ConflictError, FatalStoreError, PermissionDeniedError, WatchExpiredError
from ..record import format_microtime
from . import JSONDict, WatchEvent


class MemoryLeaseStore:
    """Leases of one namespace, kept in memory. See the module docstring."""

    def __init__(self, clock: Clock | None = None, namespace: str = "default") -> None:
        self.clock: Clock = clock or SystemClock()
        self.namespace = namespace
        self.requests: Counter[str] = Counter()
        self._objects: dict[str, JSONDict] = {}
        self._revision = 0
        self._history: list[tuple[int, WatchEvent]] = []
        self._oldest = 0  # history before this revision was compacted away
        self._changed = asyncio.Condition()
        self._generation = 0  # bumped by break_watches()
        #: False: creating a Lease is forbidden (see the module's doc).
        self.may_create = True

    def __repr__(self) -> str:
        return f"MemoryLeaseStore(namespace={self.namespace!r})"

    async def _request(self, operation: str, name: str) -> None:
        self.requests[operation] += 1

    def _check_create(self, name: str) -> None:
        if not self.may_create:
            raise PermissionDeniedError(
                f'leases.coordination.k8s.io "{name}" is forbidden: cannot create resource '
                '"leases" in API group "coordination.k8s.io"', verb="create",
                resource="leases.coordination.k8s.io")

    async def _commit(self, name: str, event_type: str, obj: JSONDict) -> JSONDict:
        self._revision += 1
        stored = copy.deepcopy(obj)
        meta = stored.setdefault("metadata", {})
        meta["name"] = name
        meta["namespace"] = self.namespace
        meta["resourceVersion"] = str(self._revision)
        if event_type == "DELETED":
            self._objects.pop(name, None)
        else:
            self._objects[name] = stored
        self._history.append((self._revision, WatchEvent(event_type, stored)))  # type: ignore[arg-type]
        async with self._changed:
            self._changed.notify_all()
        return copy.deepcopy(stored)

    # --- the LeaseStore protocol ------------------------------------------------------

    async def get(self, name: str) -> JSONDict | None:
        await self._request("get", name)
        obj = self._objects.get(name)
        return copy.deepcopy(obj) if obj is not None else None

    async def create(self, lease: JSONDict) -> JSONDict:
        name = (lease.get("metadata") or {}).get("name")
        if not name:
            raise FatalStoreError("create: metadata.name is required", status=422)
        await self._request("create", name)
        if name in self._objects:
            raise ConflictError(f"leases {name!r} already exists", status=409)
        self._check_create(name)
        obj = copy.deepcopy(lease)
        meta = obj.setdefault("metadata", {})
        meta["creationTimestamp"] = format_microtime(self.clock.wall())
        meta["uid"] = str(uuid.uuid4())
        return await self._commit(name, "ADDED", obj)

    async def replace(self, lease: JSONDict) -> JSONDict:
        meta = lease.get("metadata") or {}
        name = meta.get("name")
        if not name:
            raise FatalStoreError("replace: metadata.name is required", status=422)
        await self._request("replace", name)
        current = self._objects.get(name)
        if current is None:
            # Leases allow create-on-update: a PUT to a missing Lease creates it, whatever
            # resourceVersion it carries (as the API server does), if creating is allowed.
            self._check_create(name)
            obj = copy.deepcopy(lease)
            obj["metadata"]["creationTimestamp"] = format_microtime(self.clock.wall())
            obj["metadata"]["uid"] = str(uuid.uuid4())
            return await self._commit(name, "ADDED", obj)
        if meta.get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ConflictError(
                f"Operation cannot be fulfilled on leases {name!r}: the object has been "
                "modified; please apply your changes to the latest version and try again",
                status=409)
        obj = copy.deepcopy(lease)
        obj["metadata"]["creationTimestamp"] = current["metadata"].get("creationTimestamp")
        obj["metadata"]["uid"] = current["metadata"].get("uid")
        return await self._commit(name, "MODIFIED", obj)

    async def watch(self, name: str, resource_version: str | None) -> AsyncIterator[WatchEvent]:
        await self._request("watch", name)
        generation = self._generation
        if resource_version is None:
            start = self._revision
            if name in self._objects:
                yield WatchEvent("ADDED", copy.deepcopy(self._objects[name]))
        else:
            start = int(resource_version)
            if start < self._oldest:
                raise WatchExpiredError(
                    f"too old resource version: {start} ({self._oldest})", status=410)
        while True:
            for revision, event in list(self._history):
                if revision > start:
                    start = revision
                    if event.object["metadata"]["name"] == name:
                        yield WatchEvent(event.type, copy.deepcopy(event.object))
            if self._generation != generation:
                return
            async with self._changed:
                if self._revision == start and self._generation == generation:
                    await self._changed.wait()

    # --- test helpers -----------------------------------------------------------------

    async def put_raw(self, obj: JSONDict) -> JSONDict:
        """Store `obj` as is (no validation, no CAS), as a buggy or hostile writer might."""
        name = obj["metadata"]["name"]
        kind = "MODIFIED" if name in self._objects else "ADDED"
        return await self._commit(name, kind, obj)

    async def delete(self, name: str) -> None:
        current = self._objects.get(name)
        if current is not None:
            await self._commit(name, "DELETED", current)

    def compact(self) -> None:
        """Forget all history: a watch from any version seen so far now gets 410 Gone."""
        self._oldest = self._revision + 1
        self._history.clear()

    async def break_watches(self) -> None:
        """End every open watch, as an API server restart would."""
        self._generation += 1
        async with self._changed:
            self._changed.notify_all()

    def peek(self, name: str) -> JSONDict | None:
        """The stored object, without counting a request (for assertions)."""
        obj = self._objects.get(name)
        return copy.deepcopy(obj) if obj is not None else None
