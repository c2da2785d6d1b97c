"""Helpers of the integration tests: stores of both kinds, waiting with deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import leadership
from controlplane.cluster import new_aio_client, pykube_client_for

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


async def eventually(predicate: Callable[[], bool], within: float, what: str,
                     interval: float = 0.005) -> float:
    """Wait until `predicate()` holds; return the seconds it took; fail after `within` s."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - start


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

