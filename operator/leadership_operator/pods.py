"""The pods the operator follows: every member of an election, and the strays.

`Members` is a cache written only by what reads the cluster: the pod watch (`pod_event`, every
pod with an election label, the one kopf runs) and the listing of pods with a role label but
no election label (`listed`, at the start and at every resync), the strays no watch shows.
The reconciler reads it and never writes it: what it wrote itself, the cache shows when the
watch does (`ownwrites.OwnWrites` keeps it meanwhile). A pod is followed while it carries the
election label (a member or, with a label that is no Lease name, a stray to report) or a role
label (a stray in no election: its role label must go). `Members` keeps only what the
decision and the leader's EndpointSlice need (its `Address`), never the pod object, and
makes no request.

Each event answers what it changed (`PodChange`): the elections it touches, now or before; a
pod that left the watch with a role label (the reconciler looks it up); a role label written
by someone else (the pod's ``managedFields`` name the field manager that set the label last,
and one other than this operator's, another operator or a hand edit, is reported).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from leadership import toolkit

from . import text
from .contract import Labels

#: (namespace, Lease name): one election.
Key = tuple[str, str]
#: container ports kept of a pod, at most (a pod's spec has no limit; a route needs few).
MAX_PORTS = 64
#: protocols a port may have (Kubernetes' own).
PROTOCOLS = ("TCP", "UDP", "SCTP")


def role_writer(meta: dict[str, Any], role_key: str) -> str:
    """The field manager that set the pod's role label last ("" when unknown): the one whose
    ``managedFields`` entry owns it (an update takes a field over from its former owner)."""
    for entry in meta.get("managedFields") or []:
        if not isinstance(entry, dict):
            continue
        fields = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:labels") or {}
        if isinstance(fields, dict) and f"f:{role_key}" in fields:
            return str(entry.get("manager") or "")
    return ""


def _annotation(value: object) -> str | None:
    """An annotation's value as kept: a str, cut to `text.QUOTE` (one that long is bad input
    already, and quoting it whole would only bloat the record)."""
    return text.cut(value, text.QUOTE, escape=True) if isinstance(value, str) else None


@dataclass(frozen=True)
class ContainerPort:
    """A port one of the pod's containers declares."""

    name: str
    number: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Address:
    """Where a pod is reached, as an EndpointSlice lists it (`routes.leader_slice`)."""

    #: its IPs (``status.podIPs``), each a valid address, IPv4 and IPv6 at most one each.
    ips: tuple[str, ...] = ()
    #: its containers' (and native sidecars') declared ports, at most `MAX_PORTS`.
    ports: tuple[ContainerPort, ...] = ()
    #: its Ready condition is True.
    ready: bool = False
    #: it is being deleted (``deletionTimestamp`` set).
    terminating: bool = False
    node_name: str = ""

    def ip(self, family: str) -> str | None:
        """Its IP of `family` ("IPv4" or "IPv6"), if it has one."""
        version = 6 if family == "IPv6" else 4
        return next((ip for ip in self.ips if ipaddress.ip_address(ip).version == version),
                    None)

    def port(self, name: str, protocol: str) -> int | None:
        """The number of its container port `name` for `protocol`, if declared."""
        return next((p.number for p in self.ports if p.name == name and p.protocol == protocol),
                    None)


def json_object(value: object) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (hostile input is no crash)."""
    return value if isinstance(value, dict) else {}


def json_list(value: object) -> list[Any]:
    """`value` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def _ips(status: dict[str, Any]) -> tuple[str, ...]:
    """The pod's valid IPs, at most one of each family, as the kubelet reports them."""
    listed = [entry.get("ip") for entry in json_list(status.get("podIPs"))
              if isinstance(entry, dict)][:2] or [status.get("podIP")]
    ips: dict[int, str] = {}
    for value in listed:
        if not isinstance(value, str):
            continue
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            continue
        ips.setdefault(ip.version, str(ip))
    return tuple(ips.values())


