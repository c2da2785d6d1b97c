"""`leadership sidecar`: leader election for an app in any language, over HTTP.

Runs one `leadership.Candidate` for its pod (identity ``$POD_NAME``) on the Lease named by
``--election`` in the pod's namespace, and serves:

- ``GET /leader``: ``{"leader": <holder or "">, "is_leader": bool, "fencing_token": int|null,
  "lease": "<ns>/<name>"}``. It reads the candidate's own observation, which follows every
  watch event, so the answer is never more than one watch event behind the Lease. ``leader``
  is ``""`` while the Lease is free, before the first read, and once the holder's claim ran
  out (on this process's monotonic clock).
- ``GET /healthz``: liveness. 200 while the candidate campaigns; 503 once it has ended (a
  fatal error such as RBAC refusing the Lease). It never depends on *being* leader.
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
  ``fencing_token`` with its writes.
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
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import leadership

from .kubeclient import api_client

log = logging.getLogger("leadership.sidecar")


@dataclass
class SidecarOptions:
    election: str
    namespace: str
    identity: str
    kubeconfig: Path | None = None
    port: int = 4040
    lease_seconds: int = 15


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


def leader_answer(candidate: leadership.Candidate) -> dict[str, Any]:
    """The body of ``GET /leader``."""
    return {"leader": candidate.leader, "is_leader": candidate.is_leader,
            "fencing_token": candidate.fencing_token,
            "lease": f"{candidate.store.namespace}/{candidate.key}"}


def http_app(candidate: leadership.Candidate, campaign: asyncio.Task[None]) -> web.Application:
    registry = CollectorRegistry()
    registry.register(CandidateCollector(candidate))

    async def leader(_: web.Request) -> web.Response:
        return web.json_response(leader_answer(candidate))

    async def healthz(_: web.Request) -> web.Response:
        if campaign.done():
            return web.Response(status=503, text="the election has ended\n")
        return web.Response(text="ok\n")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/leader", leader)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def run(options: SidecarOptions) -> int:
    """Campaign and serve until SIGTERM/SIGINT (exit 0, Lease released) or a fatal error
    (exit 1)."""
    api = await api_client(options.kubeconfig)
    store = leadership.KubernetesLeaseStore(api, options.namespace)
    candidate = leadership.Candidate(store, options.election, options.identity,
                                     ttl=options.lease_seconds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def campaign() -> None:
        async for leading in candidate.run_for_election():
            log.info("%s: %s", options.identity,
                     f"leader (fencing token {candidate.fencing_token})" if leading
                     else "follower")

    election = asyncio.create_task(campaign())
    runner = web.AppRunner(http_app(candidate, election), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "0.0.0.0", options.port).start()
        log.info("sidecar %s: election %s/%s, serving on :%d", options.identity,
                 options.namespace, options.election, options.port)
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
        await candidate.stop()  # releases the Lease if it holds it
        election.cancel()
        with contextlib.suppress(BaseException):
            await election
        await runner.cleanup()
        await api.close()
