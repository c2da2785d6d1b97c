"""`make bench-gate`: what the sidecar's gate costs a request, against a direct connection.

    python -m benchmarks.gate [--requests 3000] [--no-write]

An aiohttp app on loopback answers ``GET /`` with its name; the gate (`leadership_operator.
gate.Gate`, leading throughout) passes connections to it. An aiohttp client sends requests
one after another, in rounds that alternate direct and through the gate (the same machine
state for both), in two kinds: one kept-alive connection for every request, and a new
connection per request. Per request: latency p50/p99 (request sent to answer read); per
kind: requests per second. Then the step-down: `--cuts` times, a kept-alive connection open
through the gate, leadership ends, and the time from `Gate.shut` to the client seeing its
connection end. Writes docs/gate.md unless --no-write.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import platform
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from benchmarks import pages
from leadership_operator.gate import Gate

OUT = Path(__file__).resolve().parents[1] / "docs" / "gate.md"
ROUND = 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def app_server() -> tuple[web.AppRunner, int]:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(text="web-0")

    app = web.Application()
    app.router.add_get("/", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def one_round(session: aiohttp.ClientSession, port: int, n: int) -> list[float]:
    took = []
    for _ in range(n):
        start = time.perf_counter()
        async with session.get(f"http://127.0.0.1:{port}/") as response:
            await response.read()
        took.append(time.perf_counter() - start)
    return took


async def measure(requests: int, cuts: int) -> dict[str, dict[str, float]]:
    runner, app_port = await app_server()
    leading = True
    gate = Gate(lambda: leading, "127.0.0.1", app_port)
    server = await gate.serve("127.0.0.1", 0)
    gate_port = server.sockets[0].getsockname()[1]
    rows: dict[str, dict[str, float]] = {}
    try:
        for kind, keep_alive in (("one kept-alive connection", True),
                                 ("a new connection per request", False)):
            took: dict[str, list[float]] = {"direct": [], "through the gate": []}
            spent = dict.fromkeys(took, 0.0)
            connector = aiohttp.TCPConnector(limit=1, force_close=not keep_alive)
            async with aiohttp.ClientSession(connector=connector) as session:
                await one_round(session, app_port, 20)  # warm both paths up
                await one_round(session, gate_port, 20)
                for _ in range(max(1, requests // ROUND)):
                    for path, port in (("direct", app_port), ("through the gate", gate_port)):
                        start = time.perf_counter()
                        took[path] += await one_round(session, port, ROUND)
                        spent[path] += time.perf_counter() - start
            for path, values in took.items():
                rows[f"{kind}, {path}"] = {
                    "requests": len(values), "p50": percentile(values, 0.5),
                    "p99": percentile(values, 0.99), "per second": len(values) / spent[path]}
        ends = []
        for _ in range(cuts):
            leading = True
            connector = aiohttp.TCPConnector(limit=1)
            async with aiohttp.ClientSession(connector=connector) as session:
                await one_round(session, gate_port, 1)  # the connection is open, kept alive
                reader, writer = await asyncio.open_connection("127.0.0.1", gate_port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                await writer.drain()
                await reader.readuntil(b"web-0")
                leading = False
                start = time.perf_counter()
                gate.shut()
                try:
                    await reader.read()
                except ConnectionResetError:
                    pass
                ends.append(time.perf_counter() - start)
                writer.close()
        rows["step-down: Gate.shut -> the client's connection ended"] = {
            "requests": len(ends), "p50": percentile(ends, 0.5), "p99": percentile(ends, 0.99),
            "per second": math.nan}
    finally:
        server.close()
        await runner.cleanup()
    return rows


def table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| path | requests | p50 | p99 | requests per second |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, row in rows.items():
        rate = "" if math.isnan(row["per second"]) else f"{row['per second']:.0f}"
        lines.append(f"| {name} | {row['requests']:.0f} | {row['p50'] * 1e6:.0f} µs | "
                     f"{row['p99'] * 1e6:.0f} µs | {rate} |")
    for kind in ("one kept-alive connection", "a new connection per request"):
        direct, gated = rows[f"{kind}, direct"], rows[f"{kind}, through the gate"]
        lines.append(f"| {kind}: the gate's cost | | +{(gated['p50'] - direct['p50']) * 1e6:.0f}"
                     f" µs | +{(gated['p99'] - direct['p99']) * 1e6:.0f} µs | "
                     f"{gated['per second'] / direct['per second']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=3000, help="per path and kind")
    p.add_argument("--cuts", type=int, default=30, help="step-downs measured")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = p.parse_args()
    if args.requests < ROUND or args.cuts < 1:
        p.error(f"--requests must be at least {ROUND} and --cuts at least 1")
    load = os.getloadavg()[0]
    rows = asyncio.run(measure(args.requests, args.cuts))
    body = table(rows)
    print(body)
    if args.no_write:
        return 0
    pages.write_keeping_analysis(OUT, (
        "# The gate's cost: a request through it against a direct connection\n\n"
        f"`make bench-gate` (`python -m benchmarks.gate {' '.join(sys.argv[1:])}`), run "
        f"{datetime.date.today()} on {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}; load average before: {load:.2f}. An aiohttp app and "
        "client on loopback, in one process with the gate (the sidecar runs it in its own): "
        f"rounds of {ROUND} requests alternate direct and through the gate. Latency is "
        "request sent to answer read; the last rows are the gate's cost (p50 and p99 added, "
        "and the ratio of requests per second, gate to direct).\n\n") + body)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
