"""Turn verdicts into label writes, Events and deletions, in a safe order.

- The old leader's label goes before the new one is given, each write awaited: at no instant
  does the API server see two `leader` labels in one election.
- Right before every write the reconciler asks `is_active()` (this replica holds the
  operator's own Lease); a standby, or a replica that just lost it, writes nothing.
- An expiry is acted upon only after a fresh read of the Lease agrees with the watch
  (`State.confirm`); a disagreement restarts the shared Lease watch.
- Events are posted on transitions (a new holder, an expiry) and once per new problem, and
  repeated ones are aggregated (count and lastTimestamp), never one per renewal.
"""

from __future__ import annotations

import asyncio
import datetime
import heapq
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from leadership import Clock

from .contract import Labels, Role
from .decide import Verdict
from .metrics import OperatorMetrics
from .state import Key, PodInfo, State

log = logging.getLogger("leadership.operator")
COMPONENT = "leadership-operator"
#: elections reconciled at once (each one's writes stay in order).
CONCURRENCY = 32


def _now_text() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(RuntimeError):
    """The API server answered a request with an error status."""


class Kube:
    """The few API calls the operator makes, raw JSON through a kubernetes.aio ApiClient."""

    def __init__(self, api: Any) -> None:
        self.api = api

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json",
                      query: list[tuple[str, str]] | None = None) -> Any:
        serialized = self.api.param_serialize(
            method=method, resource_path=path, query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body, auth_settings=["BearerToken"])
        if asyncio.iscoroutine(serialized):
            serialized = await serialized
        rest = await self.api.call_api(*serialized, _preload_content=False,
                                       _request_timeout=10)
        response = rest.response
        try:
            data = await response.read()
        finally:
            response.release()
        if response.status == 404:
            return None
        if response.status >= 400:
            raise ApiError(f"{method} {path}: HTTP {response.status}: {data[:300]!r}")
        return json.loads(data) if data else None

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self.request(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")
        return result

    async def label_pod(self, namespace: str, name: str, key: str, value: str | None) -> None:
        await self.request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}",
                           {"metadata": {"labels": {key: value}}},
                           "application/merge-patch+json")

    async def list_pods(self, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        result = await self.request("GET", path, query=[("labelSelector", selector)])
        return list((result or {}).get("items") or [])

    async def delete_pod(self, namespace: str, name: str) -> None:
        await self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")

    async def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", f"/api/v1/namespaces/{namespace}/events", body)
        return result

    async def patch_event(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        await self.request("PATCH", f"/api/v1/namespaces/{namespace}/events/{name}", body,
                           "application/merge-patch+json")


class Events:
    """Posts Events, aggregating repeats of the same (object, reason, message)."""

    def __init__(self, kube: Kube, identity: str) -> None:
        self.kube, self.identity = kube, identity
        self._posted: dict[tuple[str, str, str, str], tuple[str, int]] = {}

    async def post(self, obj: dict[str, str], kind: str, reason: str, message: str) -> None:
        namespace = obj["namespace"]
        key = (namespace, obj.get("uid") or obj["name"], reason, message)
        try:
            if key in self._posted:
                name, count = self._posted[key]
                await self.kube.patch_event(namespace, name, {
                    "count": count + 1, "lastTimestamp": _now_text()})
                self._posted[key] = (name, count + 1)
                return
            created = await self.kube.create_event(namespace, {
                "metadata": {"generateName": f"{obj['name']}.", "namespace": namespace},
                "involvedObject": obj, "reason": reason, "message": message, "type": kind,
                "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
                "reportingInstance": self.identity, "count": 1,
                "firstTimestamp": _now_text(), "lastTimestamp": _now_text()})
            self._posted[key] = (created["metadata"]["name"], 1)
        except Exception as exc:  # an Event is worth a log line, never a crash
            log.warning("could not post event %s on %s/%s: %s", reason, namespace,
                        obj["name"], exc)


def _lease_ref(key: Key, uid: str = "") -> dict[str, str]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "namespace": key[0],
            "name": key[1], "uid": uid}


def _pod_ref(pod: PodInfo) -> dict[str, str]:
    return {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace, "name": pod.name,
            "uid": pod.uid}


class Reconciler:
    def __init__(self, state: State, kube: Kube, events: Events, labels: Labels,
                 clock: Clock, metrics: OperatorMetrics, is_active: Callable[[], bool],
                 suspect_lease_watch: Callable[[str], None]) -> None:
        self.state, self.kube, self.events, self.labels = state, kube, events, labels
        self.clock, self.metrics, self.is_active = clock, metrics, is_active
        self.suspect_lease_watch = suspect_lease_watch
        self.wake = asyncio.Event()
        self._timers: list[tuple[float, Key]] = []
        # Elections are reconciled concurrently (bounded); one election's writes stay in
        # order, because an election is never reconciled twice at once.
        self._gate = asyncio.Semaphore(CONCURRENCY)
        self._running: dict[Key, asyncio.Task[None]] = {}
        self._again: set[Key] = set()
        self._reported: dict[Key, set[tuple[str, str]]] = {}  # problems logged
        self._posted: dict[Key, set[tuple[str, str]]] = {}  # problems posted as Events
        self._last_holder: dict[Key, tuple[str, str]] = {}  # (state, holder) last reported

    def poke(self) -> None:
        self.wake.set()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Reconcile dirty elections and due expiries until cancelled. Starts only once
        `ready` is set (every Lease listed): deciding before that would label members of
        Leases not yet seen as followers, a flap on every restart."""
        if ready is not None:
            await ready.wait()
        while True:
            now = self.clock.now()
            while self._timers and self._timers[0][0] <= now:
                _, key = heapq.heappop(self._timers)
                self.state.mark(key)
            for key in self.state.take_dirty():
                if key in self._running:
                    self._again.add(key)  # after the one in flight
                else:
                    self._running[key] = asyncio.create_task(self._one(key))
            await self._strays()
            self.wake.clear()
            timeout = self._timers[0][0] - self.clock.now() if self._timers else None
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _one(self, key: Key) -> None:
        try:
            async with self._gate:
                await self.reconcile(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, (TimeoutError, OSError, aiohttp.ClientError, ApiError)):
                # The API server is slow, unreachable or refusing: expected in operation,
                # and retried; a warning with the reason, not a traceback.
                log.warning("reconciling %s/%s failed: %s; retrying in 1s", *key,
                            str(exc) or type(exc).__name__)
            else:
                log.exception("reconciling %s/%s failed; retrying in 1s", *key)
            heapq.heappush(self._timers, (self.clock.now() + 1, key))
            self.poke()
        finally:
            self._running.pop(key, None)
            if key in self._again:
                self._again.discard(key)
                self.state.mark(key)
                self.poke()

    async def reconcile(self, key: Key) -> None:
        if not self.state.members(key):
            self._forget(key)  # a Lease no pod is a member of is no election of ours
            return
        verdict = self.state.verdict(key, self.clock.now())
        if verdict.needs_confirmation:
            read_from = self.state.versions.get(key)
            fresh = await self.kube.read_lease(*key)
            if not self.state.confirm(key, fresh, read_from):
                self.suspect_lease_watch(key[0])  # lagging, or dead: it will tell
            verdict = self.state.verdict(key, self.clock.now())
        if verdict.expires_at is not None and verdict.expires_at > self.clock.now():
            heapq.heappush(self._timers, (verdict.expires_at, key))
        # Labels first: a flip is what the Service waits for, and each Event is one more API
        # write; the Events then also describe labels that are already there.
        try:
            if self.is_active():
                await self._apply(key, verdict)
        finally:
            await self._report(key, verdict)

    def _forget(self, key: Key) -> None:
        before = self._last_holder.pop(key, None)
        if before is not None:
            self.metrics.elections.labels(before[0]).dec()
        self._reported.pop(key, None)
        self._posted.pop(key, None)

    async def _report(self, key: Key, verdict: Verdict) -> None:
        tracker = self.state.trackers.get(key)
        uid = ""
        if tracker and tracker.current and tracker.current.lease:
            uid = tracker.current.lease.get("metadata", {}).get("uid", "")
        problems = {(p.reason, p.message) for p in verdict.problems}
        for reason, message in sorted(problems - self._reported.get(key, set())):
            log.warning("lease %s/%s: %s: %s", key[0], key[1], reason, message)
        self._reported[key] = problems
        if self.is_active():  # a standby logs; the active replica also posts, once
            for reason, message in sorted(problems - self._posted.get(key, set())):
                await self.events.post(_lease_ref(key, uid), "Warning", reason, message)
            self._posted[key] = problems
        now = (verdict.state, verdict.holder)
        before = self._last_holder.get(key)
        if before == now:
            return
        self._last_holder[key] = now
        if before is None or before[0] != verdict.state:
            if before is not None:
                self.metrics.elections.labels(before[0]).dec()
            self.metrics.elections.labels(verdict.state).inc()
        self.metrics.transitions.labels(verdict.state).inc()
        if not self.is_active():
            return
        if verdict.state == "leading" and verdict.holder_pod:
            await self.events.post(_lease_ref(key, uid), "Normal", "LeaderElected",
                                   f"{verdict.holder_pod} leads (holder {verdict.holder})")
        elif verdict.state == "expired" and verdict.holder_pod:
            self.metrics.expiries.inc()
            message = (f"the lease held by {verdict.holder} expired: no renewal seen for its "
                       f"duration; {verdict.holder_pod} is labelled stale")
            await self.events.post(_lease_ref(key, uid), "Warning", "LeaseExpired", message)
            pod = next((p for p in self.state.members(key) if p.name == verdict.holder_pod),
                       None)
            if pod is not None:
                await self.events.post(_pod_ref(pod), "Warning", "LeaseExpired", message)

    async def _write(self, pod: PodInfo, role: Role | None) -> bool:
        if not self.is_active():
            return False
        await self.kube.label_pod(pod.namespace, pod.name, self.labels.role,
                                  role.value if role else None)
        pod.role = role.value if role else None
        self.metrics.label_writes.inc()
        return True

    async def _apply(self, key: Key, verdict: Verdict) -> None:
        members = {p.name: p for p in self.state.members(key)}
        wrong = [(members[n], r) for n, r in verdict.roles.items()
                 if n in members and members[n].role != r.value]
        # Take `leader` away first, awaited, then every other change, the new leader last.
        first = [(p, r) for p, r in wrong if p.role == Role.LEADER.value]
        last = [(p, r) for p, r in wrong if r is Role.LEADER]
        middle = [(p, r) for p, r in wrong if (p, r) not in first and (p, r) not in last]
        for pod, role in [*first, *middle, *last]:
            if not await self._write(pod, role):
                return
            if role is Role.LEADER and key in self.state.changed_at:
                self.metrics.label_latency.observe(
                    self.clock.now() - self.state.changed_at.pop(key))
        for name in verdict.delete:
            doomed = members.get(name)
            if doomed is not None and self.is_active():
                log.warning("deleting %s/%s: its lease expired under it (opted in)", *key)
                await self.events.post(_pod_ref(doomed), "Warning", "DeletingStalePod",
                                       f"{name} held {key[1]} when it expired; deleting "
                                       f"it as its {self.labels.on_expiry} annotation asks")
                await self.kube.delete_pod(doomed.namespace, doomed.name)

    async def _strays(self) -> None:
        logged = self._reported.setdefault(("", ""), set())
        posted = self._posted.setdefault(("", ""), set())
        for pod in list(self.state.strays()):
            if pod.raw_election is not None:
                problem = ("BadElectionLabel", pod.uid)
                reason = (f"election label {pod.raw_election!r} is not a valid Lease name; "
                          "the pod is in no election")
                if problem not in logged:
                    logged.add(problem)
                    log.warning("pod %s/%s: %s", pod.namespace, pod.name, reason)
                if problem not in posted and self.is_active():
                    posted.add(problem)
                    await self.events.post(_pod_ref(pod), "Warning", "BadElectionLabel", reason)
            if pod.role is not None and not await self._write(pod, None):
                return
