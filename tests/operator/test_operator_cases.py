"""The operator's other promises on the real control plane: a standby takes over without
flapping, hand-edited labels are put right, and bad input gets a Warning, never a crash or a
wrong label."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import kubernetes
import pytest

from controlplane.cluster import Cluster, kubeconfig_via, proxy_to
from controlplane.proxy import TcpProxy
from controlplane.waiting import eventually
from tests.operator.conftest import (
    ROLE,
    ROOT,
    TTL,
    Candidates,
    ClusterRecorder,
    OperatorProcess,
    events,
    make_pods,
)


def wait_for(predicate: Callable[[], bool], within: float, what: str) -> float:
    """`eventually`, and the seconds it took."""
    start = time.monotonic()
    eventually(predicate, within, what)
    return time.monotonic() - start


def test_a_standby_takes_over_within_ttl_and_flaps_nothing(
        namespace: str, core_api: kubernetes.client.ApiClient,
        start_operator: Callable[..., OperatorProcess], candidates: Candidates,
        recorder: ClusterRecorder) -> None:
    make_pods(core_api, namespace, ["web-0", "web-1"])
    active = start_operator(namespace, "op-1")
    wait_for(lambda: active.metric("leadership_operator_active") == 1, 10, "op-1 active")
    standby = start_operator(namespace, "op-2")
    wait_for(lambda: standby.metric("leadership_operator_active") == 0, 10, "op-2 standby")
    candidates.start("web-0")
    recorder.wait(lambda r: r == {"web-0": "leader", "web-1": "follower"}, 10, "labels")
    changes_before = len(recorder.roles)

    killed = time.monotonic()
    active.stop(signal.SIGKILL)
    took = wait_for(lambda: standby.metric("leadership_operator_active") == 1, TTL + 2,
                    "the standby takes over")
    assert took <= TTL + 1
    assert len(recorder.roles) == changes_before  # the resync changed nothing: no flapping

    candidates.start("web-1")
    candidates.signal("web-0", signal.SIGTERM)  # the new active replica labels the handover
    recorder.wait(lambda r: r == {"web-0": "follower", "web-1": "leader"}, 3, "relabelled")
    assert recorder.when_role("web-1", "leader", killed) - killed < 10
    recorder.never_two_leaders()


def test_a_stopped_active_replica_releases_and_the_standby_takes_over_at_once(
        namespace: str, start_operator: Callable[..., OperatorProcess]) -> None:
    long = "--lease-seconds=15"  # a takeover faster than this can only be the release
    active = start_operator(namespace, "op-1", long)
    wait_for(lambda: active.metric("leadership_operator_active") == 1, 10, "op-1 active")
    standby = start_operator(namespace, "op-2", long)
    wait_for(lambda: standby.metric("leadership_operator_active") == 0, 10, "op-2 standby")
    stopped = time.monotonic()
    active.stop(signal.SIGTERM)  # a rolling update
    assert active.proc.returncode == 0
    assert time.monotonic() - stopped < 3, "it took long to stop"
    took = wait_for(lambda: standby.metric("leadership_operator_active") == 1, 15,
                    "the standby takes over")
    assert took < 2, f"the standby took {took:.1f}s: the Lease was not released"
    assert "released the lease" in active.log.read_text()


def test_hand_edited_labels_are_put_right(
        namespace: str, core_api: kubernetes.client.ApiClient,
        start_operator: Callable[..., OperatorProcess], candidates: Candidates,
        recorder: ClusterRecorder) -> None:
    make_pods(core_api, namespace, ["web-0", "web-1"])
    start_operator(namespace, "op-d", "--resync-seconds=1")
    candidates.start("web-0")
    recorder.wait(lambda r: r == {"web-0": "leader", "web-1": "follower"}, 10, "labels")
    v1 = kubernetes.client.CoreV1Api(core_api)
    v1.patch_namespaced_pod("web-1", namespace, {"metadata": {"labels": {ROLE: "leader"}}})
    v1.patch_namespaced_pod("web-0", namespace, {"metadata": {"labels": {ROLE: None}}})
    recorder.wait(lambda r: r == {"web-0": "leader", "web-1": "follower"}, 2, "put right")


@pytest.fixture
def other_namespace(make_namespace: Callable[[], str]) -> str:
    return make_namespace()


def test_bad_input_gets_a_warning_never_a_crash_or_a_wrong_label(
        cluster: Cluster, namespace: str, other_namespace: str,
        core_api: kubernetes.client.ApiClient,
        start_operator: Callable[..., OperatorProcess]) -> None:
    leases = kubernetes.client.CoordinationV1Api(core_api)
    v1 = kubernetes.client.CoreV1Api(core_api)

    def lease(name: str, holder: str, duration: int = 30) -> None:
        leases.create_namespaced_lease(namespace, {"metadata": {"name": name}, "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": duration}})

    def role(pod: str, ns: str = namespace) -> str | None:
        return (v1.read_namespaced_pod(pod, ns).metadata.labels or {}).get(ROLE)

    def warnings() -> set[tuple[str, str, str]]:
        return {(e.reason, e.involved_object.kind, e.involved_object.name)
                for e in events(core_api, namespace) if e.type == "Warning"}

    # A holder that matches no member pod (its pod lives in another namespace).
    make_pods(core_api, namespace, ["a-0"], election="alpha")
    make_pods(core_api, other_namespace, ["elsewhere-0"], election="alpha")
    lease("alpha", "elsewhere-0")
    # A Lease without renewTime (garbage, zero and negative values are refused by the API
    # server itself; decide() is unit-tested on them), and an absurd duration.
    make_pods(core_api, namespace, ["b-0"], election="bravo")
    lease("bravo", "b-0")
    make_pods(core_api, namespace, ["c-0"], election="charlie")
    lease("charlie", "c-0", 2**31 - 1)
    # A Lease that will be deleted under its labelled leader, and a leader that will be
    # relabelled out of its election.
    make_pods(core_api, namespace, ["d-0", "d-1"], election="delta")
    lease("delta", "d-0")
    make_pods(core_api, namespace, ["e-0"], election="echo")
    lease("echo", "e-0")
    # An election label that is no Lease name.
    make_pods(core_api, namespace, ["f-0"], election="Not_A_Lease")

    operator = start_operator(None, "op-x")  # all namespaces
    wait_for(lambda: role("a-0") == "follower" and role("b-0") == "leader"
             and role("c-0") == "leader" and role("d-0") == "leader"
             and role("e-0") == "leader", 15, "the first labels")
    assert role("elsewhere-0", other_namespace) == "follower"  # never the other's leader
    assert role("f-0") is None
    wait_for(lambda: {("HolderNotFound", "Lease", "alpha"), ("MalformedLease", "Lease", "bravo"),
                      ("LeaseDurationTooLong", "Lease", "charlie"),
                      ("BadElectionLabel", "Pod", "f-0")} <= warnings(), 5, "the warnings")

    leases.delete_namespaced_lease("delta", namespace)
    took = wait_for(lambda: role("d-0") == "follower", 2, "the label gone with the Lease")
    assert took <= 1.0
    v1.patch_namespaced_pod("e-0", namespace, {"metadata": {"labels": {
        "leadership.dev/election": None}}})
    wait_for(lambda: role("e-0") is None, 2, "the role label gone with the membership")

    assert operator.proc.poll() is None and operator.healthz() == 200
    log = operator.log.read_text()
    assert "Traceback" not in log, log[-3000:]


def test_an_opted_in_holder_is_deleted_when_its_lease_expires_under_it(
        cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient,
        start_operator: Callable[..., OperatorProcess], candidates: Candidates,
        recorder: ClusterRecorder) -> None:
    cp = cluster.require_control_plane()
    overlay = ROOT / "manifests" / "operator" / "overlays" / "delete-pods"
    cp.kubectl("apply", "-k", str(overlay))
    try:
        v1 = kubernetes.client.CoreV1Api(core_api)
        for name, annotations in (("web-0", {"leadership.dev/on-expiry": "delete-pod"}),
                                  ("web-1", {})):
            v1.create_namespaced_pod(namespace, {
                "metadata": {"name": name, "annotations": annotations,
                             "labels": {"leadership.dev/election": "web"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/a:1"}]}})
        start_operator(namespace, "op-del")
        candidates.start("web-0")
        recorder.wait(lambda r: r.get("web-0") == "leader", 10, "web-0 leads")
        killed = time.monotonic()
        candidates.signal("web-0", signal.SIGKILL)
        wait_for(lambda: "web-0" not in [p.metadata.name for p in
                                         v1.list_namespaced_pod(namespace).items],
                 TTL + 3, "the stale holder deleted")
        assert time.monotonic() - killed <= TTL + 2
        assert recorder.when_role("web-0", "stale", killed) <= time.monotonic()  # labelled first
        assert "DeletingStalePod" in {e.reason for e in events(core_api, namespace)}
        assert v1.read_namespaced_pod("web-1", namespace)  # not opted in: kept
    finally:
        cp.kubectl("delete", "-f", str(overlay / "delete-pods-rbac.yaml"))


ProxiedOperator = Callable[..., AbstractContextManager[tuple[OperatorProcess, TcpProxy]]]


@pytest.fixture
def proxied_operator(cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient,
                     operator_kubeconfig: Path, tmp_path: Path,
                     start_operator: Callable[..., OperatorProcess], candidates: Candidates,
                     recorder: ClusterRecorder) -> ProxiedOperator:
    """Pods web-0 and web-1, an operator reaching the API server through a fault proxy (its
    own Lease renewed every 5 s only), and web-0 leading and labelled so."""

    @contextmanager
    def start(identity: str, *extra: str) -> Iterator[tuple[OperatorProcess, TcpProxy]]:
        make_pods(core_api, namespace, ["web-0", "web-1"])
        with proxy_to(cluster.kubeconfig) as proxy:
            via = kubeconfig_via(proxy, operator_kubeconfig, tmp_path / "via-proxy")
            operator = start_operator(namespace, identity, "--lease-seconds=15", *extra,
                                      kubeconfig=via)
            candidates.start("web-0")
            recorder.wait(lambda r: r == {"web-0": "leader", "web-1": "follower"}, 15,
                          "labels")
            try:
                yield operator, proxy
            finally:
                operator.stop()  # before its proxy goes away

    return start


def test_a_silent_lease_watch_never_takes_the_label_from_a_live_leader(
        proxied_operator: ProxiedOperator, candidates: Candidates,
        recorder: ClusterRecorder) -> None:
    with proxied_operator("op-silent") as (_, proxy):
        # Its own Lease renews rarely, so the busy link is the Lease watch.
        watch = proxy.busiest_link()
        proxy.blackhole([watch])
        started = time.monotonic()
        while time.monotonic() - started < 3 * TTL:  # several expiries' worth of silence
            assert recorder.current().get("web-0") == "leader", recorder.roles[-3:]
            time.sleep(0.05)
        assert watch.blackholed
        candidates.start("web-1")
        candidates.signal("web-0", signal.SIGTERM)  # the change still arrives (fresh watch)
        recorder.wait(lambda r: r == {"web-0": "follower", "web-1": "leader"}, TTL + 1,
                      "the handover labelled")
    recorder.never_two_leaders()



def test_healthz_fails_when_the_operator_is_cut_off_and_no_label_moves(
        proxied_operator: ProxiedOperator, recorder: ClusterRecorder) -> None:
    silence = 3.0
    with proxied_operator("op-cut", f"--healthz-silence-seconds={silence}") as (operator,
                                                                                 proxy):
        assert operator.healthz() == 200  # the candidate's renewals keep the watch busy
        proxy.partition()  # every connection of the operator, open or new, goes silent
        cut = time.monotonic()
        eventually(lambda: operator.healthz() != 200, silence + 2, "/healthz failing")
        assert time.monotonic() - cut >= silence - 0.1  # not before the silence it allows
        assert recorder.current() == {"web-0": "leader", "web-1": "follower"}
        assert operator.proc.poll() is None  # cut off is not a crash
    recorder.never_two_leaders()
