"""The operator process: kopf for pods, the Lease cache, our own Candidate for HA.

- kopf watches pods, and the Services that opted into a leader endpoint, through `on.event`
  handlers only: no state-changing handlers, so it writes no annotation and no finalizer
  onto anything; posting of its own Events is off. The handlers feed `Members.pod_event` and
  `Services.service_event`, and mark the elections they touch.
- Leases come through the `LeaseCache` (one list and watch per scope), not kopf: a renewal
  every 2 s on 1,000 Leases is 500 events a second, and each must cost microseconds.
- Replicas elect the active one with `leadership.Candidate` on the operator's own Lease, on
  an API client of its own (its renewals wait behind no label write; a FlowSchema in
  manifests/operator gives them a priority level of their own on the API server too). Every
  replica watches and decides (a standby is warm); only the active one writes, and it checks
  `is_leader` right before each write. Becoming active triggers a full resync.
- ``/healthz`` (liveness) fails (503, saying why) until the Leases are listed, when a
  Lease watch has heard nothing (not even a bookmark) for ``--healthz-silence-seconds``
  (default 180), or when kopf has stopped; ``/readyz`` also while RBAC refuses its label
  writes or its own Lease is missing (what a restart cannot fix); ``/metrics`` serves
  Prometheus metrics.
- On SIGTERM it releases its own Lease first (the standby takes over at once), then stops
  its tasks, then kopf. Its signal handlers replace kopf's, and its tasks start before
  kopf's, because kopf cancels at its end every task created after it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from aiohttp import web

import leadership
from leadership import toolkit

from . import http
from .assembly import Operator
from .contract import Labels, field_manager
from .errors import CommandError
from .kube import ApiKube, Kube
from .kubeclient import api_client, sync_configuration
from .leases import LeaseCache
from .metrics import OperatorMetrics
from .reconcile import Reconciler
from .storage import NowhereDiffBaseStorage, NowhereProgressStorage

log = logging.getLogger("leadership.operator")
#: seconds between two looks at the event loop's lag.
LAG_PROBE = 0.1
#: the operator renews its own Lease every this much of its duration: client-go's
#: RetryPeriod to LeaseDuration (2 s of 15). Its renew deadline stays 2/3 of the duration;
#: renewing earlier leaves each attempt more of the window before it (2.7 s instead of
#: 1.7 s with 15 s), which an API server busy with the operator's own initial labelling
#: needs: measured on 2 cores, it answered a renewal in up to 1.8 s (docs/operator-scale.md).
OWN_RENEW_RATIO = 2 / 15


@dataclass
class Options:
    kubeconfig: Path | None
    namespaces: list[str]  # empty: all namespaces
    lease_name: str
    lease_namespace: str
    identity: str
    label_prefix: str = "leadership.dev"
    resync_seconds: float = 60.0
    http_port: int = 8080
    lease_seconds: int = 15
    #: a Lease watch silent this long fails /healthz.
    healthz_silence_seconds: float = 180.0
    #: None: every address, IPv4 and IPv6.
    bind_address: str | None = None


def _connection_info(options: Options) -> kopf.ConnectionInfo:
    """kopf's credentials: those of every other request (`kubeclient`), read afresh."""
    cfg = sync_configuration(options.kubeconfig)
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization")
    scheme, token = (header.split(" ", 1) if header and " " in header else (None, header))
    return kopf.ConnectionInfo(server=cfg.host, ca_path=cfg.ssl_ca_cert,
                               insecure=not cfg.verify_ssl, scheme=scheme, token=token,
                               certificate_path=cfg.cert_file, private_key_path=cfg.key_file)


def _registry(options: Options, inside: Operator) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    keys = inside.labels

    def ours(labels: kopf.Labels, **_: Any) -> bool:
        return keys.election in labels or keys.role in labels

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return _connection_info(options)

    # Async, so that kopf runs it on the event loop: a sync handler would run in a thread
    # and change the members under the reconciler's feet.
    @kopf.on.event("", "v1", "pods", when=ours, registry=registry)
    async def pod_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        inside.pod_event(str(event.get("type")), dict(body))

    @kopf.on.event("", "v1", "services", registry=registry)
    async def service_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        inside.service_event(str(event.get("type")), dict(body))

    return registry


def _settings(options: Options) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # our Events only, aggregated
    # Pods are a built-in resource: no CRD or namespace scanning, which would need RBAC on
    # CRDs and namespaces (without it, kopf never starts the pod watch at all).
    settings.scanning.disabled = True
    # The library's watch timeouts, for kopf's pod watch too.
    settings.watching.server_timeout = toolkit.WATCH_SECONDS[0]
    settings.watching.client_timeout = toolkit.WATCH_SECONDS[0] + 30
    settings.watching.inactivity_timeout = 120  # bookmark-based: a stalled watch restarts
    # Only pods with an election label reach the operator at all (server-side): its cost does
    # not grow with the cluster's other pods. One that loses the label arrives as DELETED.
    settings.watching.label_selectors["pods"] = Labels(options.label_prefix).election
    # Likewise the Services that opted into a leader endpoint.
    settings.watching.label_selectors["services"] = Labels(options.label_prefix).election
    settings.persistence.progress_storage = NowhereProgressStorage()
    settings.persistence.diffbase_storage = NowhereDiffBaseStorage()
    return settings


