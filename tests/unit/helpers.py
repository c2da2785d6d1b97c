"""Shared pieces of the unit tests: a stream recorder and a store wrapper that injects faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from leadership import Candidate, ManualClock, MemoryLeaseStore
from leadership.stores import JSONDict, WatchEvent


@dataclass
class Recorder:
    """Consumes a candidate's stream in a task, noting each value and when it came."""

    candidate: Candidate
    clock: ManualClock
    values: list[bool] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    error: BaseException | None = None
    task: asyncio.Task[None] | None = None

    def start(self) -> Recorder:
        stream = self.candidate.run_for_election()

        async def consume() -> None:
            try:
                async for value in stream:
                    self.values.append(value)
                    self.times.append(self.clock.now())
            except Exception as exc:
                self.error = exc

        self.task = asyncio.ensure_future(consume())
        return self

    @property
    def finished(self) -> bool:
        return self.task is not None and self.task.done()


class FaultyStore:
    """Forwards to a shared MemoryLeaseStore; `fail[op]` raises, `hang` blocks an operation.

    Each candidate can get its own FaultyStore over one MemoryLeaseStore, so faults hit one
    candidate only, like a network partition between it and the API server.
    """

    def __init__(self, inner: MemoryLeaseStore) -> None:
        self.inner = inner
        self.namespace = inner.namespace
        self.fail: dict[str, BaseException] = {}
        self.hang: set[str] = set()
        self.calls: dict[str, int] = {}
        self._released = asyncio.Event()

    def heal(self) -> None:
        self.fail.clear()
        self.hang.clear()
        self._released.set()
        self._released = asyncio.Event()

    async def _gate(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if op in self.fail:
            raise self.fail[op]
        while op in self.hang:
            await self._released.wait()

    async def get(self, name: str) -> JSONDict | None:
        await self._gate("get")
        return await self.inner.get(name)

    async def create(self, lease: JSONDict) -> JSONDict:
        await self._gate("create")
        return await self.inner.create(lease)

    async def replace(self, lease: JSONDict) -> JSONDict:
        await self._gate("replace")
        return await self.inner.replace(lease)

    async def watch(self, name: str, resource_version: str | None) -> AsyncIterator[WatchEvent]:
        await self._gate("watch")
        async for event in self.inner.watch(name, resource_version):
            yield event
