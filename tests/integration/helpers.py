"""Helpers of the integration tests: stores of both kinds, waiting with deadlines."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import kubernetes

import leadership
from controlplane.clients import new_aio_client, pykube_client_for, sync_client
from controlplane.waiting import eventually_async

STORE_KINDS = ["kubernetes", "pykube"]


class StoreFactory:
    """Makes one store (with its own client, like a separate process) per call."""

    def __init__(self, kind: str, kubeconfig: Path, namespace: str) -> None:
        self.kind, self.kubeconfig, self.namespace = kind, kubeconfig, namespace
        self._clients: list[Any] = []
        self._candidates: list[leadership.Candidate] = []

    async def candidate(self, key: str, node: str, **options: Any) -> leadership.Candidate:
        """A Candidate on a store of its own; stopped when the test ends."""
        made = leadership.Candidate(await self(), key, node, **options)
        self._candidates.append(made)
        return made

    async def __call__(self) -> leadership.LeaseStore:
        if self.kind == "kubernetes":
            api = await new_aio_client(self.kubeconfig)
            self._clients.append(api)
            return leadership.KubernetesLeaseStore(api, self.namespace)
        return leadership.PykubeLeaseStore(pykube_client_for(self.kubeconfig), self.namespace)

    async def close(self) -> None:
        await asyncio.gather(*(c.stop() for c in self._candidates))
        for api in self._clients:
            await api.close()


async def consume(candidate: leadership.Candidate) -> list[bool]:
    """Start the campaign and collect its stream in the background; returns the live list."""
    values: list[bool] = []
    stream = candidate.run_for_election()

    async def run() -> None:
        async for value in stream:
            values.append(value)

    task = asyncio.ensure_future(run())
    _background.add(task)
    task.add_done_callback(_background.discard)
    return values


_background: set[asyncio.Task[None]] = set()


async def stop_all(*candidates: leadership.Candidate) -> None:
    await asyncio.gather(*(c.stop() for c in candidates))


def grant(core_api: kubernetes.client.ApiClient, namespace: str, account: str,
          rules: list[dict[str, object]]) -> None:
    """A Role with `rules`, bound to ServiceAccount `account`."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(core_api)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": account}, "rules": rules})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": account},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]})


async def until_allowed(kubeconfig: Path, namespace: str, verb: str, name: str) -> None:
    """Wait until the API server's authorizer lets `kubeconfig`'s user `verb` Lease `name`
    (a new binding reaches the authorizer's cache a moment after it is created)."""

    def allowed() -> bool:
        api = kubernetes.client.AuthorizationV1Api(sync_client(kubeconfig))
        review = api.create_self_subject_access_review({"spec": {"resourceAttributes": {
            "namespace": namespace, "verb": verb, "group": "coordination.k8s.io",
            "resource": "leases", "name": name}}})
        return bool(review.status.allowed)

    await eventually_async(lambda: asyncio.to_thread(allowed), 10,
                           f"{verb} on lease {name} allowed", every=0.05)
