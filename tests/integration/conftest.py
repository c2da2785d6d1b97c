"""Fixtures for the integration tests: a real control plane, once per session.

By default the suite starts its own etcd + kube-apiserver on loopback (building them first
when the cache is empty). ``LEADERSHIP_TEST_KUBECONFIG=/path/to/kubeconfig`` points the tests at
an existing cluster instead (a kind cluster, say); they then need cluster-admin there.
Tests never skip for want of a cluster: they build one or fail with the reason.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import kubernetes.aio.config
import pykube
import pytest
from kubernetes.aio.client import ApiClient as AioApiClient

from tests.controlplane.launcher import ControlPlane
from tests.integration.helpers import STORE_KINDS, StoreFactory, new_aio_client, pykube_client_for


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@dataclass
class Cluster:
    kubeconfig: Path
    control_plane: ControlPlane | None

    def require_control_plane(self) -> ControlPlane:
        if self.control_plane is None:
            raise AssertionError("this test needs the suite's own control plane (its audit "
                                 "log or its binaries); unset LEADERSHIP_TEST_KUBECONFIG")
        return self.control_plane


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    existing = os.environ.get("LEADERSHIP_TEST_KUBECONFIG")
    if existing:
        yield Cluster(Path(existing), None)
        return
    with ControlPlane() as cp:
        yield Cluster(cp.kubeconfig, cp)


@pytest.fixture(params=STORE_KINDS)
async def stores(request: pytest.FixtureRequest, cluster: Cluster,
                 namespace: str) -> AsyncIterator[StoreFactory]:
    """Makes stores of one kind (the test runs once per kind), each with its own client;
    candidates made through it are stopped, and clients closed, when the test ends."""
    factory = StoreFactory(request.param, cluster.kubeconfig, namespace)
    yield factory
    await factory.close()


@pytest.fixture(scope="session")
def core_api(cluster: Cluster) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture
def namespace(core_api: kubernetes.client.ApiClient) -> Iterator[str]:
    """A fresh namespace per test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    v1 = kubernetes.client.CoreV1Api(core_api)
    v1.create_namespace({"metadata": {"name": name}})
    yield name
    v1.delete_namespace(name)


@pytest.fixture
async def aio_client_for() -> AsyncIterator[Callable[[Path], object]]:
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
async def aio_client(cluster: Cluster, aio_client_for: Callable[[Path], object]) -> AioApiClient:
    return await aio_client_for(cluster.kubeconfig)  # type: ignore[misc,no-any-return]


@pytest.fixture
def pykube_client(cluster: Cluster) -> pykube.HTTPClient:
    return pykube_client_for(cluster.kubeconfig)


@pytest.fixture
def service_account_kubeconfig(cluster: Cluster, core_api: kubernetes.client.ApiClient,
                               tmp_path: Path) -> Callable[[str, str], Path]:
    """``service_account_kubeconfig(namespace, name)``: a kubeconfig that authenticates as that
    ServiceAccount with a real token from the TokenRequest API (the account is created)."""
    v1 = kubernetes.client.CoreV1Api(core_api)

    def make(namespace: str, name: str) -> Path:
        v1.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        token = v1.create_namespaced_service_account_token(
            name, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
        cluster_entry = _current_cluster(cluster.kubeconfig)
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "c", "cluster": cluster_entry}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "c", "user": name,
                                                   "namespace": namespace}}],
        }
        path = tmp_path / f"kubeconfig-{namespace}-{name}"
        path.write_text(json.dumps(config))
        return path

    return make


def _current_cluster(kubeconfig: Path) -> dict[str, str]:
    """The server and CA of the current context of `kubeconfig` (inline CA data)."""
    loader = kubernetes.config.kube_config._get_kube_config_loader(filename=str(kubeconfig))
    loader.set_active_context()
    cfg = kubernetes.client.Configuration()
    loader.load_and_set(cfg)
    entry = {"server": cfg.host}
    if cfg.ssl_ca_cert:
        entry["certificate-authority-data"] = base64.b64encode(
            Path(cfg.ssl_ca_cert).read_bytes()).decode()
    return entry
