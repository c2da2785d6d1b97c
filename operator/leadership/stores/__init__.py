"""The one narrow interface between the election logic and a Lease backend.

A `LeaseStore` serves the Leases of one namespace as plain JSON dicts (exactly what the API
server sends and accepts), so no client library's model classes leak into the election logic:

- `get(name)`: the Lease, or None when there is none.
- `create(lease)`: create it; `ConflictError` when it already exists.
- `replace(lease)`: a full PUT of the object, made a compare-and-swap by its
  ``metadata.resourceVersion``; `ConflictError` (409) when someone else wrote first.
- `watch(name, resource_version)`: an async iterator of `WatchEvent` for that one Lease from the
  given version (None: the current state first, as ADDED). It ends when the server ends the
  watch; it raises `WatchExpiredError` when the version is too old, so the caller re-lists.

Each store raises only the errors of `leadership.errors`. The concrete stores import their
client library; nothing else in the package does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

JSONDict = dict[str, Any]
EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]

#: A watch asks the server to end it after a random 5 to 10 minutes (as client-go's
#: reflectors do), so connections are refreshed without polling.
WATCH_SECONDS = (300, 600)


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    object: JSONDict


@runtime_checkable
class LeaseStore(Protocol):
    """Leases of one namespace, as JSON dicts. See the module docstring for the contract."""

    namespace: str

    async def get(self, name: str) -> JSONDict | None: ...

    async def create(self, lease: JSONDict) -> JSONDict: ...

    async def replace(self, lease: JSONDict) -> JSONDict: ...

    def watch(self, name: str, resource_version: str | None) -> AsyncIterator[WatchEvent]: ...


__all__ = ["WATCH_SECONDS", "JSONDict", "LeaseStore", "WatchEvent"]