def _ports(spec: dict[str, Any]) -> tuple[ContainerPort, ...]:
    """The ports of the app containers and of the native sidecars (init containers that
    run beside them: the leadership sidecar's gate is one)."""
    ports: list[ContainerPort] = []
    sidecars = [c for c in json_list(spec.get("initContainers"))
                if isinstance(c, dict) and c.get("restartPolicy") == "Always"]
    for container in [*json_list(spec.get("containers")), *sidecars]:
        for port in json_list(container.get("ports")) if isinstance(container, dict) else []:
            if not isinstance(port, dict):
                continue
            number, name = port.get("containerPort"), port.get("name")
            protocol = port.get("protocol") or "TCP"
            if (isinstance(number, int) and not isinstance(number, bool)
                    and 0 < number < 65536 and protocol in PROTOCOLS):
                ports.append(ContainerPort(name if isinstance(name, str) else "", number,
                                           protocol))
            if len(ports) >= MAX_PORTS:
                return tuple(ports)
    return tuple(ports)


def address(pod: dict[str, Any]) -> Address:
    """What an EndpointSlice needs of `pod`."""
    meta, spec, status = (json_object(pod.get(k)) for k in ("metadata", "spec", "status"))
    ready = any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
                for c in json_list(status.get("conditions")))
    node = spec.get("nodeName")
    return Address(_ips(status), _ports(spec), ready,
                   meta.get("deletionTimestamp") is not None,
                   node if isinstance(node, str) and toolkit.is_dns_subdomain(node) else "")


@dataclass
class Member:
    """A pod the operator follows, as it last saw it."""

    name: str
    uid: str = ""
    #: its role label, or None.
    role: str | None = None
    #: whether it opted into deletion when its Lease expires under it.
    delete_on_expiry: bool = False
    namespace: str = ""
    #: the Lease it joined (a valid name), or None (then it is a stray).
    election: str | None = None
    #: the election label as found (to report one that names no possible Lease).
    raw_election: str | None = None
    #: the resourceVersion seen last: a deletion is made on this very version only.
    resource_version: str = ""
    #: the field manager that set its role label last ("" when unknown).
    role_writer: str = ""
    #: its renew-deadline annotation as found (judged by `decide.renew_deadline`), or None.
    renew_deadline: str | None = None
    #: where it is reached (its IPs, ports, readiness): for the leader's EndpointSlice.
    address: Address = field(default_factory=Address)

    @property
    def ref(self) -> dict[str, str]:
        """This pod as an Event's involvedObject."""
        return {"apiVersion": "v1", "kind": "Pod", "namespace": self.namespace,
                "name": self.name, "uid": self.uid}


@dataclass(frozen=True)
class Departed:
    """A pod with a role label that left the pod watch: deleted, or its election label
    removed (then it still exists, and its role label must go)."""

    uid: str
    namespace: str
    name: str


@dataclass
class PodChange:
    """What one pod event (or listing) changed."""

    #: the elections it touches, now or before (to look at again).
    touched: list[Key] = field(default_factory=list)
    #: the pods no longer followed (their uids).
    gone: list[str] = field(default_factory=list)
    #: a pod that left the watch with a role label (to look up).
    departed: Departed | None = None
    #: (the pod, the field manager that wrote its role label), when not this operator.
    foreign_write: tuple[Member, str] | None = None
    #: whether a stray is in it (to clean or to report).
    strays: bool = False

    def touch(self, key: Key) -> None:
        """Note that the election `key` is touched (once)."""
        if key not in self.touched:
            self.touched.append(key)


