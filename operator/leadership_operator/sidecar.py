"""`leadership sidecar`: leader election for an app in any language, over HTTP.

Runs one `leadership.Candidate` for its pod (identity ``$POD_NAME``) on the Lease named by
``--election`` in the pod's namespace, and serves:

- ``GET /leader``: ``{"leader": <holder or "">, "is_leader": bool, "role": "starting" |
  "follower" | "leader" | "waiting", "fence": {"lease_uid": str, "token": int} | null,
  "fencing_token": int|null, "lease": "<ns>/<name>", "waiting": <why> | null}``. It reads
  the candidate's own observation, which follows every watch event, so the answer is never
  more than one watch event behind the Lease. ``leader`` is ``""`` while the Lease is free,
  before the first read, and once the holder's claim ran out (on this process's monotonic
  clock). ``fence`` is what a protected resource must compare: the token alone starts again
  when the Lease is deleted and re-created, its uid does not repeat.
- ``GET /healthz``: liveness. 200 while the candidate campaigns, its body saying why when it
  waits for a deleted Lease it may not create; 503 once the campaign has ended (a fatal
  error such as RBAC refusing to read the Lease). It never depends on *being* leader.
- with ``--gate-port``, the gate (`gate.Gate`): a TCP proxy to the app's port that accepts
  connections only while this pod leads and closes every open one the moment it steps down
  or releases; a Service that targets it never reaches a pod whose term is over, kept-alive
  connections included.
- ``GET /metrics``: Prometheus metrics under client-go's names,
  ``leader_election_master_status{name}`` and ``leader_election_slowpath_total{name}``, so
  existing dashboards and alerts work, plus the library's own counters
  (``leadership_candidate_*``).

Guarantees and non-guarantees:

- On SIGTERM (or SIGINT) it releases the Lease before exiting, so a rolling update hands over
  in milliseconds. On SIGKILL the Lease runs out after ``--lease-seconds``.
- It never gates the pod's readiness on leadership: a readiness probe that fails on
  followers deadlocks rolling updates (contour#1385 and others). Route to the leader by the
  operator's ``role`` label instead.
- ``is_leader`` is the library's promise (docs/library.md): true only while the last renewal
  was sent less than the renew deadline ago. An app that must not act twice passes
  ``fence`` with its writes.
- A deleted Lease that the pod's RBAC does not let it create (manifests/example pre-creates
  it) is waited for as a follower, said once in the log and in ``/healthz``: re-applying the
  Lease resumes the election, no restart needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import leadership

from . import http
from .gate import Gate
from .kubeclient import api_client

log = logging.getLogger("leadership.sidecar")
#: seconds between two looks at what the log has not said yet (see `run`).
REPORT_SECONDS = 0.5


@dataclass
class SidecarOptions:
    election: str
    namespace: str
    identity: str
    kubeconfig: Path | None = None
    port: int = 4040
    lease_seconds: int = 15
    #: None: every address, IPv4 and IPv6.
    bind_address: str | None = None
    #: the gate's port (None: no gate), and the app's address it passes connections to.
    gate_port: int | None = None
    gate_target: tuple[str, int] = ("127.0.0.1", 8080)


class GateCollector(Collector):
    """The gate's counters, read at scrape time."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def collect(self) -> Iterator[Metric]:
        g = self.gate
        for name, doc, value in (
                ("leadership_gate_connections_accepted_total",
                 "Connections passed to the app while leading", g.accepted),
                ("leadership_gate_connections_refused_total",
                 "Connections aborted at once because this pod was not leading", g.refused),
                ("leadership_gate_connections_cut_total",
                 "Open connections aborted because the term ended", g.cut)):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily("leadership_gate_connections_open",
                                "Connections open through the gate", value=g.open_connections)


