"""The same `Candidate` and `Follower` for threaded programs.

Each object wraps the asyncio core (``candidate.core``), which runs on a private event-loop
thread of its own and hands values to the caller's thread through a queue, so a slow or
absent reader never delays a renewal. The guarantees are the core's. What differs:

- every method blocks the calling thread instead of being awaited; every read-only
  attribute of the core (`is_leader`, `fencing_token`, `fence`, `leader`, `leading_until`,
  `metrics`, `node`, `key`, `timing`) reads the core directly, from any thread;
- `run_while_leading(work)` takes a plain callable, ``work(stop_event)``, run in a worker
  thread. A thread cannot be cancelled, so on losing leadership the facade *sets*
  `stop_event` and waits for `work` to return: blocking work must check the event often, or
  protect what it writes with `fencing_token`.

Stores: `PykubeLeaseStore` and `MemoryLeaseStore` fit best. A `KubernetesLeaseStore` works too,
but its ``kubernetes.aio`` ApiClient then belongs to the private loop: do not share it with
another event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

from . import candidate as _candidate
from . import follower as _follower
from .metrics import CandidateMetrics
from .stores import LeaseStore
from .timing import Timing

T = TypeVar("T")
_END = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _LoopThread:
    """An event loop running forever on a daemon thread.

    `close()` cancels every call still waiting for the loop, so that no caller can wait
    forever on a coroutine that a stopped loop will never run.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._closed = False
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[Any]] = set()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for it. Raises `RuntimeError` once closed."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a leadership.sync method was called from its own loop thread")
        with self._lock:
            if self._closed:
                coro.close()
                raise RuntimeError("this leadership.sync object is stopped")
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
            self._pending.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise RuntimeError("this leadership.sync object was stopped meanwhile") from None
        finally:
            with self._lock:
                self._pending.discard(future)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        with self._lock:
            for future in self._pending:
                future.cancel()
        self.loop.close()

    @property
    def closed(self) -> bool:
        return self._closed


def _drain(items: queue.Queue[Any]) -> Iterator[Any]:
    while True:
        item = items.get()
        if item is _END:
            return
        if isinstance(item, _Failure):
            raise item.error
        yield item


class _Facade:
    """Owns the loop thread; pumps one async iterator of the core into a blocking one."""

    def __init__(self, name: str) -> None:
        self._thread = _LoopThread(name)
        self._pump: asyncio.Future[None] | None = None
        self._shutdown_lock = threading.Lock()

    def _iterate(self, open_stream: Any) -> Iterator[Any]:
        """Run ``open_stream()`` (returning an async iterator) on the loop; yield its values."""
        items: queue.Queue[Any] = queue.Queue()

        async def start() -> None:
            stream = open_stream()

            async def pump() -> None:
                try:
                    async for value in stream:
                        items.put(value)
                except BaseException as exc:  # handed to the reading thread
                    items.put(_Failure(exc))
                finally:
                    items.put(_END)

            self._pump = asyncio.ensure_future(pump())

        self._thread.call(start())
        return _drain(items)

    def _shutdown(self, core_stop: Any) -> None:
        """Stop the core, let the pump hand over its last values, close the loop. Callers
        from several threads are serialized: later ones wait, then find it done."""
        with self._shutdown_lock:
            if self._thread.closed:
                return

            async def stop_and_flush() -> None:
                await core_stop()
                if self._pump is not None:
                    await self._pump

            self._thread.call(stop_and_flush())
            self._thread.close()


