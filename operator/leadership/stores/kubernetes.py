"""`KubernetesLeaseStore`: Leases through the official client's asyncio API (``kubernetes.aio``).

Requests go through `KubeApi`, this package's one way to the API server, over the user's own
``kubernetes.aio.client.ApiClient`` (its configuration, credentials and connection pool), as
raw JSON: MicroTime strings and fields unknown to the client travel untouched, and
``replace`` is the same full PUT that client-go sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..errors import NotFoundError
from ..validation import validate_namespace
from . import JSONDict, WatchEvent
from ._wire import LEASES_PATH
from .kubeapi import KubeApi


class KubernetesLeaseStore:
    """Leases of `namespace`, through a ``kubernetes.aio`` `ApiClient` the caller owns."""

    def __init__(self, api_client: Any, namespace: str, *,
                 request_timeout: float = 10.0) -> None:
        self.kube = KubeApi(api_client, request_timeout=request_timeout)
        self.api = api_client
        self.namespace = validate_namespace(namespace)
        self._path = LEASES_PATH.format(namespace=self.namespace)

    @property
    def request_timeout(self) -> float:
        return self.kube.request_timeout

    def __repr__(self) -> str:
        return f"KubernetesLeaseStore({self.kube.host}, namespace={self.namespace!r})"

    async def get(self, name: str) -> JSONDict | None:
        try:
            return await self.kube.request("GET", f"{self._path}/{name}")
        except NotFoundError:
            return None

    async def create(self, lease: JSONDict) -> JSONDict:
        return await self.kube.request("POST", self._path, body=lease)

    async def replace(self, lease: JSONDict) -> JSONDict:
        return await self.kube.request("PUT", f"{self._path}/{lease['metadata']['name']}",
                                       body=lease)

    async def watch(self, name: str, resource_version: str | None) -> AsyncIterator[WatchEvent]:
        async for event in self.kube.watch(self._path, resource_version,
                                           query=[("fieldSelector", f"metadata.name={name}")]):
            yield event