class CandidateCollector(Collector):
    """Reads a Candidate's counters at scrape time: nothing to keep in step."""

    def __init__(self, candidate: leadership.Candidate) -> None:
        self.candidate = candidate

    def collect(self) -> Iterator[Metric]:
        c, m = self.candidate, self.candidate.metrics
        name = [c.key]

        def gauge(metric: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(metric, doc, labels=["name"])
            family.add_metric(name, value)
            return family

        def counter(metric: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(metric, doc, labels=["name"])
            family.add_metric(name, value)
            return family

        # client-go's names and meanings (k8s.io/client-go/tools/leaderelection/metrics.go).
        yield gauge("leader_election_master_status",
                    "Gauge of if the reporting system is master of the relevant lease, 0 "
                    "indicates backup, 1 indicates master. 'name' is the string used to "
                    "identify the lease.", 1 if c.is_leader else 0)
        yield counter("leader_election_slowpath_total",
                      "Total number of slow path exercised in renewing leader leases. 'name' "
                      "is the string used to identify the lease.", m.slow_path_renewals)
        yield counter("leadership_candidate_acquisitions_total",
                      "Times this candidate became leader", m.acquisitions)
        yield counter("leadership_candidate_step_downs_total",
                      "Times this candidate stopped leading (lost, resigned or stopped)",
                      m.step_downs)
        yield counter("leadership_candidate_renewals_total",
                      "Renewals from the cached Lease (the fast path)", m.renewals)
        yield counter("leadership_candidate_renew_failures_total",
                      "Failed renewal attempts, retried until the deadline", m.renew_failures)
        yield counter("leadership_candidate_acquire_conflicts_total",
                      "Acquisitions lost to another writer (409)", m.acquire_conflicts)
        yield counter("leadership_candidate_late_acquisitions_total",
                      "Acquisitions answered after the renew deadline, too late to count",
                      m.late_acquisitions)
        if m.last_renewal_latency is not None:
            yield gauge("leadership_candidate_last_renewal_seconds",
                        "Duration of the last successful renewal, request to answer",
                        m.last_renewal_latency)
        token = c.fencing_token
        if token is not None:
            yield gauge("leadership_candidate_fencing_token",
                        "The fencing token (leaseTransitions) while leading", token)


class Roles:
    """This sidecar's role as it may be told: ``starting`` until the candidate has read the
    Lease once (before that, "follower" would be a guess), then ``leader``, ``waiting`` (for a
    Lease it may not create) or ``follower``."""

    def __init__(self, candidate: leadership.Candidate) -> None:
        self.candidate = candidate
        self._read = False

    def now(self) -> str:
        c = self.candidate
        if c.is_leader:
            return "leader"
        if c.blocked is not None:
            return "waiting"
        self._read = self._read or c.watching
        return "follower" if self._read else "starting"

    def describe(self) -> str:
        """The log line's words: the role and what goes with it."""
        c, role = self.candidate, self.now()
        if role == "leader":
            fence = c.fence
            return f"leader (fence: lease uid {fence.lease_uid}, token {fence.token})" if (
                fence is not None) else "leader"
        if role == "waiting":
            return f"waiting: {c.blocked}"
        if role == "starting":
            return "starting: reading the Lease"
        return f"follower (leader: {c.leader or 'nobody'})"


def leader_answer(candidate: leadership.Candidate, roles: Roles) -> dict[str, Any]:
    """The body of ``GET /leader``."""
    fence = candidate.fence
    return {"leader": candidate.leader, "is_leader": fence is not None,
            "role": roles.now(),
            "fence": {"lease_uid": fence.lease_uid, "token": fence.token} if fence else None,
            "fencing_token": fence.token if fence else None,
            "lease": f"{candidate.store.namespace}/{candidate.key}",
            "waiting": candidate.blocked}


def http_app(candidate: leadership.Candidate, campaign: asyncio.Task[None],
             roles: Roles | None = None, gate: Gate | None = None) -> web.Application:
    roles = roles or Roles(candidate)
    registry = CollectorRegistry()
    registry.register(CandidateCollector(candidate))
    if gate is not None:
        registry.register(GateCollector(gate))

    async def leader(_: web.Request) -> web.Response:
        return web.json_response(leader_answer(candidate, roles))

    async def healthz(_: web.Request) -> web.Response:
        if campaign.done():
            return web.Response(status=503, text="the election has ended\n")
        if candidate.blocked is not None:  # alive, and a restart would not help
            return web.Response(text=f"ok, waiting: {candidate.blocked}\n")
        return web.Response(text="ok\n")

    return http.application({"/leader": leader, "/healthz": healthz}, registry)


async def run(options: SidecarOptions) -> int:
    """Campaign and serve until SIGTERM/SIGINT (exit 0, Lease released) or a fatal error
    (exit 1)."""
    api = await api_client(options.kubeconfig)
    try:
        return await serve(options, api)
    finally:
        await api.close()


async def serve(options: SidecarOptions, api: Any) -> int:
    """`run` on an API client the caller closes."""
    store = leadership.KubernetesLeaseStore(api, options.namespace)
    candidate = leadership.Candidate(store, options.election, options.identity,
                                     ttl=options.lease_seconds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    roles = Roles(candidate)
    said = ""
    gate = Gate(lambda: candidate.is_leader, *options.gate_target) if (
        options.gate_port is not None) else None

    def say() -> None:
        nonlocal said
        words = roles.describe()
        if words != said:
            said = words
            log.info("%s: %s", options.identity, words)

    async def campaign() -> None:
        async for leading in candidate.run_for_election():
            if not leading and gate is not None:
                gate.shut()  # the term is over: so is every connection of it
            say()  # at once: a handover's log line carries its own time

    async def report() -> None:
        # What no stream value marks: the first read, a new leader elsewhere, a missing Lease.
        while True:
            say()
            await asyncio.sleep(REPORT_SECONDS)

    election = asyncio.create_task(campaign())
    reporter = asyncio.create_task(report())
    served: http.Served | None = None
    gate_server: asyncio.Server | None = None
    try:
        served = await http.serve(http_app(candidate, election, roles, gate), options.port,
                                  options.bind_address)
        if gate is not None and options.gate_port is not None:
            gate_server = await gate.serve(options.bind_address, options.gate_port)
            log.info("sidecar %s: gate on port %d to %s:%d, open while leading",
                     options.identity, options.gate_port, *options.gate_target)
        log.info("sidecar %s: election %s/%s, serving on %s:%d", options.identity,
                 options.namespace, options.election, options.bind_address or "*",
                 options.port)
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([stopping, election], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if election.done():
            exc = election.exception()
            log.error("sidecar %s: the election ended: %s", options.identity, exc)
            return 1
        log.info("sidecar %s: stopping; releasing the Lease if held", options.identity)
        return 0
    finally:
        if gate_server is not None:
            gate_server.close()  # no new connection, and none of this term left open
        if gate is not None:
            gate.shut()
        await candidate.stop()  # releases the Lease if it holds it
        reporter.cancel()
        election.cancel()
        with contextlib.suppress(BaseException):
            await election
        await asyncio.gather(reporter, return_exceptions=True)
        if served is not None:
            await served.close()
