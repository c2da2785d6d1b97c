"""The admission policies, on the real API server: what the operator's ServiceAccount may do
to pods (manifests/operator/base/pod-writes-policy.yaml) and to EndpointSlices
(endpointslice-writes-policy.yaml), and what a pod may write into an election's Lease
(manifests/policies/lease-holder)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client.rest import ApiException

import leadership
from controlplane.clients import sync_client
from controlplane.cluster import Cluster
from controlplane.waiting import eventually, eventually_async
from tests.integration.helpers import StoreFactory, consume

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
POD_POLICY = MANIFESTS / "operator" / "base" / "pod-writes-policy.yaml"
SLICE_POLICY = MANIFESTS / "operator" / "base" / "endpointslice-writes-policy.yaml"


def pod(name: str, labels: dict[str, str], annotations: dict[str, str] | None = None
        ) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10.1"}]}}


def refused(call: Callable[[], object]) -> str:
    """The API server's message for a request the admission policy refuses."""
    with pytest.raises(ApiException) as exc:
        call()
    assert exc.value.status == 422, exc.value
    return str(json.loads(exc.value.body)["message"])


def grant(cluster: Cluster, namespace: str, account: str, role: str, verbs: str,
          resource: str, *extra: str) -> None:
    """A Role `role` in `namespace` with `verbs` on `resource` (and `extra` kubectl flags,
    e.g. ``--resource-name=x``), bound to the ServiceAccount `account` there."""
    cp = cluster.require_control_plane()
    cp.kubectl("-n", namespace, "create", "role", role, f"--verb={verbs}",
               f"--resource={resource}", *extra)
    cp.kubectl("-n", namespace, "create", "rolebinding", role, f"--role={role}",
               f"--serviceaccount={namespace}:{account}")


@pytest.fixture
def operator_like(cluster: Cluster, namespace: str,
                  service_account_kubeconfig: Callable[[str, str], Path]) -> Any:
    """A ServiceAccount named like the operator's (which the policy matches), with patch and
    delete on this namespace's pods: the policy, not RBAC, is what stops it. Returns a
    CoreV1Api authenticated as it."""
    cp = cluster.require_control_plane()
    cp.kubectl("apply", "-f", str(POD_POLICY))
    kubeconfig = service_account_kubeconfig(namespace, "leadership-operator")
    grant(cluster, namespace, "leadership-operator", "pods", "get,patch,update,delete", "pods")
    api = kubernetes.client.CoreV1Api(sync_client(kubeconfig))
    kubernetes.client.CoreV1Api(sync_client(cluster.kubeconfig)).create_namespaced_pod(
        namespace, pod("probe", {"leadership.dev/election": "probe"}))
    eventually(lambda: default_policy_in_force(api, namespace), 10, "the policy in force")
    return api


def default_policy_in_force(api: Any, namespace: str) -> bool:
    """Whether the API server enforces the default pod policy on the scratch pod "probe":
    a change of any other label refused, the role label admitted (a stale policy with
    another prefix refuses that too). Each probe is harmless if admitted, and changes the
    label (an unchanged label is no change to refuse)."""
    if "only the role label" not in refused_or_empty(
            lambda: patch_labels(api, namespace, "probe", {"probe": uuid.uuid4().hex})):
        return False
    return not refused_or_empty(
        lambda: patch_labels(api, namespace, "probe", {"leadership.dev/role": "follower"}))


def patch_labels(api: Any, namespace: str, name: str, labels: dict[str, str | None]) -> None:
    api.patch_namespaced_pod(name, namespace, {"metadata": {"labels": labels}})


