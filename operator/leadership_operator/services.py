"""The Services that opted into a leader endpoint: a cache written only by what reads the
cluster (the Service watch, and the listing before the first decision).

A Service joins the route of election ``<lease>`` of its own namespace with the label
``<prefix>/election: <lease>`` (the pods' label). The operator then writes its one
EndpointSlice (`routes.leader_slice`): the leader pod's address, and nothing else. Such a
Service must have no selector: with one, the EndpointSlice controller writes slices for it
too, and the route would list every selected pod (the Service is reported, and left alone).

`Services` keeps what the slice needs of each (`LeaderService`: its ports, its address
family, its uid for the owner reference), never the object; each event answers what it
changed (`ServiceChange`): the elections touched, a Service that left the route (its slice
must go), or an election label that names no possible Lease (to report).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from leadership import toolkit

from . import text
from .contract import Labels
from .pods import PROTOCOLS, Key, json_list, json_object

#: ports kept of a Service (Kubernetes allows far fewer in practice; a bound all the same).
MAX_SERVICE_PORTS = 64


@dataclass(frozen=True)
class ServicePort:
    """One port of the Service: what its EndpointSlice port is resolved from."""

    name: str
    port: int
    #: ``targetPort``: a number, or the name of a container port of the pod.
    target: int | str
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True)
class LeaderService:
    """A Service that opted into its election's leader endpoint, as last seen."""

    namespace: str
    name: str
    uid: str
    #: the Lease it follows (a valid name), or None (its label names no possible Lease).
    election: str | None
    ports: tuple[ServicePort, ...] = ()
    #: the address family of its EndpointSlice: its first ``ipFamilies``, else IPv4.
    family: str = "IPv4"
    #: it has a selector (then the EndpointSlice controller serves it, not the operator).
    has_selector: bool = False
    #: the election label as found.
    raw_election: str = ""

    @property
    def key(self) -> Key | None:
        return (self.namespace, self.election) if self.election else None

    @property
    def ref(self) -> dict[str, str]:
        """This Service as an Event's involvedObject."""
        return {"apiVersion": "v1", "kind": "Service", "namespace": self.namespace,
                "name": self.name, "uid": self.uid}


def _port(entry: object) -> ServicePort | None:
    if not isinstance(entry, dict):
        return None
    port, target = entry.get("port"), entry.get("targetPort", entry.get("port"))
    protocol = entry.get("protocol") or "TCP"
    name, app = entry.get("name") or "", entry.get("appProtocol")
    if (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536
            or protocol not in PROTOCOLS or not isinstance(name, str) or len(name) > 63):
        return None
    if isinstance(target, bool) or not ((isinstance(target, int) and 0 < target < 65536)
                                        or (isinstance(target, str) and 0 < len(target) <= 15)):
        return None
    return ServicePort(name, port, target, protocol,
                       app if isinstance(app, str) and len(app) <= 253 else None)


def leader_service(labels: Labels, service: dict[str, Any]) -> LeaderService:
    """What the operator keeps of `service`."""
    meta, spec = json_object(service.get("metadata")), json_object(service.get("spec"))
    raw = json_object(meta.get("labels")).get(labels.election)
    ports = [p for p in map(_port, json_list(spec.get("ports"))[:MAX_SERVICE_PORTS])
             if p is not None]
    families = json_list(spec.get("ipFamilies"))
    family = families[0] if families and families[0] in ("IPv4", "IPv6") else "IPv4"
    return LeaderService(
        namespace=str(meta.get("namespace")), name=str(meta.get("name")),
        uid=str(meta.get("uid") or ""),
        election=raw if toolkit.is_dns_subdomain(raw) else None, ports=tuple(ports),
        family=family, has_selector=bool(spec.get("selector")),
        raw_election=text.cut(raw, text.QUOTE, escape=True) if isinstance(raw, str) else "")


@dataclass
class ServiceChange:
    """What one Service event (or listing) changed."""

    #: the elections whose route it touches, now or before.
    touched: list[Key] = field(default_factory=list)
    #: Services that left the route (deleted, or their label removed): their slice goes.
    retired: list[LeaderService] = field(default_factory=list)
    #: Services whose election label names no possible Lease.
    bad: list[LeaderService] = field(default_factory=list)


class Services:
    """The opted-in Services by election; see the module's doc."""

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self._by_name: dict[tuple[str, str], LeaderService] = {}
        self._by_election: dict[Key, dict[str, LeaderService]] = {}

    def service_event(self, kind: str, body: dict[str, Any]) -> ServiceChange:
        """Take in an event of the Service watch (which selects the election label,
        server-side: a Service whose label is removed arrives as DELETED)."""
        service = leader_service(self.labels, body)
        change = ServiceChange()
        old = self._by_name.pop((service.namespace, service.name), None)
        if old is not None and old.key is not None:
            change.touched.append(old.key)
            routes = self._by_election.get(old.key, {})
            routes.pop(old.name, None)
            if not routes:
                self._by_election.pop(old.key, None)
        if kind == "DELETED":
            if old is not None:
                change.retired.append(old)
            return change
        if service.key is None:
            change.bad.append(service)
            if old is not None:
                change.retired.append(old)
            return change
        self._by_name[(service.namespace, service.name)] = service
        self._by_election.setdefault(service.key, {})[service.name] = service
        if service.key not in change.touched:
            change.touched.append(service.key)
        return change

    def listed(self, namespace: str | None, bodies: Iterable[dict[str, Any]]) -> ServiceChange:
        """Take in a listing of `namespace`'s opted-in Services (None: every namespace)."""
        change = ServiceChange()
        seen = set()
        for body in bodies:
            one = self.service_event("ADDED", body)
            change.touched += [k for k in one.touched if k not in change.touched]
            change.bad += one.bad
            change.retired += one.retired
            meta = body.get("metadata") or {}
            seen.add((str(meta.get("namespace")), str(meta.get("name"))))
        for name, service in list(self._by_name.items()):
            if name not in seen and namespace in (None, service.namespace):
                gone = self.service_event("DELETED", {"metadata": {
                    "namespace": service.namespace, "name": service.name}})
                change.touched += [k for k in gone.touched if k not in change.touched]
                change.retired += gone.retired
        return change

    def of(self, key: Key) -> list[LeaderService]:
        """The Services that route to election `key`'s leader, by name."""
        return sorted(self._by_election.get(key, {}).values(), key=lambda s: s.name)

    def elections(self) -> list[Key]:
        return sorted(self._by_election)

    def get(self, namespace: str, name: str) -> LeaderService | None:
        return self._by_name.get((namespace, name))

    def __len__(self) -> int:
        return len(self._by_name)
