"""What you need to unit-test code that uses a `Candidate` or a `Follower`, fast and exactly.

- `ManualClock`: time that moves only when the test says so. Pass it as ``clock=`` to the
  Candidate, the Follower and the `MemoryLeaseStore`; ``await clock.advance(5)`` runs
  everything due in those 5 seconds, in order, and returns when the loop is idle.
- `MemoryLeaseStore`: the API server's Lease semantics (compare-and-swap, watch, 410) in memory.
- `FaultyStore`: wraps a store and fails or hangs chosen operations, for one candidate only,
  like a network partition between it and the API server.
- `Recorder`: consumes a candidate's stream in a task and notes each value with its time.

None of this is for production: an in-memory store is one process's view, not a lock.
"""

from __future__ import annotations

import asyncio
import datetime
import heapq
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypeVar

from .candidate import Candidate
from .clock import Clock
from .stores import JSONDict, LeaseStore, WatchEvent
from .stores.memory import MemoryLeaseStore

T = TypeVar("T")


class ManualClock:
    """A clock that moves only when told to; for deterministic tests.

    `await clock.advance(seconds)` wakes every sleeper whose deadline falls inside the step,
    in deadline order, letting the event loop run until it is idle after each wake-up.
    """

    EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

    def __init__(self, start: float = 1000.0) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> datetime.datetime:
        return self.EPOCH + datetime.timedelta(seconds=self._now)

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), fut))
        await fut

    async def settle(self) -> None:
        """Run the event loop until no callback is ready (every task waits on something).

        asyncio has no public way to ask "is anything ready to run?": a task waiting on a
        future and a task about to run look the same from outside. So this reads the loop's
        ready queue (``_ready``, present in CPython's selector and proactor loops and in
        uvloop's Python-compatible shim). Where a loop has no such queue it falls back to a
        fixed number of rounds, which is enough for this package's own call depth.
        """
        loop = asyncio.get_running_loop()
        if not hasattr(loop, "_ready"):
            for _ in range(200):
                await asyncio.sleep(0)
            return
        idle_rounds = 0
        for _ in range(10_000):
            await asyncio.sleep(0)
            idle_rounds = idle_rounds + 1 if not loop._ready else 0
            if idle_rounds >= 3:
                return
        raise RuntimeError("ManualClock.settle: the event loop never became idle")

    def jump(self, seconds: float) -> None:
        """Move time on without running anything: what a paused process (SIGSTOP, a long GC
        pause, a frozen VM) sees when it resumes."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        self._now += seconds

    async def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        target = self._now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline = self._sleepers[0][0]
            self._now = max(self._now, deadline)
            # Everything due at the same instant wakes together, as on a real clock.
            while self._sleepers and self._sleepers[0][0] == deadline:
                _, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    fut.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()


class FaultyStore:
    """Forwards to a store; ``fail[op] = exc`` raises, ``hang.add(op)`` blocks an operation.

    Give each candidate its own FaultyStore over one shared store, so faults hit one candidate
    only. Operations: "get", "create", "replace", "watch". `calls` counts them; `heal()` ends
    every fault and releases what hangs. ``hold.add(op)`` performs the operation at once but
    holds its answer until `heal()`: a slow response carrying an old state.
    `silence_watches()` makes every watch open now go
    quiet for good, delivering nothing and raising nothing, as over a half-open connection;
    watches opened later work.
    """

    def __init__(self, inner: LeaseStore) -> None:
        self.inner = inner
        self.namespace = inner.namespace
        self.fail: dict[str, BaseException] = {}
        self.hang: set[str] = set()
        self.hold: set[str] = set()
        self.calls: dict[str, int] = {}
        self._released = asyncio.Event()
        self._watch_generation = 0

    def __repr__(self) -> str:
        return f"FaultyStore({self.inner!r})"

    def heal(self) -> None:
        self.fail.clear()
        self.hang.clear()
        self.hold.clear()
        self._released.set()
        self._released = asyncio.Event()

    def silence_watches(self) -> None:
        self._watch_generation += 1

    async def _gate(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if op in self.fail:
            raise self.fail[op]
        while op in self.hang:
            await self._released.wait()

    async def _answer(self, op: str, answer: T) -> T:
        while op in self.hold:
            await self._released.wait()
        return answer

    async def get(self, name: str) -> JSONDict | None:
        await self._gate("get")
        return await self._answer("get", await self.inner.get(name))

    async def create(self, lease: JSONDict) -> JSONDict:
        await self._gate("create")
        return await self._answer("create", await self.inner.create(lease))

    async def replace(self, lease: JSONDict) -> JSONDict:
        await self._gate("replace")
        return await self._answer("replace", await self.inner.replace(lease))

    async def watch(self, name: str, resource_version: str | None) -> AsyncIterator[WatchEvent]:
        await self._gate("watch")
        generation = self._watch_generation
        async for event in self.inner.watch(name, resource_version):
            if generation != self._watch_generation:
                await asyncio.Event().wait()  # silent until cancelled
            yield event


@dataclass
class Recorder:
    """Consumes `candidate`'s stream in a task, noting each value and when (on `clock`) it came.

    ``rec = Recorder(candidate, clock).start()``; then read `values`, `times`, `error`.
    """

    candidate: Candidate
    clock: Clock
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


__all__ = ["FaultyStore", "ManualClock", "MemoryLeaseStore", "Recorder"]