class _Mirror(Generic[T]):
    """A read-only attribute of the facade that reads the same one of its core."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.__doc__ = getattr(getattr(_candidate.Candidate, name, None), "__doc__", None)

    @overload
    def __get__(self, obj: None, owner: type) -> _Mirror[T]: ...

    @overload
    def __get__(self, obj: object, owner: type) -> T: ...

    def __get__(self, obj: object | None, owner: type) -> T | _Mirror[T]:
        if obj is None:
            return self
        value: T = getattr(obj._core, self.name)  # type: ignore[attr-defined]
        return value

    def __set__(self, obj: object, value: object) -> None:
        raise AttributeError(f"{self.name} is read-only (it is the core Candidate's)")


def _mirror_core_properties(cls: type) -> type:
    """Give `cls` a `_Mirror` of every public property of the core Candidate it lacks."""
    for name, value in vars(_candidate.Candidate).items():
        if isinstance(value, property) and not name.startswith("_") and name not in vars(cls):
            mirror: _Mirror[Any] = _Mirror()
            mirror.__set_name__(cls, name)
            setattr(cls, name, mirror)
    return cls


@_mirror_core_properties
class Candidate(_Facade):
    """A blocking `leadership.Candidate`; same arguments, same guarantees."""

    def __init__(self, store: LeaseStore, key: str, node: str | None = None, ttl: int = 15,
                 **options: Any) -> None:
        self._core = _candidate.Candidate(store, key, node, ttl, **options)
        super().__init__(f"leadership-{key}")

    def __repr__(self) -> str:
        return f"sync.{self._core!r}"

    @property
    def core(self) -> _candidate.Candidate:
        """The asyncio `leadership.Candidate` this wraps (it lives on the private loop)."""
        return self._core

    # The core's read-only surface, read from any thread. Every public property of the
    # core is mirrored (`_mirror_core_properties` adds any not declared here, so none can be
    # missing); the declarations give type checkers their types.
    metrics: _Mirror[CandidateMetrics] = _Mirror()
    node: _Mirror[str] = _Mirror()
    key: _Mirror[str] = _Mirror()
    timing: _Mirror[Timing] = _Mirror()
    is_leader: _Mirror[bool] = _Mirror()
    fencing_token: _Mirror[int | None] = _Mirror()
    fence: _Mirror[_candidate.Fence | None] = _Mirror()
    leader: _Mirror[str] = _Mirror()
    leading_until: _Mirror[float | None] = _Mirror()
    watching: _Mirror[bool] = _Mirror()
    blocked: _Mirror[str | None] = _Mirror()

    def run_for_election(self) -> Iterator[bool]:
        """Start campaigning; a blocking iterator over "am I leader?" (see the async one)."""
        return self._iterate(self._core.run_for_election)

    def run_while_leading(self, work: Callable[[threading.Event], object]) -> None:
        """Campaign, and run ``work(stop_event)`` in a worker thread only while leading.

        Blocks until the campaign ends. On losing leadership `stop_event` is set and `work`
        is awaited (it must return soon after: check the event, or fence your writes); it is
        called again, with a fresh event, when leadership is regained. As with the asyncio
        core: if `work` returns the candidate stops and releases the Lease; if it raises, the
        candidate stops and the exception propagates here; `stop()` from another thread ends
        it. An interrupt (Ctrl-C) in the calling thread stops the candidate, releasing the
        Lease after `work` has returned, and propagates.
        """
        if not callable(work):
            raise TypeError(f"work must be callable as work(stop_event), "
                            f"got {type(work).__name__}")

        async def leading() -> None:
            stop_event = threading.Event()
            finished = asyncio.get_running_loop().run_in_executor(None, work, stop_event)
            try:
                await asyncio.shield(finished)
            except asyncio.CancelledError:
                stop_event.set()
                await asyncio.gather(finished, return_exceptions=True)
                raise

        try:
            self._thread.call(self._core.run_while_leading(leading))
        except RuntimeError:
            if not self._thread.closed:  # else: stop() from another thread ended it
                self.stop()
                raise
        except BaseException:
            self.stop()
            raise
        else:
            self.stop()  # the campaign has ended: close the private loop too

    def resign(self) -> None:
        """Step down, release, campaign again; no effect unless leading (or once stopped)."""
        try:
            self._thread.call(self._core.resign())
        except RuntimeError:
            if not self._thread.closed:
                raise

    def stop(self) -> None:
        """Quit the election, releasing the Lease if held; idempotent."""
        self._shutdown(self._core.stop)

    def __enter__(self) -> Candidate:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class Follower(_Facade):
    """A blocking `leadership.Follower`: iterate to get the leader's identity as it changes."""

    def __init__(self, store: LeaseStore, key: str, **options: Any) -> None:
        self._core = _follower.Follower(store, key, **options)
        super().__init__(f"leadership-follower-{key}")

    def __iter__(self) -> Iterator[str]:
        return self._iterate(self._core.__aiter__)

    def stop(self) -> None:
        """End the iteration; idempotent."""
        self._shutdown(self._core.stop)

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
