"""The gate: the app's port, open only while this pod leads.

kube-proxy never ends an established connection when an endpoint goes (by design), so a
client that keeps its connection alive (every HTTP client library, every database driver)
stays on a pod after its term ended, whatever the labels and EndpointSlices say. `Gate` is a
TCP proxy in front of the app (``leadership sidecar --gate-port``; the Service targets it):

- a connection is accepted only while `is_leading()` (the Candidate's ``is_leader``: true
  only until its renew deadline); otherwise it is reset at once (aborted with SO_LINGER 0,
  as every abort here), so the client knows and connects again, through the Service, to
  the leader;
- bytes are passed on, either way, only while `is_leading()`; the first chunk after the term
  ended aborts the connection instead, so no answer of a pod whose term is over reaches a
  client, even before `shut` runs;
- `shut()` (at step-down or release) aborts every open connection at once.

Counters (`accepted`, `refused`, `cut`) are read by the sidecar's metrics at scrape time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("leadership.sidecar")
#: bytes read at a time from either side.
CHUNK = 65536
#: seconds to connect to the app before the client's connection is given up.
CONNECT_SECONDS = 5.0


class _TermOver(Exception):
    """Leadership ended while a connection was open."""


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a reset (SO_LINGER 0), not a FIN: the client knows at once
    that nothing more comes, whatever it was waiting for."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    app: asyncio.StreamWriter

    def abort(self) -> None:
        for writer in (self.client, self.app):
            reset(writer)


@dataclass(eq=False)
class Gate:
    """A TCP proxy to the app at (`host`, `port`), open only while `is_leading()`."""

    is_leading: Callable[[], bool]
    host: str
    port: int
    accepted: int = 0
    refused: int = 0
    #: connections aborted because the term ended while they were open.
    cut: int = 0
    _open: set[_Connection] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not (
                0 < self.port < 65536):
            raise ValueError(f"gate target port must be in 1..65535, got {self.port!r}")
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"gate target host must be a non-empty str, got {self.host!r}")

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def shut(self) -> None:
        """The term ended: abort every open connection, now."""
        if self._open:
            log.info("gate: leadership ended; closing %d open connection(s)", len(self._open))
        for connection in list(self._open):
            connection.abort()
            self.cut += 1
        self._open.clear()

    async def serve(self, host: str | None, port: int) -> asyncio.Server:
        """Listen on (`host`, `port`); None: every address."""
        return await asyncio.start_server(self.handle, host, port)

    async def handle(self, client_reader: asyncio.StreamReader,
                     client: asyncio.StreamWriter) -> None:
        """One client connection, from accept to close."""
        if not self.is_leading():
            self.refused += 1
            reset(client)
            return
        try:
            app_reader, app = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), CONNECT_SECONDS)
        except (OSError, TimeoutError) as exc:
            log.warning("gate: cannot reach the app at %s:%d: %s", self.host, self.port, exc)
            reset(client)
            return
        if not self.is_leading():  # the term ended while connecting: `shut` has run
            self.refused += 1
            reset(app)
            reset(client)
            return
        connection = _Connection(client, app)
        self.accepted += 1
        self._open.add(connection)
        ended = False
        try:
            async with asyncio.TaskGroup() as pipes:
                pipes.create_task(self._pipe(client_reader, app))
                pipes.create_task(self._pipe(app_reader, client))
            ended = True  # both sides said all they had to say
        except* _TermOver:
            if connection in self._open:  # not counted by `shut` already
                self.cut += 1
        except* OSError:
            pass  # either side went away: the other is closed below
        finally:
            if connection in self._open:  # not already shut
                self._open.discard(connection)
                if ended:
                    client.close()
                    app.close()
                else:
                    connection.abort()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Pass bytes on while leading; end the sink's half at the source's end."""
        while data := await source.read(CHUNK):
            if not self.is_leading():
                raise _TermOver
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            with contextlib.suppress(OSError):
                sink.write_eof()
