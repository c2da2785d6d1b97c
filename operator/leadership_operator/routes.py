"""The leader endpoint: the one EndpointSlice of an opted-in Service, a pure function of the
Service and the pod the verdict names leader.

Why a slice of our own: through the label route a handover is two EndpointSlice writes by
the EndpointSlice controller (the old leader out, then the new one in), and kube-proxy
applies a second change within its ``minSyncPeriod`` (1 s by default) only when that period
has passed. Here a handover is ONE write that replaces the old address with the new one, and
a drain one write that empties it: at no instant does the slice list two addresses.

The slice (`leader_slice`), named ``<service>-leader``:

- lists the leader pod's IP of the Service's address family, with the pod's conditions as
  the EndpointSlice controller sets them (``serving``: its Ready condition; ``ready``: that,
  and not terminating; ``terminating``: being deleted), its name as ``targetRef`` and its
  node; no endpoint at all while nobody leads (or the leader has no IP yet);
- except that a leader being deleted keeps its endpoint as last written (`previous`) until
  its term ends (its release, or its renew deadline): kube-proxy sends traffic to the only
  endpoint of a Service whether it is terminating or not, so the write would change nothing
  for clients, and it would spend kube-proxy's sync period (a second by default) right
  before the write that matters, the successor's (a deletion is followed by the release
  within a fraction of a second); and when it releases the Lease, it stays listed for at
  most `RELEASE_GRACE` (`releasing`), so that the successor, which acquires within
  milliseconds, replaces it in the same single write (its app has stopped: a deleted pod's
  native sidecar, an init container with ``restartPolicy: Always``, stops after the app);
- has one port per Service port, its number resolved from ``targetPort`` (a number, or the
  name of one of the leader's container ports for the same protocol: one it does not
  declare is left out, and reported);
- carries ``kubernetes.io/service-name`` (kube-proxy's key) and
  ``endpointslice.kubernetes.io/managed-by: leadership-operator`` (the EndpointSlice
  controllers leave it alone; the operator's admission policy lets it write only such
  slices), and an owner reference to the Service (deleted with it).
"""

from __future__ import annotations

from typing import Any

from . import kube
from .contract import Labels
from .decide import ElectionState, Problem
from .pods import Member
from .services import LeaderService

#: kube-proxy finds a Service's slices by this label.
SERVICE_NAME = "kubernetes.io/service-name"
#: which controller owns a slice (the EndpointSlice controllers skip those of others), and
#: this operator's value of it.
MANAGED_BY, OPERATOR = kube.MANAGED_BY
#: seconds a leader being deleted stays in its endpoint after it released the Lease, for
#: its successor to replace it in one write (kube-proxy's default sync period).
RELEASE_GRACE = 1.0


def slice_name(service: LeaderService) -> str:
    """The name of the Service's leader EndpointSlice (no generated slice ends so)."""
    return f"{service.name}-leader"


def _written(previous: dict[str, Any] | None, uid: str) -> dict[str, Any] | None:
    """The endpoint of the pod `uid` in the slice as last written, if it lists it."""
    for endpoint in (previous or {}).get("endpoints") or []:
        if (endpoint.get("targetRef") or {}).get("uid") == uid:
            return dict(endpoint)
    return None


def release_grace_ends(state: ElectionState | None, released_at: float | None,
                       now: float) -> float | None:
    """Until when a leader being deleted that released the Lease stays in its endpoint
    (None: no such grace now): `RELEASE_GRACE` after the release was seen."""
    if state is not ElectionState.FREE or released_at is None:
        return None
    ends = released_at + RELEASE_GRACE
    return ends if ends > now else None


def releasing(previous: dict[str, Any] | None, members: list[Member]) -> Member | None:
    """The member the slice lists as last written (`previous`), if it is being deleted."""
    return next((m for m in members
                 if m.address.terminating and _written(previous, m.uid) is not None), None)


def leader_slice(service: LeaderService, leader: Member | None, labels: Labels,
                 previous: dict[str, Any] | None = None
                 ) -> tuple[dict[str, Any], list[Problem]]:
    """The EndpointSlice `service` should have with `leader` leading (None: nobody), given
    the one written last (`previous`, None if unknown), and what is wrong with the ports.
    The whole object, for a server-side apply."""
    problems: list[Problem] = []
    endpoints: list[dict[str, Any]] = []
    ports: list[dict[str, Any]] = []
    ip = leader.address.ip(service.family) if leader is not None else None
    if leader is not None and ip is not None:
        address = leader.address
        endpoint: dict[str, Any] = {
            "addresses": [ip],
            "conditions": {"ready": address.ready and not address.terminating,
                           "serving": address.ready, "terminating": address.terminating},
            "targetRef": {"kind": "Pod", "namespace": leader.namespace, "name": leader.name,
                          "uid": leader.uid}}
        if address.node_name:
            endpoint["nodeName"] = address.node_name
        kept = _written(previous, leader.uid) if address.terminating else None
        endpoints.append(kept if kept is not None and kept["addresses"] == [ip] else endpoint)
        for port in service.ports:
            number = (port.target if isinstance(port.target, int)
                      else address.port(port.target, port.protocol))
            if number is None:
                problems.append(Problem(
                    "UnresolvedTargetPort",
                    f"Service {service.name} port {port.name or port.port}: the leader "
                    f"{leader.name} declares no {port.protocol} container port named "
                    f"{port.target!r}; the port is left out of its endpoint", pod=leader.name))
                continue
            ports.append({"name": port.name, "port": number, "protocol": port.protocol,
                          **({"appProtocol": port.app_protocol} if port.app_protocol else {})})
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(service), "namespace": service.namespace,
            "labels": {SERVICE_NAME: service.name, MANAGED_BY: OPERATOR,
                       labels.election: service.election or ""},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service.name,
                                 "uid": service.uid, "controller": True}]},
        "addressType": service.family, "endpoints": endpoints, "ports": ports,
    }, problems


def selector_problem(service: LeaderService) -> Problem:
    """Why a Service with a selector gets no leader endpoint."""
    return Problem("LeaderServiceHasSelector",
                   f"Service {service.name} opted into the leader endpoint but has a "
                   "selector: the EndpointSlice controller lists every pod it selects, so "
                   "the operator writes nothing for it; remove its selector (or its election "
                   "label, and route by the role label)")
