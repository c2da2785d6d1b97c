"""A loopback TCP proxy that injects network faults between a client and the API server.

Point a kubeconfig at the proxy (`controlplane.cluster.kubeconfig_via`) and every connection
that client opens goes through it. Then, per connection or for all established ones:

- `blackhole()`: stop forwarding in both directions and close nothing, as a half-open
  connection behaves (a dead NAT entry, a peer that froze): reads hang, nothing errors.
  Connections opened afterwards are forwarded normally.
- `reset()`: abort with a TCP RST, as a restarted middlebox does.
- `latency`: a delay added to each chunk, in both directions, pipelined as on a long wire
  (a round trip takes at least twice it).

TLS passes through untouched (the proxy only moves bytes), so the API server's certificate
must name the address the client dials: 127.0.0.1, which the test PKI includes.

The proxy runs its own event loop on a daemon thread, so it serves synchronous tests,
asyncio tests and the chaos run alike without sharing their loop; every method is safe to
call from any thread. Used by the silent-watch and hung-request tests and by `make chaos`.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .waiting import eventually

T = TypeVar("T")


@dataclass
class Link:
    """One proxied connection (client side and upstream side)."""

    id: int
    opened_at: float  # time.monotonic()
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    blackholed: bool = False
    forwarded: int = 0  # bytes, both directions
    done: asyncio.Event = field(default_factory=asyncio.Event)


class TcpProxy:
    """Forward 127.0.0.1:`port` to `target`. ``with TcpProxy(("127.0.0.1", 6443)) as p: ...``"""

    def __init__(self, target: tuple[str, int], *, latency: float = 0.0) -> None:
        self.target = target
        self.latency = latency
        self.port = 0
        self._links: dict[int, Link] = {}
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        #: while True, every new connection is blackholed as it opens (see `partition`).
        self.partitioned = False

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> TcpProxy:
        """Start listening (idempotent); `port` is then set."""
        if self._thread.is_alive():
            return self
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        """Close the listener and every connection; end the thread."""
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            # Every task of this loop, not only the handlers seen so far: a connection
            # accepted just before the close has a handler task that has not started yet,
            # and a task left pending would be destroyed with the closed loop.
            while others := asyncio.all_tasks() - {asyncio.current_task()}:
                for link in list(self._links.values()):
                    _abort(link)
                for task in others:
                    task.cancel()
                await asyncio.gather(*others, return_exceptions=True)
            await asyncio.sleep(0)  # let the aborted transports' callbacks run

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- faults -------------------------------------------------------------------------

    def links(self) -> list[Link]:
        """The connections open now, oldest first."""
        return self._call(self._snapshot())

    def blackhole(self, links: list[Link] | None = None) -> int:
        """Stop forwarding on `links` (default: every open connection), closing nothing.
        Returns how many were blackholed. Later connections are not affected."""

        async def apply() -> int:
            chosen = links if links is not None else list(self._links.values())
            for link in chosen:
                link.blackholed = True
            return len(chosen)

        return self._call(apply())

    def partition(self) -> int:
        """Blackhole every open connection and every later one, until `heal()`: the client
        is cut off from the server, with nothing closed. Returns how many were open."""
        self.partitioned = True
        return self.blackhole()

    def heal(self) -> None:
        """New connections are forwarded again (the blackholed ones stay silent, as after a
        real partition: the client must time them out)."""
        self.partitioned = False

    def reset(self, links: list[Link] | None = None) -> int:
        """Abort `links` (default: every open connection) with a TCP RST to both sides."""

        async def apply() -> int:
            chosen = links if links is not None else list(self._links.values())
            for link in chosen:
                _abort(link)
            return len(chosen)

        return self._call(apply())

    def busiest_link(self, window: float = 1.0, timeout: float = 15.0) -> Link:
        """The one connection whose traffic grew over a `window` in which no connection
        opened: a watch carrying frequent events, say. Waits (up to `timeout`) until exactly
        one qualifies."""
        def the_busy_one() -> Link | None:
            before = {link.id: link.forwarded for link in self.links()}
            time.sleep(window)  # the window the traffic is counted over, not a wait
            growing = [link for link in self.links()
                       if link.id in before and link.forwarded > before[link.id]]
            return growing[0] if len(growing) == 1 else None

        return eventually(the_busy_one, timeout, "one busy connection", every=0,
                          fail=lambda last: TimeoutError(
                              f"no single busy connection within {timeout}s"))

    def wait_for_links(self, count: int, timeout: float) -> list[Link]:
        """Wait until at least `count` connections are open; return them."""
        def enough() -> list[Link] | None:
            open_now = self.links()
            return open_now if len(open_now) >= count else None

        return eventually(enough, timeout, f"{count} connections", every=0.01,
                          fail=lambda last: TimeoutError(
                              f"fewer than {count} connections within {timeout}s through "
                              f"the proxy at {self.address}"))

    # --- the forwarding -----------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=10)

    async def _snapshot(self) -> list[Link]:
        return sorted(self._links.values(), key=lambda link: link.id)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._forward(reader, writer)
        except asyncio.CancelledError:
            pass  # stop(): the normal end of a connection handler

    async def _forward(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        link = Link(next(self._ids), time.monotonic(), writer, up_writer,
                    blackholed=self.partitioned)
        self._links[link.id] = link
        try:
            await asyncio.gather(self._pump(reader, up_writer, link),
                                 self._pump(up_reader, writer, link))
        finally:
            self._links.pop(link.id, None)
            for w in (writer, up_writer):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    link: Link) -> None:
        """Forward one direction. Each chunk leaves `latency` seconds after it arrived,
        pipelined as on a long wire: chunks in flight do not wait for one another."""
        loop = asyncio.get_running_loop()
        in_flight: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def receive() -> None:
            try:
                while not link.blackholed:
                    data = await reader.read(65536)
                    if not data:
                        break
                    in_flight.put_nowait((loop.time() + self.latency, data))
            except (ConnectionError, OSError):
                pass
            finally:
                in_flight.put_nowait((loop.time() + self.latency, b""))  # the end, in order

        receiver = asyncio.ensure_future(receive())
        try:
            while not link.done.is_set():
                due, data = await in_flight.get()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if link.blackholed:
                    await link.done.wait()  # swallow it and hold the connection open
                    break
                if not data:
                    break
                writer.write(data)
                link.forwarded += len(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
            link.done.set()
            if not link.blackholed:
                try:
                    writer.write_eof()
                except (OSError, RuntimeError):
                    pass


def _abort(link: Link) -> None:
    """Close both sides with RST (SO_LINGER 0) and end the link's pumps."""
    for w in (link.client, link.upstream):
        sock = w.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        w.transport.abort()
    link.done.set()
