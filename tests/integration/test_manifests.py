"""The manifests apply with the built kubectl (kustomize) and grant exactly enough."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes
import pytest

import leadership
from controlplane.cluster import Cluster
from controlplane.waiting import eventually_async
from tests.integration.helpers import StoreFactory, consume, until_allowed

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


async def test_candidate_rbac_lets_a_candidate_elect_and_nothing_more(
        cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient,
        tmp_path: Path) -> None:
    cp = cluster.require_control_plane()
    rendered = cp.kubectl("kustomize", str(MANIFESTS / "candidate-rbac")).stdout
    assert "kind: Role" in rendered and "leadership-example" in rendered
    cp.kubectl("apply", "-n", namespace, "-k", str(MANIFESTS / "candidate-rbac"))

    v1 = kubernetes.client.CoreV1Api(core_api)
    token = v1.create_namespaced_service_account_token(
        "leadership-candidate", namespace, {"spec": {"expirationSeconds": 600}}).status.token
    admin = json.loads(cluster.kubeconfig.read_text())
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        **admin, "users": [{"name": "admin", "user": {"token": token}}]}))
    await until_allowed(kubeconfig, namespace, "update", "leadership-example")

    stores = StoreFactory("kubernetes", kubeconfig, namespace)
    try:
        a = await stores.candidate("leadership-example", "a", ttl=2)
        b = await stores.candidate("leadership-example", "b", ttl=2)
        await consume(a)
        await consume(b)
        await eventually_async(lambda: a.is_leader or b.is_leader, 5, "one of them leads")
        leader, other = (a, b) if a.is_leader else (b, a)
        await leader.stop()
        await eventually_async(lambda: other.is_leader, 1, "the other takes over")

        with pytest.raises(leadership.FatalStoreError) as denied:
            await (await stores()).get("some-other-lease")
        assert denied.value.status == 403
        # The Lease is created beforehand: a candidate cannot create another election's.
        with pytest.raises(leadership.FatalStoreError) as denied:
            await (await stores()).create({"metadata": {"name": "another-election"},
                                           "spec": {"holderIdentity": "a"}})
        assert denied.value.status == 403
    finally:
        await stores.close()


def test_kind_config_describes_a_kind_cluster_with_workers() -> None:
    import yaml

    config = yaml.safe_load((MANIFESTS.parent / "kind-config.yaml").read_text())
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    roles = [node["role"] for node in config["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") >= 1
