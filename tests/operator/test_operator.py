"""The operator against the real control plane: labels follow the Lease within a second,
never two leaders, nothing written where it should only watch, RBAC enough and no more."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable
from pathlib import Path

import kubernetes
import pytest

from controlplane.cluster import Cluster, audit_events
from controlplane.waiting import eventually
from tests.operator.conftest import (
    TTL,
    Candidates,
    ClusterRecorder,
    OperatorProcess,
    events,
    make_pods,
)

PODS = ["web-0", "web-1", "web-2"]


def leader_of(roles: dict[str, str | None]) -> str | None:
    leaders = [p for p, r in roles.items() if r == "leader"]
    return leaders[0] if len(leaders) == 1 else None


def test_labels_follow_the_lease_through_handover_crash_and_expiry(
        cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient,
        start_operator: Callable[..., OperatorProcess], candidates: Candidates,
        recorder: ClusterRecorder) -> None:
    make_pods(core_api, namespace, PODS)
    operator = start_operator(namespace, "op-a")
    recorder.wait(lambda r: all(r.get(p) == "follower" for p in PODS), 15,
                  "every member labelled follower")

    candidates.start("web-0")
    candidates.start("web-1", kind="pykube")
    go_identity = candidates.start("web-2", kind="client-go")  # web-2_<hex>: client-go's form
    recorder.wait(lambda r: leader_of(r) is not None, 10, "a leader labelled")
    first = leader_of(recorder.current())
    assert first is not None

    # Graceful handover: the leader releases, another takes the Lease.
    before = time.monotonic()
    candidates.signal(first, signal.SIGTERM)
    recorder.wait(lambda r: leader_of(r) not in (None, first), 5, "the next leader labelled")
    second = leader_of(recorder.current())
    assert second is not None
    changed = recorder.when_holder("web", lambda h: h.split("_")[0] == second, before)
    labelled = recorder.when_role(second, "leader", before)
    assert labelled - changed <= 1.0, f"label {labelled - changed:.3f}s after the handover"

    # Crash: SIGKILL the leader; the last candidate takes over after the TTL.
    before = time.monotonic()
    candidates.signal(second, signal.SIGKILL)
    recorder.wait(lambda r: leader_of(r) not in (None, first, second), 3 * TTL + 2,
                  "the last candidate labelled leader")
    third = leader_of(recorder.current())
    assert third is not None
    changed = recorder.when_holder("web", lambda h: h.split("_")[0] == third, before)
    assert recorder.when_role(third, "leader", before) - changed <= 1.0
    if third == "web-2":
        assert go_identity.startswith("web-2_")

    # Crash with no successor: the label leaves the dead holder within 1 s of its renew
    # deadline (2/3 of the TTL after the last renewal seen, here by the recorder's own
    # watch), before its Lease expires.
    killed = time.monotonic()
    candidates.signal(third, signal.SIGKILL)
    recorder.wait(lambda r: r.get(third) == "stale", TTL + 3, "the crashed holder stale")
    renewed = recorder.last_renewal("web", killed)
    drained = recorder.when_role(third, "stale", killed) - renewed
    # (Two watches, the recorder's and the operator's, see the renewal: 0.2 s apart at most.)
    assert TTL * 2 / 3 - 0.2 <= drained <= TTL * 2 / 3 + 1.0, f"stale {drained:.2f}s after " \
                                                               "its last renewal"
    assert leader_of(recorder.current()) is None

    recorder.never_two_leaders()
    reasons = [(e.reason, e.involved_object.kind) for e in events(core_api, namespace)]
    assert ("LeaderElected", "Lease") in reasons
    assert ("LeaseExpired", "Lease") in reasons and ("LeaseExpired", "Pod") in reasons
    assert all(e.count < 10 for e in events(core_api, namespace))  # aggregated, not per renewal
    assert operator.healthz() == 200 and operator.metric("leadership_operator_active") == 1


def test_it_writes_nothing_but_role_labels_on_what_it_watches(
        cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient,
        start_operator: Callable[..., OperatorProcess], candidates: Candidates,
        recorder: ClusterRecorder) -> None:
    cp = cluster.require_control_plane()
    make_pods(core_api, namespace, PODS[:2])
    start_operator(namespace, "op-b")
    candidates.start("web-0")
    recorder.wait(lambda r: r.get("web-0") == "leader" and r.get("web-1") == "follower", 15,
                  "labels in place")
    candidates.signal("web-0", signal.SIGTERM)  # a release: the operator relabels web-0
    recorder.wait(lambda r: r.get("web-0") == "follower", 5, "the release reflected")
    v1 = kubernetes.client.CoreV1Api(core_api)
    for pod in v1.list_namespaced_pod(namespace).items:
        assert not pod.metadata.finalizers
        assert not [k for k in (pod.metadata.annotations or {}) if "kopf" in k]
        assert set(pod.metadata.labels) == {"leadership.dev/election", "leadership.dev/role"}
    lease = kubernetes.client.CoordinationV1Api(core_api).read_namespaced_lease("web",
                                                                                 namespace)
    assert not lease.metadata.finalizers and not lease.metadata.annotations
    operator_user = "system:serviceaccount:leadership-system:leadership-operator"
    writes = [e for e in audit_events(cp.audit_log, namespace, "web")
              if e["user"]["username"] == operator_user
              and e["verb"] not in ("get", "list", "watch")]
    assert writes == []
    reads = [e for e in audit_events(cp.audit_log, namespace, "web")
             if e["user"]["username"] == operator_user]
    assert len(reads) <= 3  # confirming reads only: the shared watch is cluster-wide


@pytest.mark.parametrize("verb, resource, namespace_arg", [
    ("get", "secrets", "default"),
    ("list", "secrets", "--all-namespaces"),
    ("patch", "deployments", "default"),
    ("delete", "pods", "default"),
    ("update", "leases", "default"),
    ("create", "pods", "default"),
])
def test_the_rbac_is_no_broader_than_needed(cluster: Cluster, operator_kubeconfig: Path,
                                            verb: str, resource: str,
                                            namespace_arg: str) -> None:
    cp = cluster.require_control_plane()
    scope = [namespace_arg] if namespace_arg.startswith("--") else ["-n", namespace_arg]
    answer = cp.kubectl(f"--kubeconfig={operator_kubeconfig}", "auth", "can-i", verb, resource,
                        *scope, check=False).stdout.strip()
    assert answer == "no"


def test_the_leader_endpoint_follows_the_lease_one_address_at_a_time(
        cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient,
        start_operator: Callable[..., OperatorProcess], candidates: Candidates,
        recorder: ClusterRecorder) -> None:
    v1 = kubernetes.client.CoreV1Api(core_api)
    discovery = kubernetes.client.DiscoveryV1Api(core_api)
    ips = {"web-0": "10.244.0.10", "web-1": "10.244.0.11"}
    for name, ip in ips.items():
        v1.create_namespaced_pod(namespace, {
            "metadata": {"name": name, "labels": {"leadership.dev/election": "web"}},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
                                     "ports": [{"name": "http", "containerPort": 8080}]}]}})
        # No kubelet here: the status a kubelet would report, written as the admin.
        v1.patch_namespaced_pod_status(name, namespace, {"status": {
            "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}]}})
    v1.create_namespaced_service(namespace, {
        "metadata": {"name": "web-leader", "labels": {"leadership.dev/election": "web"}},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    start_operator(namespace, "op-e")

    def addresses() -> list[str] | None:
        try:
            found = discovery.read_namespaced_endpoint_slice("web-leader-leader", namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return [a for e in found.endpoints or [] for a in e.addresses]

    eventually(lambda: addresses() == [], 15, "an empty leader endpoint: nobody leads")
    start_version = discovery.read_namespaced_endpoint_slice(
        "web-leader-leader", namespace).metadata.resource_version
    candidates.start("web-0")
    eventually(lambda: addresses() == [ips["web-0"]], 10, "web-0 in the leader endpoint")
    candidates.start("web-1")
    candidates.signal("web-0", signal.SIGTERM)  # a release: web-1 takes the Lease
    eventually(lambda: addresses() == [ips["web-1"]], 10, "web-1 in the leader endpoint")
    recorder.never_two_leaders()

    # Every version of the slice since it was empty: one address at most, each change one
    # write (empty -> web-0 -> web-1, an empty one between when the operator saw the Lease
    # free), and no other slice for the Service (the EndpointSlice controller leaves a
    # selector-less Service's slices alone).
    seen = []
    for event in kubernetes.watch.Watch().stream(
            discovery.list_namespaced_endpoint_slice, namespace,
            resource_version=start_version, timeout_seconds=1,
            label_selector="kubernetes.io/service-name=web-leader"):
        seen.append((event["object"].metadata.name,
                     [a for e in event["object"].endpoints or [] for a in e.addresses]))
    assert {name for name, _ in seen} == {"web-leader-leader"}
    listed = [found for _, found in seen]
    assert all(a != b for a, b in itertools.pairwise(listed))  # each a change
    assert [found for found in listed if found] == [[ips["web-0"]], [ips["web-1"]]]
    owner = discovery.read_namespaced_endpoint_slice("web-leader-leader", namespace)
    assert [(o.kind, o.name) for o in owner.metadata.owner_references] == [
        ("Service", "web-leader")]