class Members:
    """Members by election, and strays; see the module's doc."""

    def __init__(self, labels: Labels, field_manager: str = "") -> None:
        self.labels = labels
        #: the operator's own field manager: a role label set by any other is foreign.
        self.field_manager = field_manager
        self._by_uid: dict[str, Member] = {}
        self._by_election: dict[Key, dict[str, Member]] = {}
        self._strays: dict[str, Member] = {}

    def member(self, pod: dict[str, Any]) -> Member:
        """What the operator keeps of `pod`."""
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        raw = labels.get(self.labels.election)
        return Member(
            name=str(meta.get("name")),
            uid=str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"),
            role=labels.get(self.labels.role),
            delete_on_expiry=annotations.get(self.labels.on_expiry) == "delete-pod",
            namespace=str(meta.get("namespace")),
            election=raw if toolkit.is_dns_subdomain(raw) else None, raw_election=raw,
            resource_version=str(meta.get("resourceVersion") or ""),
            role_writer=role_writer(meta, self.labels.role),
            renew_deadline=_annotation(annotations.get(self.labels.renew_deadline)),
            address=address(pod))

    def pod_event(self, kind: str, pod: dict[str, Any]) -> PodChange:
        """Take in an event of the pod watch (or a pod listed before it runs).

        The watch selects pods with an election label, server-side, so a pod whose election
        label was removed arrives as DELETED, though it still exists, and carrying its
        *previous* state (the API server's watch cache sends the last object that matched).
        A DELETED pod that had a role label is therefore `departed`: the reconciler looks it
        up, and takes the role label off a pod still there."""
        change = PodChange()
        member = self.member(pod)
        if kind == "DELETED" and member.role is not None and (pod.get("metadata") or {}).get(
                "uid"):
            change.departed = Departed(member.uid, member.namespace, member.name)
        old = self._replace(member.uid, None if kind == "DELETED" else member, change)
        if kind == "DELETED":
            return change
        writer = member.role_writer
        # A change seen happening, not the state found at start: labels written before (by
        # an older version of this operator, under another manager name) are no news.
        if (self.field_manager and member.role is not None and writer
                and writer != self.field_manager and old is not None
                and (old.role, old.role_writer) != (member.role, writer)):
            change.foreign_write = (member, writer)
        return change

    def listed(self, namespace: str | None, pods: Iterable[dict[str, Any]]) -> PodChange:
        """Take in a listing of `namespace`'s pods (None: every namespace) with a role label
        and no election label: the strays no watch shows. Those no longer listed are gone."""
        change = PodChange()
        seen = set()
        for pod in pods:
            member = self.member(pod)
            if member.raw_election is not None:
                continue  # the watch's to tell
            seen.add(member.uid)
            self._replace(member.uid, member, change)
        for uid, stray in list(self._strays.items()):
            if (stray.raw_election is None and uid not in seen
                    and namespace in (None, stray.namespace)):
                self._replace(uid, None, change)
        return change

    def _replace(self, uid: str, member: Member | None, change: PodChange) -> Member | None:
        """Put `member` (None: nothing) in the place of the pod `uid`, and note in `change`
        the elections touched, before and after, and whether the pod is gone. Returns what
        was there."""
        old = self._by_uid.pop(uid, None)
        self._strays.pop(uid, None)
        if old is not None and old.election:
            key = (old.namespace, old.election)
            members = self._by_election.get(key, {})
            members.pop(uid, None)
            if not members:
                self._by_election.pop(key, None)
            change.touch(key)
        if member is not None and not (member.election is None and member.role is None
                                       and member.raw_election is None):
            self._by_uid[uid] = member
            if member.election is None:
                self._strays[uid] = member
                change.strays = True
            else:
                key = (member.namespace, member.election)
                self._by_election.setdefault(key, {})[uid] = member
                change.touch(key)
        elif old is not None:
            change.gone.append(uid)  # nothing of ours on it any more
        return old

    def of(self, key: Key) -> list[Member]:
        """The members of one election, by name."""
        return sorted(self._by_election.get(key, {}).values(), key=lambda m: m.name)

    def has(self, key: Key) -> bool:
        """Whether any pod is a member of this election."""
        return key in self._by_election

    def elections(self) -> list[Key]:
        return sorted(self._by_election)

    def strays(self) -> list[Member]:
        """Pods in no election (no valid election label) that carry a role label or a bad
        election label: the role label must go, a bad label be reported."""
        return list(self._strays.values())

    def follows(self, uid: str) -> bool:
        """Whether the pod with this uid is followed (a member or a stray)."""
        return uid in self._by_uid

    def __len__(self) -> int:
        return len(self._by_uid)
