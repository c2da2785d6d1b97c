"""Fixtures shared by every test that needs a cluster: a real control plane, once per session.

By default the suite starts its own etcd + kube-apiserver on loopback (building them first
when the cache is empty). ``LEADERSHIP_TEST_KUBECONFIG=/path/to/kubeconfig`` points the tests at
an existing cluster instead (a kind cluster, say); they then need cluster-admin there.
Tests never skip for want of a cluster: they build one or fail with the reason.

Every test that uses the `cluster` fixture, directly or not, is marked ``integration``.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pykube
import pytest
from kubernetes.aio.client import ApiClient as AioApiClient

from controlplane.clients import new_aio_client, pykube_client_for, sync_client
from controlplane.cluster import Cluster
from controlplane.cluster import (
    service_account_kubeconfig as make_service_account_kubeconfig,
)
from controlplane.launcher import ControlPlane

# A test suite started in the background of a non-interactive shell (`cmd &`, nohup) inherits
# SIGINT ignored, and so would every process it starts: the tests that press Ctrl-C on a
# candidate, an example or `status --watch` would find it ignored (seen on a CI-like run).
# Ctrl-C's default for the processes the tests start, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    existing = os.environ.get("LEADERSHIP_TEST_KUBECONFIG")
    if existing:
        yield Cluster(Path(existing), None)
        return
    with ControlPlane() as cp:
        yield Cluster(cp.kubeconfig, cp)


@pytest.fixture(scope="session")
def core_api(cluster: Cluster) -> kubernetes.client.ApiClient:
    return sync_client(cluster.kubeconfig)


@pytest.fixture
def make_namespace(core_api: kubernetes.client.ApiClient) -> Iterator[Callable[[], str]]:
    """``make_namespace()``: a fresh namespace, deleted after the test."""
    v1 = kubernetes.client.CoreV1Api(core_api)
    made: list[str] = []

    def make() -> str:
        name = f"t-{uuid.uuid4().hex[:10]}"
        v1.create_namespace({"metadata": {"name": name}})
        made.append(name)
        return name

    yield make
    for name in made:
        v1.delete_namespace(name)


@pytest.fixture
def namespace(make_namespace: Callable[[], str]) -> str:
    """A fresh namespace per test."""
    return make_namespace()


@pytest.fixture
async def aio_client_for() -> AsyncIterator[Callable[[Path], Any]]:
    """``await aio_client_for(kubeconfig)``: a kubernetes.aio ApiClient, closed after the test."""
    made: list[AioApiClient] = []

    async def make(kubeconfig: Path) -> AioApiClient:
        client = await new_aio_client(kubeconfig)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@pytest.fixture
async def aio_client(cluster: Cluster, aio_client_for: Callable[[Path], Any]) -> AioApiClient:
    return await aio_client_for(cluster.kubeconfig)  # type: ignore[no-any-return]


@pytest.fixture
def pykube_client(cluster: Cluster) -> pykube.HTTPClient:
    return pykube_client_for(cluster.kubeconfig)


@pytest.fixture
def service_account_kubeconfig(cluster: Cluster, tmp_path: Path) -> Callable[[str, str], Path]:
    """``service_account_kubeconfig(namespace, name)``: a kubeconfig that authenticates as that
    ServiceAccount with a real token from the TokenRequest API (the account is created)."""

    def make(namespace: str, name: str) -> Path:
        return make_service_account_kubeconfig(
            cluster.kubeconfig, namespace, name, tmp_path / f"kubeconfig-{namespace}-{name}")

    return make