def test_the_operator_may_change_only_the_role_label_of_pods_in_an_election(
        namespace: str, core_api: kubernetes.client.ApiClient, operator_like: Any) -> None:
    admin = kubernetes.client.CoreV1Api(core_api)
    admin.create_namespaced_pod(namespace, pod("member", {"leadership.dev/election": "web"}))
    admin.create_namespaced_pod(namespace, pod("bystander", {"app": "other"}))
    assert "spec" in refused(lambda: operator_like.patch_namespaced_pod("member", namespace, {
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}}))
    assert refused(lambda: patch_labels(operator_like, namespace, "member", {"app": "x"})) \
        .endswith("the leadership operator may change only the role label of a pod")
    assert "only the role label" in refused(lambda: operator_like.patch_namespaced_pod(
        "member", namespace, {"metadata": {"annotations": {"note": "x"}}}))
    assert "only pods in an election" in refused(lambda: patch_labels(
        operator_like, namespace, "bystander", {"leadership.dev/role": "leader"}))
    assert "leader, follower or stale" in refused(lambda: patch_labels(
        operator_like, namespace, "member", {"leadership.dev/role": "boss"}))
    for role in ("leader", "stale", "follower", None):  # what the operator does: admitted
        patch_labels(operator_like, namespace, "member", {"leadership.dev/role": role})
    assert "leadership.dev/role" not in admin.read_namespaced_pod(
        "member", namespace).metadata.labels
    # Deletion: only a member that opted in.
    assert "opted in" in refused(lambda: operator_like.delete_namespaced_pod(
        "member", namespace))
    admin.create_namespaced_pod(namespace, pod("opted-in", {"leadership.dev/election": "web"},
                                               {"leadership.dev/on-expiry": "delete-pod"}))
    operator_like.delete_namespaced_pod("opted-in", namespace)
    # Anyone else is not matched: the admin may still change what it likes.
    patch_labels(admin, namespace, "member", {"app": "x"})


def refused_or_empty(call: Callable[[], object]) -> str:
    """The policy's message if it refused the call; "" if it was admitted."""
    try:
        call()
    except ApiException as exc:
        if exc.status == 422:
            return str(json.loads(exc.body)["message"])
        raise
    return ""


def test_a_non_default_label_prefix_is_followed_by_the_policy(
        cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient,
        operator_like: Any, tmp_path: Path) -> None:
    cp = cluster.require_control_plane()
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    shutil.copy(POD_POLICY, overlay / "pod-writes-policy.yaml")
    # The patch docs/operator.md gives for --label-prefix=example.com.
    (overlay / "kustomization.yaml").write_text(PREFIX_OVERLAY)
    admin = kubernetes.client.CoreV1Api(core_api)
    admin.create_namespaced_pod(namespace, pod("member", {"example.com/election": "web"}))
    try:
        cp.kubectl("apply", "-k", str(overlay))
        # Under the default prefix this is "only pods in an election" (refused either way):
        # the new policy says the other label is not the role label.
        eventually(lambda: "only the role label" in refused_or_empty(
            lambda: patch_labels(operator_like, namespace, "member",
                                 {"leadership.dev/role": "leader"})), 10,
                   "the policy with the new prefix in force")
        patch_labels(operator_like, namespace, "member", {"example.com/role": "leader"})
        assert "leader, follower or stale" in refused(lambda: patch_labels(
            operator_like, namespace, "member", {"example.com/role": "boss"}))
    finally:
        cp.kubectl("apply", "-f", str(POD_POLICY))  # the default, for the other tests
        eventually(lambda: default_policy_in_force(operator_like, namespace), 10,
                   "the default policy back in force")


def leader_slice(service: str, uid: str, ips: list[str], *, name: str | None = None,
                 managed_by: str = "leadership-operator") -> dict[str, Any]:
    """An EndpointSlice shaped as the operator writes it (`routes.leader_slice`)."""
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name or f"{service}-leader", "labels": {
            "kubernetes.io/service-name": service,
            "endpointslice.kubernetes.io/managed-by": managed_by},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service,
                                 "uid": uid, "controller": True}]},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "name": f"pod-{i}"}}
                      for i, ip in enumerate(ips)]}


