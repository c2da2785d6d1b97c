"""Fixtures of the library's integration tests: stores of both kinds, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controlplane.cluster import Cluster
from tests.integration.helpers import STORE_KINDS, StoreFactory


@pytest.fixture(params=STORE_KINDS)
async def stores(request: pytest.FixtureRequest, cluster: Cluster,
                 namespace: str) -> AsyncIterator[StoreFactory]:
    """Makes stores of one kind (the test runs once per kind), each with its own client;
    candidates made through it are stopped, and clients closed, when the test ends."""
    factory = StoreFactory(request.param, cluster.kubeconfig, namespace)
    yield factory
    await factory.close()
