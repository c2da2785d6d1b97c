"""`ClusterRecorder`: what the API server says happened to one namespace's pods and Leases (and,
if asked, one Service's EndpointSlices), in its order, stamped with this machine's monotonic
clock as each watch event arrives.

Used by the operator's tests, `make demo`, the node's tests and benchmark, and the chaos
checker: every role label change, every Lease holder change and every change of the pods
behind a Service, so "never two leaders" and "never two endpoints" can be checked event by
event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

from .clients import sync_client
from .traffic import Answer
from .waiting import eventually

ROLE = "leadership.dev/role"


@dataclass(frozen=True)
class Endpoints:
    """The pods behind one Service at one moment, as its EndpointSlices list them."""

    seen: float  # monotonic time the change was seen
    listed: tuple[str, ...]  # every pod listed, whatever its conditions
    ready: tuple[str, ...]  # those kube-proxy sends new connections to while any is ready
    serving: tuple[str, ...]  # ready or not, those whose readiness probe passes


class ClusterRecorder:
    """Watches pods and Leases of one namespace from a thread and records, in the API
    server's order, every role label and every holder, with the time it was seen; with
    `service`, also every change of the pods behind that Service."""

    def __init__(self, kubeconfig: Path, namespace: str, role_label: str = ROLE,
                 service: str | None = None) -> None:
        self.role_label = role_label
        self.api = sync_client(kubeconfig)
        self.namespace = namespace
        self.roles: list[tuple[float, str, str | None]] = []  # (seen at, pod, role)
        self.holders: list[tuple[float, str, str]] = []  # (seen at, lease, holder): new terms
        self.renewals: list[tuple[float, str]] = []  # (seen at, lease): every record change
        self.endpoints: list[Endpoints] = []  # every change of `service`'s endpoints
        #: when any EndpointSlice of the namespace changed (with `service`): what kube-proxy
        #: syncs on, whichever Service it is of.
        self.slice_changes: list[float] = []
        #: errors that ended a watch (it was resumed from the last version seen).
        self.watch_errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._pods, daemon=True),
                         threading.Thread(target=self._leases, daemon=True)]
        if service is not None:
            self._threads.append(threading.Thread(target=self._slices, args=(service,),
                                                  daemon=True))
        for t in self._threads:
            t.start()

    def _stream(self, lister: Any, on: Callable[[str, Any], None],
                relisted: Callable[[], None] | None = None, **params: Any) -> None:
        """Watch from the last version seen, so no intermediate change is lost between two
        watch requests; a 410 (or the first call) starts from a fresh list, before which
        `relisted` forgets what a fresh list will tell again (and what it will not)."""
        version: str | None = None
        while not self._stop.is_set():
            if version is None and relisted is not None:
                relisted()
            w = kubernetes.watch.Watch()
            extra = {"resource_version": version} if version else {}
            try:
                for event in w.stream(lister, self.namespace, timeout_seconds=5,
                                      _request_timeout=10, **extra, **params):
                    on(event["type"], event["object"])
                    version = w.resource_version
                    if self._stop.is_set():
                        break
            except kubernetes.client.ApiException as exc:
                if exc.status == 410:
                    version = None
                self.watch_errors.append(f"{exc.status} {exc.reason}")
                time.sleep(0.05)
            except Exception as exc:  # a connection reset: go on from the last version
                self.watch_errors.append(repr(exc))
                time.sleep(0.05)

    def _pods(self) -> None:
        last: dict[str, str | None] = {}

        def on(kind: str, pod: Any) -> None:
            role = None if kind == "DELETED" else (pod.metadata.labels or {}).get(self.role_label)
            if last.get(pod.metadata.name, "?") != role:
                last[pod.metadata.name] = role
                self.roles.append((time.monotonic(), pod.metadata.name, role))

        self._stream(kubernetes.client.CoreV1Api(self.api).list_namespaced_pod, on)

    def _leases(self) -> None:
        last: dict[str, tuple[str, int]] = {}

        def on(kind: str, lease: Any) -> None:
            now = time.monotonic()  # one time for both lists: a new term's first sighting
            self.renewals.append((now, lease.metadata.name))
            holder = "" if kind == "DELETED" else (lease.spec.holder_identity or "")
            # A new term of the same holder (it re-took its Lease) counts as a change too.
            term = (holder, 0 if kind == "DELETED" else lease.spec.lease_transitions or 0)
            if last.get(lease.metadata.name) != term:
                last[lease.metadata.name] = term
                self.holders.append((now, lease.metadata.name, holder))

        self._stream(kubernetes.client.CoordinationV1Api(self.api).list_namespaced_lease, on)

    def _slices(self, service: str) -> None:
        slices: dict[str, list[Any]] = {}

        def on(kind: str, eps: Any) -> None:
            self.slice_changes.append(time.monotonic())
            if (eps.metadata.labels or {}).get("kubernetes.io/service-name") != service:
                return
            slices[eps.metadata.name] = [] if kind == "DELETED" else list(eps.endpoints or [])
            every = [e for endpoints in slices.values() for e in endpoints]

            def pods(keep: Callable[[Any], bool]) -> tuple[str, ...]:
                return tuple(sorted(e.target_ref.name for e in every
                                    if e.target_ref is not None and keep(e.conditions)))

            state = Endpoints(time.monotonic(), pods(lambda c: True),
                              pods(lambda c: c is not None and c.ready is not False),
                              pods(lambda c: c is not None and c.serving is not False))
            last = self.endpoints[-1] if self.endpoints else None
            if last is None or (last.listed, last.ready, last.serving) != (
                    state.listed, state.ready, state.serving):
                self.endpoints.append(state)

        self._stream(kubernetes.client.DiscoveryV1Api(self.api).list_namespaced_endpoint_slice,
                     on, slices.clear)

    def holder_at(self, lease: str, when: float) -> str | None:
        """Who held `lease` as last seen at or before `when` (monotonic): the one "who led
        when" of the tests, the demo and the benchmarks."""
        seen = [h for t, name, h in list(self.holders) if name == lease and t <= when]
        return seen[-1] if seen else None

    def current_holder(self, lease: str) -> str | None:
        """Who holds `lease` as last seen (None: never seen)."""
        return self.holder_at(lease, float("inf"))

    def holder_changes(self, lease: str, since: float = float("-inf")) -> list[tuple[float, str]]:
        """Each change of `lease`'s holder seen at or after `since`: (when, the new holder;
        "" when it was released)."""
        return [(t, h) for t, name, h in list(self.holders) if name == lease and t >= since]

    def next_holder(self, lease: str, since: float, other_than: str) -> tuple[float, str] | None:
        """The first holder of `lease` seen at or after `since` that is not `other_than`
        (nor nobody): when, and who; None while there is none."""
        return next(((t, h) for t, h in self.holder_changes(lease, since)
                     if h not in ("", other_than)), None)

    def holders_during(self, lease: str, start: float, end: float) -> set[str | None]:
        """Everyone who held `lease` at some moment of [`start`, `end`] (a request in
        flight, say)."""
        return {self.holder_at(lease, start)} | {
            h for t, name, h in list(self.holders) if name == lease and start <= t <= end}

    def not_from_holder(self, lease: str, answers: Iterable[Answer]) -> list[Answer]:
        """The answers from a pod that held `lease` at no moment their request was in flight
        (between its send and its answer); failed requests are no answer."""
        return [a for a in answers if a.body is not None
                and a.body not in self.holders_during(lease, a.sent, a.done)]

    def endpoints_at(self, when: float) -> Endpoints | None:
        """The Service's endpoints as last seen at or before `when`."""
        seen = [e for e in list(self.endpoints) if e.seen <= when]
        return seen[-1] if seen else None

    def never_two_endpoints(self) -> None:
        """No state of the Service's endpoints ever listed two pods."""
        for state in list(self.endpoints):
            assert len(state.listed) <= 1, f"two endpoints at {state.seen:.3f}: {state.listed}"

    def current(self) -> dict[str, str | None]:
        now: dict[str, str | None] = {}
        for _, pod, role in list(self.roles):
            now[pod] = role
        return now

    def wait(self, predicate: Callable[[dict[str, str | None]], bool], within: float,
             what: str) -> float:
        """`eventually` on the current roles; the seconds it took."""
        start = time.monotonic()
        eventually(lambda: predicate(self.current()), within, f"{what}; roles now "
                   f"{self.current()}", every=0.01)
        return time.monotonic() - start

    def when_role(self, pod: str, role: str, after: float) -> float:
        return next(t for t, p, r in self.roles if p == pod and r == role and t >= after)

    def when_holder(self, lease: str, predicate: Callable[[str], bool], after: float) -> float:
        return next(t for t, name, h in self.holders
                    if name == lease and predicate(h) and t >= after)

    def last_renewal(self, lease: str, before: float) -> float:
        return max(t for t, name in self.renewals if name == lease and t <= before)

    def never_two_leaders(self) -> None:
        state: dict[str, str | None] = {}
        for t, pod, role in list(self.roles):
            state[pod] = role
            leaders = [p for p, r in state.items() if r == "leader"]
            assert len(leaders) <= 1, f"two leaders at {t:.3f}: {leaders}"

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
