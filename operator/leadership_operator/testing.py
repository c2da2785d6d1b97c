"""What the operator's unit tests run on: `FakeKube`, the operator's `Kube` in memory.

With `leadership.testing.ManualClock` it runs the whole operator inside (the Lease cache,
the members, the reconciler, the Events) exactly and fast: no API server, no sleeping.

`FakeKube` keeps Leases (each write gives a new resourceVersion and an event to every open
watch), pods (the operator's own writes to them reach the pod watch, `watch_pods`, a turn
of the loop later, as a real watch is behind its server; `hold_pods` holds them back longer)
and Events, records every write it is asked for in `writes`, in order, and can
be made to misbehave like an API server: fail the next calls of a method (`fail_next`), end
every open watch (`end_watches`, as a server does at its timeout), forget old versions (a
410 for a watch from before `compact()`), or stop delivering to open watches while keeping
them open (`silence`, a half-open connection). Reads never lie: `read_lease` answers the
truth even while watches are silent.

Not for production, and not a model of the API server beyond what the operator asks of it.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import leadership
from leadership import toolkit

JSONDict = dict[str, Any]
_END = object()


@dataclass
class _Watch:
    namespace: str | None
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    silenced: bool = False


class FakeKube:
    """The operator's `Kube`, in memory (see the module's doc)."""

    def __init__(self, clock: leadership.Clock) -> None:
        self.clock = clock
        self.leases: dict[tuple[str, str], JSONDict] = {}
        self.pods: dict[tuple[str, str], JSONDict] = {}
        self.events: dict[tuple[str, str], JSONDict] = {}
        self.services: dict[tuple[str, str], JSONDict] = {}
        self.slices: dict[tuple[str, str], JSONDict] = {}
        #: every write asked for, in order: ("label", ns, pod, value), ("event", ns, reason),
        #: ("patch-event", ns, name), ("delete", ns, pod), ("slice", ns, name, addresses),
        #: ("delete-slice", ns, name).
        self.writes: list[tuple[Any, ...]] = []
        self.reads = 0  # read_lease calls
        #: seconds (on the clock) each read_lease takes: a slow API server.
        self.read_seconds = 0.0
        self.lists = 0  # list_leases calls
        self._version = itertools.count(1)
        self._history: deque[tuple[int, str, JSONDict]] = deque()
        self._compacted = 0
        self._watches: list[_Watch] = []
        self._failures: dict[str, list[BaseException]] = {}
        self._uids = itertools.count(1)
        #: the namespaces that exist; None: the question is forbidden.
        self.namespaces: set[str] | None = None
        #: the field manager of label writes, as `ApiKube`'s.
        self.field_manager = ""
        self._pod_watchers: list[Callable[[str, JSONDict], None]] = []
        self._held: list[tuple[str, JSONDict]] | None = None
        #: the label the pod watch selects on (None: every pod), as the operator's does.
        self.election_key: str | None = None

    # --- setting the scene -----------------------------------------------------------------

    def put_lease(self, namespace: str, name: str, holder: str = "", *, duration: int = 15,
                  transitions: int = 0) -> JSONDict:
        """Create or write the Lease (a holder's renewal, say); watches see it."""
        now = toolkit.format_microtime(self.clock.wall())
        existing = self.leases.get((namespace, name))
        lease = copy.deepcopy(existing) if existing else {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"namespace": namespace, "name": name, "uid": f"lease-{name}"}}
        lease["spec"] = {"holderIdentity": holder, "leaseDurationSeconds": duration,
                         "acquireTime": now, "renewTime": now, "leaseTransitions": transitions}
        return self._store("MODIFIED" if existing else "ADDED", lease)

    def touch_lease(self, namespace: str, name: str) -> JSONDict:
        """A write that leaves the election record alone (a label added to the Lease): a new
        resourceVersion, the same spec; watches see it."""
        lease = copy.deepcopy(self.leases[(namespace, name)])
        labels = lease["metadata"].setdefault("labels", {})
        labels["touched"] = str(int(labels.get("touched", "0")) + 1)
        return self._store("MODIFIED", lease)

    def delete_lease(self, namespace: str, name: str) -> None:
        lease = self.leases.pop((namespace, name))
        self._publish("DELETED", lease)

    def put_pod(self, namespace: str, name: str, labels: dict[str, str], *,
                annotations: dict[str, str] | None = None, writer: str = "kubectl",
                spec: JSONDict | None = None, status: JSONDict | None = None) -> JSONDict:
        """Create or update a pod as field manager `writer` (which then owns its labels);
        `spec` and `status`, when given, replace the pod's."""
        pod = self.pods.get((namespace, name)) or {"metadata": {
            "namespace": namespace, "name": name, "uid": f"uid-{next(self._uids)}"}}
        if spec is not None:
            pod["spec"] = copy.deepcopy(spec)
        if status is not None:
            pod["status"] = copy.deepcopy(status)
        pod["metadata"]["labels"] = dict(labels)
        pod["metadata"]["annotations"] = dict(annotations or {})
        pod["metadata"]["managedFields"] = [{"manager": writer, "operation": "Update",
                                             "fieldsV1": {"f:metadata": {"f:labels": {
                                                 f"f:{k}": {} for k in labels}}}}]
        pod["metadata"]["resourceVersion"] = str(next(self._version))
        self.pods[(namespace, name)] = pod
        return copy.deepcopy(pod)

    def put_service(self, namespace: str, name: str, labels: dict[str, str],
                    ports: list[JSONDict] | None = None, *,
                    selector: dict[str, str] | None = None) -> JSONDict:
        """Create or update a Service (the operator learns of it by `service_event`)."""
        service = self.services.get((namespace, name)) or {"metadata": {
            "namespace": namespace, "name": name, "uid": f"svc-uid-{next(self._uids)}"}}
        service["metadata"]["labels"] = dict(labels)
        service["spec"] = {"ports": ports if ports is not None else [
            {"name": "http", "port": 80, "targetPort": "http"}],
            **({"selector": selector} if selector else {})}
        self.services[(namespace, name)] = service
        return copy.deepcopy(service)

    def addresses(self, namespace: str, name: str) -> list[str] | None:
        """The addresses the EndpointSlice lists (None: there is no such slice)."""
        found = self.slices.get((namespace, name))
        if found is None:
            return None
        return [a for e in found.get("endpoints") or [] for a in e["addresses"]]

    def watch_pods(self, deliver: Callable[[str, JSONDict], None]) -> None:
        """Call `deliver(kind, pod)` with every change the operator makes to a pod (a label
        write, a deletion), a turn of the loop after it, as the pod watch would."""
        self._pod_watchers.append(deliver)

    def hold_pods(self) -> None:
        """Hold back the pod watch's events (a watch behind its server) until
        `release_pods`."""
        if self._held is None:
            self._held = []

    def release_pods(self) -> None:
        held, self._held = self._held or [], None
        for kind, pod in held:
            self._deliver(kind, pod)

    def role(self, namespace: str, name: str, key: str) -> str | None:
        return (self.pods[(namespace, name)]["metadata"].get("labels") or {}).get(key)

    def fail_next(self, method: str, error: BaseException, times: int = 1) -> None:
        """The next `times` calls of `method` (e.g. "label_pod") raise `error`."""
        self._failures.setdefault(method, []).extend([error] * times)

    def end_watches(self) -> None:
        """The server ends every open watch (as at its timeout)."""
        for watch in self._watches:
            watch.queue.put_nowait(_END)

    def silence(self) -> None:
        """Open watches stay open and deliver nothing more (a half-open connection)."""
        for watch in self._watches:
            watch.silenced = True

    def bookmark(self) -> None:
        """Every open, unsilenced watch gets a bookmark at the current version."""
        version = str(self._current())
        for watch in self._watches:
            if not watch.silenced:
                watch.queue.put_nowait(toolkit.WatchEvent(
                    "BOOKMARK", {"metadata": {"resourceVersion": version}}))

    def compact(self) -> None:
        """Forget the history: a watch from any version seen so far gets a 410."""
        self._compacted = self._current()
        self._history.clear()

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    # --- internals -------------------------------------------------------------------------

    def _pod_changed(self, kind: str, pod: JSONDict) -> None:
        event = (kind, copy.deepcopy(pod))
        if self._held is not None:
            self._held.append(event)
        elif self._pod_watchers:
            asyncio.get_running_loop().call_soon(self._deliver, *event)

    def _deliver(self, kind: str, pod: JSONDict) -> None:
        for deliver in self._pod_watchers:
            deliver(kind, copy.deepcopy(pod))

    def _current(self) -> int:
        return self._history[-1][0] if self._history else self._compacted

    def _store(self, kind: str, lease: JSONDict) -> JSONDict:
        meta = lease["metadata"]
        meta["resourceVersion"] = str(next(self._version))
        self.leases[(meta["namespace"], meta["name"])] = lease
        self._publish(kind, lease)
        return copy.deepcopy(lease)

    def _publish(self, kind: str, lease: JSONDict) -> None:
        version = int(lease["metadata"]["resourceVersion"]) if kind != "DELETED" else next(
            self._version)
        self._history.append((version, kind, copy.deepcopy(lease)))
        for watch in self._watches:
            if not watch.silenced and watch.namespace in (None, lease["metadata"]["namespace"]):
                watch.queue.put_nowait(toolkit.WatchEvent(kind, copy.deepcopy(lease)))  # type: ignore[arg-type]

    async def _maybe_fail(self, method: str) -> None:
        await asyncio.sleep(0)  # every call is a turn of the loop, as a request would be
        failures = self._failures.get(method)
        if failures:
            raise failures.pop(0)

    # --- Kube ------------------------------------------------------------------------------

    async def list_leases(self, namespace: str | None) -> tuple[list[JSONDict], str]:
        await self._maybe_fail("list_leases")
        self.lists += 1
        items = [copy.deepcopy(v) for (ns, _), v in sorted(self.leases.items())
                 if namespace in (None, ns)]
        return items, str(self._current())

    async def watch_leases(self, namespace: str | None,
                           version: str) -> AsyncIterator[toolkit.WatchEvent]:
        await self._maybe_fail("watch_leases")
        since = int(version or 0)
        if since < self._compacted:
            raise leadership.WatchExpiredError(f"too old resource version: {since}", status=410)
        watch = _Watch(namespace)
        for v, kind, lease in self._history:
            if v > since and namespace in (None, lease["metadata"]["namespace"]):
                watch.queue.put_nowait(toolkit.WatchEvent(kind, copy.deepcopy(lease)))  # type: ignore[arg-type]
        self._watches.append(watch)
        try:
            while True:
                item = await watch.queue.get()
                if item is _END:
                    return
                yield item
        finally:
            self._watches.remove(watch)

    async def read_lease(self, namespace: str, name: str) -> JSONDict | None:
        await self._maybe_fail("read_lease")
        self.reads += 1
        if self.read_seconds:
            await self.clock.sleep_until(self.clock.now() + self.read_seconds)
        lease = self.leases.get((namespace, name))
        return copy.deepcopy(lease) if lease else None

    async def list_pods(self, namespace: str | None, selector: str) -> list[JSONDict]:
        await self._maybe_fail("list_pods")

        def selected(labels: dict[str, str]) -> bool:  # "key" and "!key" terms, as the server
            return all((term[1:] not in labels) if term.startswith("!") else (term in labels)
                       for term in selector.split(","))

        return [copy.deepcopy(p) for (ns, _), p in sorted(self.pods.items())
                if namespace in (None, ns) and selected(p["metadata"].get("labels") or {})]

    async def find_pod(self, namespace: str, name: str) -> JSONDict | None:
        await self._maybe_fail("find_pod")
        pod = self.pods.get((namespace, name))
        return copy.deepcopy(pod) if pod is not None else None

    async def label_pod(self, namespace: str, name: str, key: str, value: str | None) -> str:
        await self._maybe_fail("label_pod")
        if (namespace, name) not in self.pods:
            raise leadership.NotFoundError(f"pods {name} not found", status=404)
        self.writes.append(("label", namespace, name, value))
        meta = self.pods[(namespace, name)]["metadata"]
        labels = meta.setdefault("labels", {})
        if value is None:
            labels.pop(key, None)
        else:
            labels[key] = value
        fields = [e for e in meta.get("managedFields") or [] if e["manager"] != self.field_manager]
        for entry in fields:  # the write takes the label over from its former owner
            entry["fieldsV1"]["f:metadata"]["f:labels"].pop(f"f:{key}", None)
        if value is not None:
            fields.append({"manager": self.field_manager, "operation": "Update",
                           "fieldsV1": {"f:metadata": {"f:labels": {f"f:{key}": {}}}}})
        meta["managedFields"] = fields
        meta["resourceVersion"] = str(next(self._version))
        if self.election_key is None or self.election_key in labels:
            self._pod_changed("MODIFIED", self.pods[(namespace, name)])
        return str(meta["resourceVersion"])

    async def delete_pod(self, namespace: str, name: str, uid: str,
                         resource_version: str) -> None:
        await self._maybe_fail("delete_pod")
        pod = self.pods.get((namespace, name))
        if pod is None:
            raise leadership.NotFoundError(f"pods {name} not found", status=404)
        if pod["metadata"]["uid"] != uid or (resource_version and resource_version != pod[
                "metadata"].get("resourceVersion", resource_version)):
            raise leadership.ConflictError(f"precondition failed: uid {uid}, resourceVersion "
                                           f"{resource_version}", status=409)
        self.writes.append(("delete", namespace, name))
        self._pod_changed("DELETED", self.pods.pop((namespace, name)))

    async def list_services(self, namespace: str | None, selector: str) -> list[JSONDict]:
        await self._maybe_fail("list_services")
        return [copy.deepcopy(s) for (ns, _), s in sorted(self.services.items())
                if namespace in (None, ns) and selector in (s["metadata"].get("labels") or {})]

    async def apply_slice(self, namespace: str, body: JSONDict) -> None:
        await self._maybe_fail("apply_slice")
        name = body["metadata"]["name"]
        self.slices[(namespace, name)] = copy.deepcopy(body)
        self.writes.append(("slice", namespace, name, self.addresses(namespace, name)))

    async def list_slices(self, namespace: str | None) -> list[tuple[str, str, str]]:
        await self._maybe_fail("list_slices")
        return [(ns, name, s["metadata"]["labels"]["kubernetes.io/service-name"])
                for (ns, name), s in sorted(self.slices.items()) if namespace in (None, ns)
                and s["metadata"]["labels"].get("endpointslice.kubernetes.io/managed-by")
                == "leadership-operator"]

    async def delete_slice(self, namespace: str, name: str) -> None:
        await self._maybe_fail("delete_slice")
        self.slices.pop((namespace, name), None)
        self.writes.append(("delete-slice", namespace, name))

    async def create_event(self, namespace: str, body: JSONDict) -> JSONDict:
        await self._maybe_fail("create_event")
        name = f"{body['metadata']['generateName']}{len(self.events)}"
        event = {**copy.deepcopy(body), "metadata": {"namespace": namespace, "name": name}}
        self.events[(namespace, name)] = event
        self.writes.append(("event", namespace, body["reason"]))
        return copy.deepcopy(event)

    def server_now(self) -> datetime.datetime:
        return self.clock.wall()

    async def namespace_exists(self, namespace: str) -> bool | None:
        await self._maybe_fail("namespace_exists")
        if self.namespaces is None:
            return None  # as when RBAC does not allow the question
        return namespace in self.namespaces

    async def patch_event(self, namespace: str, name: str, body: JSONDict) -> None:
        await self._maybe_fail("patch_event")
        event = self.events.get((namespace, name))
        if event is None:
            raise leadership.NotFoundError(f"events {name} not found", status=404)
        event.update(copy.deepcopy(body))
        self.writes.append(("patch-event", namespace, name))