async def serve_http(options: Options, metrics: OperatorMetrics, leases: LeaseCache,
                     reconciler: Reconciler, candidate: leadership.Candidate,
                     kopf_stopped: Callable[[], bool]) -> http.Served:
    async def healthz(_: web.Request) -> web.Response:
        """Liveness: what a restart can fix."""
        if not leases.synced:
            return web.Response(status=503, text="starting: listing the Leases\n")
        if kopf_stopped():
            return web.Response(status=503, text="kopf has stopped\n")
        silent = leases.silent_scopes(options.healthz_silence_seconds)
        if silent:
            return web.Response(status=503, text=f"lease watch silent: {', '.join(silent)}\n")
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        """Readiness: whether it can do its job. What a restart cannot fix (RBAC refusing
        its writes, its own Lease deleted) shows here, as a pod not ready, not as a
        restart loop."""
        if not leases.synced:
            return web.Response(status=503, text="starting: listing the Leases\n")
        if reconciler.denied is not None:
            return web.Response(status=503, text=f"{reconciler.denied}\n")
        if candidate.blocked is not None:  # no replica can become active
            return web.Response(status=503, text=f"{candidate.blocked}\n")
        return web.Response(text="ok\n")

    app = http.application({"/healthz": healthz, "/readyz": readyz}, metrics.registry)
    return await http.serve(app, options.http_port, options.bind_address)


async def check_namespaces(kube: Kube, options: Options) -> None:
    """Refuse a missing namespace for the operator's own Lease (the replicas could never
    elect an active one); warn of a watched namespace that does not exist (yet)."""
    if await kube.namespace_exists(options.lease_namespace) is False:
        raise CommandError(f"namespace {options.lease_namespace} does not exist, and the "
                           "operator's own Lease goes there: create it, or pass "
                           "--lease-namespace")
    for namespace in options.namespaces:
        if await kube.namespace_exists(namespace) is False:
            log.warning("namespace %s does not exist (yet): no election there until it does",
                        namespace)


async def run(options: Options) -> None:
    """Run until SIGTERM/SIGINT; then release the operator's Lease and exit."""
    api = await api_client(options.kubeconfig)
    try:
        # The operator's own Lease on a client (a connection pool) of its own: its renewals
        # never queue behind the label writes and lists of thousands of elections.
        own_lease_api = await api_client(options.kubeconfig)
        try:
            await operate(options, api, own_lease_api)
        finally:
            await own_lease_api.close()
    finally:
        await api.close()


async def operate(options: Options, api: Any, own_lease_api: Any | None = None) -> None:
    """`run` on API clients the caller closes: `api` for the elections, `own_lease_api`
    for the operator's own Lease (None: `api`)."""
    labels = Labels(options.label_prefix)
    clock = leadership.SystemClock()
    metrics = OperatorMetrics()
    manager = field_manager(options.lease_namespace, options.lease_name)
    kube = ApiKube(toolkit.KubeApi(api), field_manager=manager)
    await check_namespaces(kube, options)
    store = leadership.KubernetesLeaseStore(own_lease_api or api, options.lease_namespace)
    candidate = leadership.Candidate(store, options.lease_name, options.identity,
                                     ttl=options.lease_seconds,
                                     renew_interval=options.lease_seconds * OWN_RENEW_RATIO)
    scopes: list[str | None] = [*options.namespaces] or [None]
    inside = Operator(kube, scopes, clock, labels=labels, identity=options.identity,
                      field_manager=manager, is_active=lambda: candidate.is_leader,
                      metrics=metrics)
    reconciler = inside.reconciler
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def campaign() -> None:
        async for leading in candidate.run_for_election():
            metrics.active.set(1 if leading else 0)
            log.info("%s: %s", options.identity, "active: resyncing every election"
                     if leading else "standby: not writing")
            if leading:
                reconciler.mark_all()

    async def loop_lag() -> None:
        # A busy loop reads its watches late; the API server drops a watcher that falls
        # behind. This says how busy, as it happens.
        while True:
            before = clock.now()
            await clock.sleep_until(before + LAG_PROBE)
            metrics.loop_lag.observe(max(0.0, clock.now() - before - LAG_PROBE))

    # The port first: one in use is said before anything has started.
    kopf_task: asyncio.Task[None] | None = None
    runner = await serve_http(options, metrics, inside.leases, reconciler, candidate,
                              lambda: kopf_task is not None and kopf_task.done())
    try:
        await inside.list_members()  # kopf's own listing arrives in its time
    except BaseException:
        await runner.close()
        raise
    # Our tasks first, and one turn of the loop so that the Candidate has spawned its own:
    # kopf cancels, when it stops, every task created after it started.
    tasks = [asyncio.create_task(t) for t in (
        campaign(), inside.resyncs(options.resync_seconds), loop_lag(), *inside.runs())]
    await asyncio.sleep(0)
    ours = set(asyncio.all_tasks())
    stop_flag: asyncio.Future[None] = loop.create_future()
    kopf_tasks = await kopf.spawn_tasks(
        registry=_registry(options, inside), settings=_settings(options),
        standalone=True, clusterwide=not options.namespaces, namespaces=options.namespaces,
        stop_flag=stop_flag)
    # spawn_tasks installed kopf's SIGTERM/SIGINT handlers; ours replace them, so that a
    # stop releases the operator's Lease first (the standby takes over at once) and only
    # then stops kopf.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    kopf_task = asyncio.create_task(kopf.run_tasks(kopf_tasks, ignored=ours))
    log.info("operator %s started: scope %s, own lease %s/%s", options.identity,
             ", ".join(options.namespaces) or "all namespaces", options.lease_namespace,
             options.lease_name)
    try:
        done_waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([done_waiter, kopf_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in (kopf_task, *tasks):
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        log.info("%s: stopping; releasing the operator's Lease if held", options.identity)
        await candidate.stop()  # release the operator's Lease: a standby takes over at once
        for task in tasks:  # with their sub-tasks, before kopf waits for those
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not stop_flag.done():
            stop_flag.set_result(None)
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(kopf_task, 10)
        await runner.close()
