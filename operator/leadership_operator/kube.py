"""Every request the operator and ``leadership status`` make to the API server, and nothing
else: `Kube`, a Protocol, so that their logic runs on the in-memory
`leadership_operator.testing.FakeKube` in unit tests; and `ApiKube`, its implementation on the
library's `leadership.KubeApi` (the project's one way to the API server: paging, watches,
timeouts, errors as `leadership.errors`).

- Leases are read only (listed, watched, read); ``kube-node-lease`` (one Lease per node,
  never an election) is left out server-side.
- Pods are listed by label and labelled with a merge patch of one label; a deletion carries
  the uid as a precondition, so a new pod of the same name is never the one deleted.
- Events are created and patched (aggregation); a patch of an Event the API server has
  already dropped (its ``--event-ttl``) raises `leadership.NotFoundError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import leadership

JSONDict = dict[str, Any]
LEASES = "/apis/coordination.k8s.io/v1"
#: Leases of nodes (the kubelet's heartbeats): many, busy, and never an election.
NODE_LEASES = "kube-node-lease"


def leases_path(namespace: str | None) -> str:
    return f"{LEASES}/namespaces/{namespace}/leases" if namespace else f"{LEASES}/leases"


def pods_path(namespace: str | None) -> str:
    return f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"


class Kube(Protocol):
    """What the operator asks of the API server (see the module's doc)."""

    async def list_leases(self, namespace: str | None) -> tuple[list[JSONDict], str]: ...

    def watch_leases(self, namespace: str | None,
                     version: str) -> AsyncIterator[leadership.WatchEvent]: ...

    async def read_lease(self, namespace: str, name: str) -> JSONDict | None: ...

    async def list_pods(self, namespace: str | None, selector: str) -> list[JSONDict]: ...

    async def label_pod(self, namespace: str, name: str, key: str,
                        value: str | None) -> None: ...

    async def delete_pod(self, namespace: str, name: str, uid: str) -> None: ...

    async def create_event(self, namespace: str, body: JSONDict) -> JSONDict: ...

    async def patch_event(self, namespace: str, name: str, body: JSONDict) -> None: ...


class ApiKube:
    """`Kube` on a `leadership.KubeApi`."""

    def __init__(self, api: leadership.KubeApi) -> None:
        self.api = api

    def __repr__(self) -> str:
        return f"ApiKube({self.api.host})"

    @staticmethod
    def _lease_query(namespace: str | None) -> list[tuple[str, str]]:
        return [] if namespace else [("fieldSelector", f"metadata.namespace!={NODE_LEASES}")]

    async def list_leases(self, namespace: str | None) -> tuple[list[JSONDict], str]:
        return await self.api.list_all(leases_path(namespace),
                                       query=self._lease_query(namespace))

    async def watch_leases(self, namespace: str | None,
                           version: str) -> AsyncIterator[leadership.WatchEvent]:
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

    async def label_pod(self, namespace: str, name: str, key: str, value: str | None) -> None:
        await self.api.request("PATCH", f"{pods_path(namespace)}/{name}",
                               body={"metadata": {"labels": {key: value}}},
                               content_type="application/merge-patch+json")

    async def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        await self.api.request("DELETE", f"{pods_path(namespace)}/{name}",
                               body={"preconditions": {"uid": uid}})

    async def create_event(self, namespace: str, body: JSONDict) -> JSONDict:
        return await self.api.request("POST", f"/api/v1/namespaces/{namespace}/events",
                                      body=body)

    async def patch_event(self, namespace: str, name: str, body: JSONDict) -> None:
        await self.api.request("PATCH", f"/api/v1/namespaces/{namespace}/events/{name}",
                               body=body, content_type="application/merge-patch+json")
