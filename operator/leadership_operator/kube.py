"""Every request the operator and ``leadership status`` make to the API server, and nothing
else: `Kube`, a Protocol, so that their logic runs on the in-memory
`leadership_operator.testing.FakeKube` in unit tests; and `ApiKube`, its implementation on the
library's `toolkit.KubeApi` (the project's one way to the API server: paging, watches,
timeouts, errors as `leadership.errors`).

- Leases are read only (listed, watched, read); ``kube-node-lease`` (one Lease per node,
  never an election) is left out server-side.
- Pods are listed by label and labelled with a merge patch of one label, as the operator's
  field manager (``contract.field_manager``); a deletion carries
  the uid and the resourceVersion seen as preconditions, so a new pod of the same name (a
  StatefulSet's replacement), or one changed since, is never the one deleted.
- Events are created and patched (aggregation); a patch of an Event the API server has
  already dropped (its ``--event-ttl``) raises `leadership.NotFoundError`.
- Services are listed by label (those that opted into a leader endpoint); their leader
  EndpointSlices are written whole by a server-side apply (forced, as the operator's field
  manager: the slice is the operator's alone) and deleted when the Service leaves the route.
- A namespace is only asked about (does it exist?), where RBAC allows.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any, Protocol

import leadership
from leadership import toolkit

JSONDict = dict[str, Any]
LEASES = "/apis/coordination.k8s.io/v1"
#: Leases of nodes (the kubelet's heartbeats): many, busy, and never an election.
NODE_LEASES = "kube-node-lease"
#: Leases per page when listing: small, so that a page of hostile Leases (a megabyte of
#: holderIdentity each, say) is never hundreds of megabytes at once.
LEASE_PAGE = 50


def leases_path(namespace: str | None) -> str:
    return f"{LEASES}/namespaces/{namespace}/leases" if namespace else f"{LEASES}/leases"


def pods_path(namespace: str | None) -> str:
    return f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"


def services_path(namespace: str | None) -> str:
    return f"/api/v1/namespaces/{namespace}/services" if namespace else "/api/v1/services"


def slices_path(namespace: str | None) -> str:
    return (f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices" if namespace
            else "/apis/discovery.k8s.io/v1/endpointslices")


#: the label and value of the EndpointSlices the operator writes (`routes.leader_slice`).
MANAGED_BY = ("endpointslice.kubernetes.io/managed-by", "leadership-operator")


class Kube(Protocol):
    """What the operator asks of the API server (see the module's doc)."""

    async def list_leases(self, namespace: str | None) -> tuple[list[JSONDict], str]: ...

    def watch_leases(self, namespace: str | None,
                     version: str) -> AsyncIterator[toolkit.WatchEvent]: ...

    async def read_lease(self, namespace: str, name: str) -> JSONDict | None: ...

    async def list_pods(self, namespace: str | None, selector: str) -> list[JSONDict]: ...

    async def find_pod(self, namespace: str, name: str) -> JSONDict | None: ...

    async def label_pod(self, namespace: str, name: str, key: str,
                        value: str | None) -> str: ...

    async def delete_pod(self, namespace: str, name: str, uid: str,
                         resource_version: str) -> None: ...

    async def list_services(self, namespace: str | None, selector: str) -> list[JSONDict]: ...

    async def apply_slice(self, namespace: str, body: JSONDict) -> None: ...

    async def delete_slice(self, namespace: str, name: str) -> None: ...

    async def list_slices(self, namespace: str | None) -> list[tuple[str, str, str]]: ...

    async def create_event(self, namespace: str, body: JSONDict) -> JSONDict: ...

    async def patch_event(self, namespace: str, name: str, body: JSONDict) -> None: ...

    def server_now(self) -> datetime.datetime | None: ...

    async def namespace_exists(self, namespace: str) -> bool | None: ...


class ApiKube:
    """`Kube` on a `toolkit.KubeApi`."""

    def __init__(self, api: toolkit.KubeApi, field_manager: str = "") -> None:
        self.api = api
        #: the field manager of label writes (``contract.field_manager``); "" leaves it to
        #: the API server (derived from the client's user agent).
        self.field_manager = field_manager

    def __repr__(self) -> str:
        return f"ApiKube({self.api.host})"

    @staticmethod
    def _lease_query(namespace: str | None) -> list[tuple[str, str]]:
        return [] if namespace else [("fieldSelector", f"metadata.namespace!={NODE_LEASES}")]

    async def list_leases(self, namespace: str | None) -> tuple[list[JSONDict], str]:
        return await self.api.list_all(leases_path(namespace),
                                       query=self._lease_query(namespace),
                                       page_size=LEASE_PAGE)

    async def watch_leases(self, namespace: str | None,
                           version: str) -> AsyncIterator[toolkit.WatchEvent]:
        async for event in self.api.watch(leases_path(namespace), version,
                                          query=self._lease_query(namespace)):
            yield event

    async def read_lease(self, namespace: str, name: str) -> JSONDict | None:
        try:
            return await self.api.request("GET", f"{leases_path(namespace)}/{name}")
        except leadership.NotFoundError:
            return None

    async def list_pods(self, namespace: str | None, selector: str) -> list[JSONDict]:
        items, _ = await self.api.list_all(pods_path(namespace),
                                           query=[("labelSelector", selector)])
        return items

    async def find_pod(self, namespace: str, name: str) -> JSONDict | None:
        """One pod, or None: a list by name (``list``, which the operator has; it has no
        ``get`` on pods)."""
        items, _ = await self.api.list_all(pods_path(namespace), query=[
            ("fieldSelector", f"metadata.name={name}")])
        return items[0] if items else None

    async def label_pod(self, namespace: str, name: str, key: str, value: str | None) -> str:
        """Set (or, with None, remove) one label; the pod's new resourceVersion."""
        query = [("fieldManager", self.field_manager)] if self.field_manager else []
        pod = await self.api.request("PATCH", f"{pods_path(namespace)}/{name}", query=query,
                                     body={"metadata": {"labels": {key: value}}},
                                     content_type="application/merge-patch+json")
        return str((pod.get("metadata") or {}).get("resourceVersion") or "")

    async def delete_pod(self, namespace: str, name: str, uid: str,
                         resource_version: str) -> None:
        preconditions = {"uid": uid, **({"resourceVersion": resource_version}
                                        if resource_version else {})}
        await self.api.request("DELETE", f"{pods_path(namespace)}/{name}",
                               body={"preconditions": preconditions})

    async def list_services(self, namespace: str | None, selector: str) -> list[JSONDict]:
        items, _ = await self.api.list_all(services_path(namespace),
                                           query=[("labelSelector", selector)])
        return items

    async def apply_slice(self, namespace: str, body: JSONDict) -> None:
        """Create or replace the EndpointSlice `body` (a server-side apply, forced)."""
        query = [("fieldManager", self.field_manager or "leadership-operator"),
                 ("force", "true")]
        await self.api.request("PATCH", f"{slices_path(namespace)}/{body['metadata']['name']}",
                               query=query, body=body,
                               content_type="application/apply-patch+yaml")

    async def list_slices(self, namespace: str | None) -> list[tuple[str, str, str]]:
        """(namespace, name, its Service's name) of every EndpointSlice the operator
        manages."""
        items, _ = await self.api.list_all(slices_path(namespace), query=[
            ("labelSelector", "=".join(MANAGED_BY))])
        return [(str(i["metadata"].get("namespace") or namespace), str(i["metadata"]["name"]),
                 str((i["metadata"].get("labels") or {}).get("kubernetes.io/service-name")))
                for i in items]

    async def delete_slice(self, namespace: str, name: str) -> None:
        """Delete the EndpointSlice; one already gone is no error."""
        try:
            await self.api.request("DELETE", f"{slices_path(namespace)}/{name}")
        except leadership.NotFoundError:
            pass

    async def create_event(self, namespace: str, body: JSONDict) -> JSONDict:
        return await self.api.request("POST", f"/api/v1/namespaces/{namespace}/events",
                                      body=body)

    async def patch_event(self, namespace: str, name: str, body: JSONDict) -> None:
        await self.api.request("PATCH", f"/api/v1/namespaces/{namespace}/events/{name}",
                               body=body, content_type="application/merge-patch+json")

    def server_now(self) -> datetime.datetime | None:
        """The API server's time, from its last answer (`toolkit.KubeApi.server_now`)."""
        return self.api.server_now()

    async def namespace_exists(self, namespace: str) -> bool | None:
        """Whether the namespace exists; None when RBAC does not let us ask (the operator's
        own manifests grant nothing on namespaces: a check, never a requirement)."""
        try:
            await self.api.request("GET", f"/api/v1/namespaces/{namespace}")
        except leadership.NotFoundError:
            return False
        except leadership.PermissionDeniedError:
            return None
        return True
