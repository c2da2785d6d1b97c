"""The gate on loopback sockets: open while leading, refusing otherwise, every open
connection cut when the term ends, and no byte passed on after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from leadership_operator.gate import Gate

#: every line the app received, in order.
RECEIVED: list[bytes] = []


@pytest.fixture
async def app() -> AsyncIterator[int]:
    """An app that answers each line with ``ok <line>`` (and records it); its port."""
    RECEIVED.clear()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            RECEIVED.append(line)
            writer.write(b"ok " + line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


class Term:
    leading = True

    def __call__(self) -> bool:
        return self.leading


async def gate_on(app: int, term: Term) -> tuple[Gate, asyncio.Server, int]:
    gate = Gate(term, "127.0.0.1", app)
    server = await gate.serve("127.0.0.1", 0)
    return gate, server, server.sockets[0].getsockname()[1]


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
              line: bytes) -> bytes:
    writer.write(line + b"\n")
    await writer.drain()
    return await asyncio.wait_for(reader.readline(), 5)


async def test_a_kept_alive_connection_passes_while_leading_and_is_cut_at_step_down(
        app: int) -> None:
    term = Term()
    gate, server, port = await gate_on(app, term)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert [await ask(reader, writer, b"a"), await ask(reader, writer, b"b")] == [
        b"ok a\n", b"ok b\n"]  # one connection, two answers
    assert gate.open_connections == 1
    term.leading = False
    gate.shut()
    with pytest.raises(ConnectionResetError):  # reset under the client
        await asyncio.wait_for(reader.read(), 5)
    assert (gate.accepted, gate.cut, gate.open_connections) == (1, 1, 0)
    server.close()


async def test_while_not_leading_a_connection_is_aborted_at_once(app: int) -> None:
    term = Term()
    term.leading = False
    gate, server, port = await gate_on(app, term)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"a\n")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5)
    assert (gate.accepted, gate.refused) == (0, 1)
    server.close()


async def test_no_byte_passes_after_the_term_even_before_shut(app: int) -> None:
    term = Term()
    gate, server, port = await gate_on(app, term)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await ask(reader, writer, b"a") == b"ok a\n"
    term.leading = False  # the renew deadline passed; the step-down not yet told
    writer.write(b"b\n")
    await writer.drain()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5)
    assert RECEIVED == [b"a\n"] and gate.cut == 1  # "b" never reached the app
    gate.shut()
    assert gate.cut == 1  # counted once
    server.close()


async def test_a_term_that_ends_while_connecting_to_the_app_lets_nothing_through(
        app: int) -> None:
    term = Term()
    gate, server, port = await gate_on(app, term)
    real_open = asyncio.open_connection

    async def slow_open(*args: object, **kwargs: object) -> object:
        connected = await real_open(*args, **kwargs)  # type: ignore[arg-type]
        term.leading = False  # the step-down comes while the gate connects...
        gate.shut()  # ...and `shut` finds nothing open yet
        return connected

    asyncio.open_connection = slow_open  # type: ignore[assignment]
    try:
        reader, writer = await real_open("127.0.0.1", port)
        writer.write(b"a\n")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)
    finally:
        asyncio.open_connection = real_open
    assert (gate.accepted, gate.refused, gate.open_connections, RECEIVED) == (0, 1, 0, [])
    server.close()


async def test_an_unreachable_app_aborts_the_client(app: int) -> None:
    gate = Gate(Term(), "127.0.0.1", 1)  # nothing listens on port 1
    server = await gate.serve("127.0.0.1", 0)
    reader, _ = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5)
    assert gate.accepted == 0
    server.close()


@pytest.mark.parametrize(("host", "port"), [("", 80), ("127.0.0.1", 0), ("h", 70000),
                                            ("h", True)])
def test_a_bad_target_is_refused_up_front(host: str, port: int) -> None:
    with pytest.raises(ValueError, match="gate target"):
        Gate(Term(), host, port)
