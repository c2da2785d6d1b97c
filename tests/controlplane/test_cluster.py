"""Smoke tests that prove the control plane under the suite is real Kubernetes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import pykube
import pytest
from kubernetes.client.rest import ApiException

from controlplane.clients import pykube_client_for
from controlplane.cluster import Cluster
from controlplane.waiting import eventually
from leadership.record import format_microtime

MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class PykubeLease(pykube.objects.NamespacedAPIObject):  # type: ignore[misc]
    version = "coordination.k8s.io/v1"
    endpoint = "leases"
    kind = "Lease"


def lease_body(name: str, holder: str = "someone") -> dict[str, object]:
    import datetime

    now = format_microtime(datetime.datetime.now(datetime.UTC))
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}


def test_lease_written_by_official_client_reads_back_through_pykube(
        core_api: kubernetes.client.ApiClient, pykube_client: pykube.HTTPClient,
        namespace: str) -> None:
    coordination = kubernetes.client.CoordinationV1Api(core_api)
    coordination.create_namespaced_lease(namespace, lease_body("smoke"))
    lease = PykubeLease.objects(pykube_client, namespace=namespace).get(name="smoke")
    assert lease.obj["spec"]["holderIdentity"] == "someone"
    assert MICROTIME.match(lease.obj["spec"]["renewTime"]), lease.obj["spec"]["renewTime"]


def test_stale_resource_version_gets_409_through_both_clients(
        core_api: kubernetes.client.ApiClient, cluster: Cluster, namespace: str) -> None:
    coordination = kubernetes.client.CoordinationV1Api(core_api)
    first = coordination.create_namespaced_lease(namespace, lease_body("cas"))
    stale_rv = first.metadata.resource_version
    body = lease_body("cas", holder="writer-1")
    body["metadata"] = {"name": "cas", "resourceVersion": stale_rv}
    coordination.replace_namespaced_lease("cas", namespace, body)  # moves the version on

    body["spec"]["holderIdentity"] = "late-official"  # type: ignore[index]
    with pytest.raises(ApiException) as official:
        coordination.replace_namespaced_lease("cas", namespace, body)
    assert official.value.status == 409

    api = pykube_client_for(cluster.kubeconfig)
    lease = PykubeLease(api, {**body, "metadata": {"name": "cas", "namespace": namespace,
                                                   "resourceVersion": stale_rv}})
    with pytest.raises(pykube.exceptions.HTTPError) as through_pykube:
        lease.update()
    assert through_pykube.value.code == 409
    assert coordination.read_namespaced_lease("cas", namespace).spec.holder_identity == "writer-1"


def test_service_account_with_get_on_one_lease_can_do_nothing_else(
        core_api: kubernetes.client.ApiClient, namespace: str,
        service_account_kubeconfig: Callable[[str, str], Path]) -> None:
    coordination = kubernetes.client.CoordinationV1Api(core_api)
    coordination.create_namespaced_lease(namespace, lease_body("mine"))
    coordination.create_namespaced_lease(namespace, lease_body("other"))
    rbac = kubernetes.client.RbacAuthorizationV1Api(core_api)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "read-one-lease"},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                   "resourceNames": ["mine"], "verbs": ["get"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "read-one-lease"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "read-one-lease"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})
    kubeconfig = service_account_kubeconfig(namespace, "reader")
    limited = kubernetes.client.CoordinationV1Api(
        kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))

    # RBAC changes reach the authorizer's cache quickly but not instantly: wait for the grant.
    def read_mine() -> Any:
        try:
            return limited.read_namespaced_lease("mine", namespace)
        except ApiException as exc:
            if exc.status != 403:
                raise
            return None

    mine = eventually(read_mine, 10, "the grant reaching the authorizer", every=0.1)
    assert mine.spec.holder_identity == "someone"

    mine_body = coordination.read_namespaced_lease("mine", namespace).to_dict()
    with pytest.raises(ApiException) as update:
        limited.replace_namespaced_lease("mine", namespace, {
            "metadata": {"name": "mine",
                         "resourceVersion": mine_body["metadata"]["resource_version"]},
            "spec": {"holderIdentity": "intruder"}})
    assert update.value.status == 403
    with pytest.raises(ApiException) as other:
        limited.read_namespaced_lease("other", namespace)
    assert other.value.status == 403


def test_kubectl_get_lease_shows_the_holder(core_api: kubernetes.client.ApiClient,
                                            cluster: Cluster, namespace: str) -> None:
    cp = cluster.require_control_plane()
    kubernetes.client.CoordinationV1Api(core_api).create_namespaced_lease(
        namespace, lease_body("shown", holder="pod-a"))
    out = cp.kubectl("get", "lease", "-n", namespace).stdout
    header, row = out.splitlines()[:2]
    assert header.split()[:2] == ["NAME", "HOLDER"], out
    assert row.split()[:2] == ["shown", "pod-a"], out


def test_deployment_creates_pods_with_the_controller_manager(
        core_api: kubernetes.client.ApiClient, cluster: Cluster, namespace: str) -> None:
    cp = cluster.require_control_plane()
    cp.start_controller_manager()
    kubernetes.client.AppsV1Api(core_api).create_namespaced_deployment(namespace, {
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}})
    v1 = kubernetes.client.CoreV1Api(core_api)
    eventually(lambda: len(v1.list_namespaced_pod(namespace, label_selector="app=web").items)
               == 2, 60, f"the Deployment's 2 pods (logs: {cp.logs})", every=0.2)


def test_apiserver_reports_the_pinned_version(cluster: Cluster) -> None:
    cp = cluster.require_control_plane()
    from controlplane.build import load_versions

    status, body = cp.get("/version")
    assert status == 200
    assert json.loads(body)["gitVersion"] == f"v{load_versions().kubernetes}"
