"""The HTTP endpoints of the operator and the sidecar, served so that no client can starve
the process that holds a Lease.

- At most `MAX_CONNECTIONS` connections at once; one more is closed as soon as it opens
  (the kubelet's probes and a metrics scraper need a handful). Thousands of connections can
  therefore never take the descriptors and memory the API server's connection needs.
- A connection idle, or whose request has not fully arrived, for `IDLE_TIMEOUT` seconds is
  closed (aiohttp would keep an idle one for an hour), and request lines and headers are
  bounded in size.
- `application` is the one shell both serve: their GET routes and ``/metrics`` from a
  registry (prometheus-client's own aiohttp handler: text or OpenMetrics, gzip on request).
- Bound to `bind_address`: by default every address, IPv4 and IPv6 (an IPv6-only cluster's
  probes reach it too), or one address given with ``--bind-address``.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from .errors import CommandError

MAX_CONNECTIONS = 64
IDLE_TIMEOUT = 5.0
MAX_LINE = 4096


def application(routes: Mapping[str, Handler], registry: CollectorRegistry) -> web.Application:
    """An app answering GET on each of `routes`, and ``/metrics`` from `registry`."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    return app


class _Refused(asyncio.Protocol):
    """What a connection over the limit gets: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


@dataclass
class Served:
    runner: web.AppRunner
    servers: list[asyncio.Server] = field(default_factory=list)
    #: connections closed at once because `MAX_CONNECTIONS` were open.
    refused: int = 0

    @property
    def ports(self) -> list[int]:
        return sorted({s.getsockname()[1] for srv in self.servers for s in srv.sockets})

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()
        await self.runner.cleanup()


async def serve(app: web.Application, port: int, bind_address: str | None = None, *,
                max_connections: int = MAX_CONNECTIONS) -> Served:
    """Serve `app` on `port` of `bind_address` (None: every address) within the limits
    above. A port already taken, or an address not of this host, is a `CommandError`."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=IDLE_TIMEOUT,
                           max_line_size=MAX_LINE, max_field_size=MAX_LINE,
                           handler_cancellation=True)
    await runner.setup()
    served = Served(runner)
    server = runner.server
    assert server is not None

    def protocol() -> asyncio.Protocol:
        if len(server.connections) >= max_connections:
            served.refused += 1
            return _Refused()
        return server()

    loop = asyncio.get_running_loop()
    try:
        served.servers.append(await loop.create_server(
            protocol, host=bind_address or None, port=port, reuse_address=True,
            family=socket.AF_UNSPEC))
    except BaseException as exc:
        await runner.cleanup()
        where = f"{bind_address}:{port}" if bind_address else f"port {port}"
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            raise CommandError(f"{where} is in use: another process listens on it") from exc
        if isinstance(exc, OSError):
            raise CommandError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
        raise
    return served