def test_the_operator_may_write_only_leader_endpoints_of_one_address(
        cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient,
        service_account_kubeconfig: Callable[[str, str], Path]) -> None:
    cp = cluster.require_control_plane()
    cp.kubectl("apply", "-f", str(SLICE_POLICY))
    kubeconfig = service_account_kubeconfig(namespace, "leadership-operator")
    grant(cluster, namespace, "leadership-operator", "slices", "create,patch,delete",
          "endpointslices.discovery.k8s.io")
    operator = kubernetes.client.DiscoveryV1Api(sync_client(kubeconfig))
    admin = kubernetes.client.DiscoveryV1Api(core_api)
    uid = kubernetes.client.CoreV1Api(core_api).create_namespaced_service(namespace, {
        "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}).metadata.uid

    def create(body: dict[str, Any]) -> Callable[[], object]:
        for ep in body["endpoints"]:
            ep["targetRef"]["namespace"] = namespace
        return lambda: operator.create_namespaced_endpoint_slice(namespace, body)

    def in_force() -> bool:
        """A slice of two addresses refused (a fresh Service name each time: one admitted
        before the policy is in force is harmless; a 403 is RBAC not there yet)."""
        probe = f"probe-{uuid.uuid4().hex[:8]}"
        try:
            return "at most one address" in refused_or_empty(
                create(leader_slice(probe, uid, ["10.1.0.1", "10.1.0.2"])))
        except ApiException as exc:
            if exc.status == 403:
                return False
            raise

    eventually(in_force, 10, "the policy in force", every=0.1)
    assert "managed by leadership-operator" in refused(
        create(leader_slice("web", uid, ["10.1.0.1"], managed_by="someone-else")))
    assert "named <service>-leader" in refused(
        create(leader_slice("web", uid, ["10.1.0.1"], name="web-abcde")))
    elsewhere = leader_slice("web", uid, ["10.1.0.1"])
    elsewhere["endpoints"][0]["targetRef"]["namespace"] = "kube-system"
    assert "of a pod of its namespace" in refused(
        lambda: operator.create_namespaced_endpoint_slice(namespace, elsewhere))
    create(leader_slice("web", uid, ["10.1.0.1"]))()  # the leader endpoint: admitted
    operator.patch_namespaced_endpoint_slice("web-leader", namespace, {
        "endpoints": [{"addresses": ["10.1.0.2"], "targetRef": {
            "kind": "Pod", "namespace": namespace, "name": "pod-1"}}]})  # a handover
    operator.delete_namespaced_endpoint_slice("web-leader", namespace)
    # A slice another controller manages: neither taken over nor deleted.
    admin.create_namespaced_endpoint_slice(namespace, leader_slice(
        "web", uid, ["10.1.0.3"], managed_by="endpointslice-controller.k8s.io"))
    assert "managed by leadership-operator" in refused(
        lambda: operator.patch_namespaced_endpoint_slice("web-leader", namespace, {
            "metadata": {"labels": {
                "endpointslice.kubernetes.io/managed-by": "leadership-operator"}}}))
    assert "managed by leadership-operator" in refused(
        lambda: operator.delete_namespaced_endpoint_slice("web-leader", namespace))


PREFIX_OVERLAY = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - pod-writes-policy.yaml
patches:
  - target:
      kind: ValidatingAdmissionPolicy
      name: leadership-operator-pod-writes
    patch: |-
      - {op: replace, path: /spec/variables/0/expression, value: "'example.com/role'"}
      - {op: replace, path: /spec/variables/1/expression, value: "'example.com/election'"}
      - {op: replace, path: /spec/variables/2/expression, value: "'example.com/on-expiry'"}
"""


def pods_under_the_lease_holder_policy(cluster: Cluster, namespace: str,
                                       core_api: kubernetes.client.ApiClient,
                                       tmp_path: Path) -> dict[str, Path]:
    """The policy applied, `namespace` opted in, the example's ServiceAccount, Lease and Role
    there, a scratch Lease "probe" the pods may update too (the probe of the policy writes
    there), and pods pod-a and pod-b: a kubeconfig of each with a token bound to it."""
    cp = cluster.require_control_plane()
    cp.kubectl("apply", "-k", str(MANIFESTS / "policies" / "lease-holder"))
    cp.kubectl("label", "namespace", namespace, "leadership.dev/lease-holder-policy=enforce")
    for name in ("serviceaccount.yaml", "lease.yaml", "rbac.yaml"):
        cp.kubectl("apply", "-n", namespace, "-f", str(MANIFESTS / "example" / name))
    kubernetes.client.CoordinationV1Api(core_api).create_namespaced_lease(
        namespace, {"metadata": {"name": "probe"}, "spec": {}})
    grant(cluster, namespace, "web", "probe", "get,update", "leases.coordination.k8s.io",
          "--resource-name=probe")
    admin = kubernetes.client.CoreV1Api(core_api)
    kubeconfigs = {}
    for name in ("pod-a", "pod-b"):
        created = admin.create_namespaced_pod(namespace, {
            "metadata": {"name": name}, "spec": {"serviceAccountName": "web", "containers": [
                {"name": "app", "image": "registry.k8s.io/pause:3.10.1"}]}})
        kubeconfigs[name] = pod_bound_kubeconfig(cluster, admin, namespace, name,
                                                 created.metadata.uid, tmp_path)
    return kubeconfigs


def test_under_the_lease_holder_policy_a_pod_deletes_only_a_free_lease_or_its_own(
        cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient,
        tmp_path: Path) -> None:
    kubeconfigs = pods_under_the_lease_holder_policy(cluster, namespace, core_api, tmp_path)
    # Where RBAC grants create and delete on Leases (the example does not), the policy is
    # what stands between one pod and another's Lease.
    grant(cluster, namespace, "web", "all-leases", "get,create,update,delete",
          "leases.coordination.k8s.io")
    a, b = (kubernetes.client.CoordinationV1Api(sync_client(kubeconfigs[p]))
            for p in ("pod-a", "pod-b"))

    def create(api: Any, name: str, holder: str, transitions: int = 0) -> Callable[[], object]:
        return lambda: api.create_namespaced_lease(namespace, {
            "metadata": {"name": name}, "spec": {"holderIdentity": holder,
                                                 "leaseDurationSeconds": 15,
                                                 "leaseTransitions": transitions}})

    def in_force() -> bool:
        """A holder with a 65-character suffix refused (under a fresh name each time: one
        admitted before the policy is in force is harmless; a 403 is RBAC not there yet)."""
        try:
            return "at most 64" in refused_or_empty(
                create(a, f"probe-{uuid.uuid4().hex[:8]}", "pod-a_" + "x" * 65))
        except ApiException as exc:
            if exc.status == 403:
                return False
            raise

    eventually(in_force, 10, "the lease-holder policy in force", every=0.1)
    assert "at most 64" in refused(create(a, "x", "pod-a_bad\x01suffix"))
    assert "at most one per write" in refused(create(a, "x", "pod-a", 2**31 - 1))
    create(a, "held", "pod-a_0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")()  # a UUID suffix: fine
    create(b, "free", "")()
    assert "free or that it holds" in refused(
        lambda: b.delete_namespaced_lease("held", namespace))  # pod-a holds it
    b.delete_namespaced_lease("free", namespace)  # nobody does
    a.delete_namespaced_lease("held", namespace)  # its holder may


async def test_under_the_lease_holder_policy_a_pod_holds_a_lease_only_as_itself(
        cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient,
        tmp_path: Path) -> None:
    kubeconfigs = pods_under_the_lease_holder_policy(cluster, namespace, core_api, tmp_path)
    stores = {name: StoreFactory("kubernetes", kc, namespace) for name, kc in kubeconfigs.items()}
    try:
        store_a = await stores["pod-a"]()

        async def in_force() -> bool:
            """pod-a names pod-b the holder of the scratch Lease: refused once the policy is
            in force (and harmless before)."""
            probe = await store_a.get("probe")
            assert probe is not None
            try:
                await store_a.replace({**probe, "spec": {"holderIdentity": "pod-b"}})
            except leadership.FatalStoreError as exc:
                return exc.status == 422
            return False

        await until_allowed_async(in_force)
        lease = await store_a.get("web")
        assert lease is not None
        naming_b = {**lease, "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 15}}
        message = await refused_async(lambda: store_a.replace(naming_b))
        assert "only as itself" in message
        # As itself, the library elects: pod-a leads, with client-go's identity form too.
        a = await stores["pod-a"].candidate("web", "pod-a_3f9c", ttl=3)
        await consume(a)
        await eventually_async(lambda: a.is_leader, 10, "pod-a leads as itself")
        store_b = await stores["pod-b"]()
        held = await store_b.get("web")
        assert held is not None
        message = await refused_async(lambda: store_b.replace(
            {**held, "spec": {**held["spec"], "holderIdentity": ""}}))
        assert "only when it holds the Lease" in message
        message = await refused_async(lambda: store_b.replace(
            {**held, "spec": {**held["spec"], "holderIdentity": "pod-b",
                              "leaseDurationSeconds": 3600}}))
        assert "at most 300" in message
        message = await refused_async(lambda: store_b.replace(
            {**held, "spec": {**held["spec"], "holderIdentity": "pod-b",
                              "leaseTransitions": held["spec"]["leaseTransitions"] - 1}}))
        assert "leaseTransitions back" in message
        # A leap to the int32 maximum would wedge the election for good: refused; the +1 of
        # a change of holder is what the takeover below writes.
        message = await refused_async(lambda: store_b.replace(
            {**held, "spec": {**held["spec"], "holderIdentity": "pod-b",
                              "leaseTransitions": 2**31 - 1}}))
        assert "at most one per write" in message
        # pod-a releases as the holder; pod-b takes over as itself.
        b = await stores["pod-b"].candidate("web", "pod-b", ttl=3)
        await consume(b)
        await eventually_async(lambda: b.watching, 10, "pod-b watches")
        await a.stop()
        await eventually_async(lambda: b.is_leader, 2, "pod-b leads after pod-a released")
        await b.stop()
    finally:
        for factory in stores.values():
            await factory.close()


async def until_allowed_async(in_force: Callable[[], Any]) -> None:
    """Until `in_force()` is true: RBAC and the policy just applied take a moment to reach
    the API server's authorizer and admission (a 403 meanwhile is that moment too)."""

    async def ready() -> bool:
        try:
            return bool(await in_force())
        except leadership.PermissionDeniedError:
            return False

    await eventually_async(ready, 10, "the lease-holder policy in force", every=0.1)


async def refused_async(call: Callable[[], Any]) -> str:
    with pytest.raises(leadership.FatalStoreError) as exc:
        await call()
    assert exc.value.status == 422, exc.value
    return str(exc.value)


def pod_bound_kubeconfig(cluster: Cluster, admin: Any, namespace: str, pod_name: str, uid: str,
                         tmp_path: Path) -> Path:
    """A kubeconfig with a token of the pod's ServiceAccount bound to the pod, as a
    projected token in the pod is: it names the pod in the request's user extra."""
    token = admin.create_namespaced_service_account_token("web", namespace, {"spec": {
        "expirationSeconds": 3600, "boundObjectRef": {
            "kind": "Pod", "apiVersion": "v1", "name": pod_name, "uid": uid}}}).status.token
    config = json.loads(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    config["contexts"][0]["context"]["namespace"] = namespace
    path = tmp_path / f"kubeconfig-{pod_name}"
    path.write_text(json.dumps(config))
    return path
