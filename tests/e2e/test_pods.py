"""Real pods: the manifests as they are, the image from the Dockerfile, traffic through the
`web-leader` Service following the Lease.

Each test starts from a settled example (three Ready pods, the Lease's holder labelled
`leader` and alone behind `web-leader`) and leaves it settled for the next.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

from controlplane.deployed import APP_NS, ELECTION, OPERATOR_NS
from controlplane.node import NODE_NAME, RuntimeEvents
from controlplane.traffic import Traffic, ask
from controlplane.waiting import eventually

from .conftest import E2ECluster

TTL = 15  # manifests/example's --lease-seconds


def settled(d: E2ECluster, within: float = 90) -> str:
    """Wait until three pods are Ready, the holder is labelled leader (the others follower),
    it alone is ready behind web-leader, and kube-proxy sends web-leader's traffic to it;
    return the leader."""
    address = d.service_ip("web-leader")

    def check() -> str | None:
        pods = d.pods()
        ready = [p for p in pods if any(c.type == "Ready" and c.status == "True"
                                        for c in p.status.conditions or [])]
        holder = d.holder()
        roles = {p.metadata.name: (p.metadata.labels or {}).get("leadership.dev/role")
                 for p in pods}
        state = d.recorder.endpoints[-1] if d.recorder.endpoints else None
        if (len(pods) == 3 and len(ready) == 3 and holder in roles
                and all(r == ("leader" if p == holder else "follower")
                        for p, r in roles.items())
                and state is not None and state.listed == (holder,)
                and state.ready == (holder,) and ask(address) == holder):
            return holder
        return None

    return str(eventually(check, within, "the example settled"))


def test_the_manifests_run_as_they_are(deployed: E2ECluster) -> None:
    leader = settled(deployed)
    web, operators = deployed.pods(), deployed.operator_pods()
    assert len(web) == 3 and len(operators) == 2
    for pod in [*web, *operators]:
        assert pod.spec.node_name == NODE_NAME
        statuses = [*(pod.status.init_container_statuses or []),
                    *pod.status.container_statuses]
        assert all(c.ready and c.restart_count == 0 for c in statuses), pod.metadata.name
        images = {c.name: c.image for c in statuses}
        assert images.get("leadership", images.get("operator")) == "docker.io/library/" \
                                                                  "leadership:0.1.0"
    assert deployed.holder() == leader
    # The operator replicas elected their active one with their own Lease, through the
    # in-cluster configuration (their only way to the API server: the kubernetes Service).
    assert deployed.holder("leadership-operator", OPERATOR_NS) in {
        p.metadata.name for p in operators}
    assert all("--kubeconfig" not in " ".join(c.args or []) for p in operators
               for c in p.spec.containers)


def test_every_container_runs_hardened_as_the_manifests_say(deployed: E2ECluster) -> None:
    settled(deployed)
    checked = 0
    for pod in [*deployed.pods(), *deployed.operator_pods()]:
        namespace = pod.metadata.namespace
        for container in ["leadership", "app"] if namespace == APP_NS else ["operator"]:
            pids = deployed.pids(pod.metadata.name, container, namespace)
            assert pids, f"no process found for {pod.metadata.name}/{container}"
            for pid in pids:
                status = Path(f"/proc/{pid}/status").read_text()
                fields = dict(line.split(":\t", 1) for line in status.splitlines()
                              if ":\t" in line)
                assert fields["Uid"].split()[:2] == ["10001", "10001"], (pod.metadata.name,
                                                                       container)
                assert fields["Gid"].split()[0] == "10001"
                assert fields["NoNewPrivs"].strip() == "1"
                assert int(fields["CapEff"], 16) == 0
                assert fields["Seccomp"].strip() == "2"  # a filter: RuntimeDefault
                root = next(line for line in Path(f"/proc/{pid}/mountinfo").read_text()
                            .splitlines() if line.split()[4] == "/")
                assert re.match(r"ro\b", root.split()[5]), root
                checked += 1
    assert checked >= 2 * 3 + 2  # every container of the 3 app pods and the 2 operators


def probe_results(d: E2ECluster) -> tuple[set[tuple[str, str]], list[str]]:
    """(container, probe type) pairs with a successful probe, and failed liveness probes,
    from the kubelet's own counters."""
    metrics = d.cp.kubectl("get", "--raw",
                           f"/api/v1/nodes/{NODE_NAME}/proxy/metrics/probes").stdout
    passed = {(m.group(1), m.group(2)) for m in re.finditer(
        r'prober_probe_total\{container="([^"]+)".*?probe_type="(\w+)",'
        r'result="successful"\} (\d+)', metrics) if int(m.group(3)) > 0}
    failed = re.findall(r'prober_probe_total\{[^}]*probe_type="Liveness",result="failed"\} '
                        r'[1-9]', metrics)
    return passed, failed


def test_the_kubelet_probes_pass(deployed: E2ECluster) -> None:
    settled(deployed)
    wanted = {("operator", "Readiness"), ("app", "Readiness"), ("leadership", "Startup"),
              ("operator", "Liveness"), ("leadership", "Liveness")}
    # Liveness probes start after 10 s (the operator's initial delay, the sidecar's period).
    _, failed = eventually(lambda: (
        result if wanted <= (result := probe_results(deployed))[0] else None), 60,
                           "every kind of probe passed once", every=1)
    # Readiness may fail while a container starts (that is what it is for); liveness never.
    assert failed == [], failed


def test_requests_through_the_leader_service_reach_the_leader(deployed: E2ECluster) -> None:
    leader = settled(deployed)
    traffic = Traffic(deployed.service_ip("web-leader"), interval=0.02).start()
    eventually(lambda: len(traffic.snapshot()) >= 100, 20, "100 answers")
    answers = traffic.stop()
    assert {a.body for a in answers} == {leader}, {a.body or a.error for a in answers}


def test_deleting_the_leader_pod_releases_the_lease_and_a_follower_takes_it_at_once(
        deployed: E2ECluster) -> None:
    leader = settled(deployed)
    before = {p.metadata.name for p in deployed.pods()}
    app_id = deployed.container_id(leader, "app")
    sidecar_id = deployed.container_id(leader, "leadership")
    events = deployed.node.events()
    traffic = Traffic(deployed.service_ip("web-leader"), interval=0.02).start()
    try:
        deleted, deleted_unix = time.monotonic(), time.time()
        deployed.v1.delete_namespaced_pod(leader, APP_NS)
        _, new = eventually(lambda: deployed.recorder.next_holder(ELECTION, deleted, leader),
                            10, "a new holder")
        took = deployed.recorder.when_holder(ELECTION, lambda h: h == new, deleted) - deleted
        # The stages, in seconds after the delete: the kubelet stops the app, then the
        # native sidecar (SIGTERM), whose handler releases the Lease; a follower takes it.
        # Up to the sidecar's SIGTERM it is the kubelet's time (0.1 to 1.1 s seen here, on
        # the node's first pod deletion; docs/node.md measures it over 30 trials).
        app_exit = eventually(lambda: _exit_time(events, app_id), 10,
                              "the app's exit event") - deleted_unix
        sidecar_exit = eventually(lambda: _exit_time(events, sidecar_id), 10,
                                  "the sidecar's exit event") - deleted_unix
        released = next((t - deleted for t, h in deployed.recorder.holder_changes(
            ELECTION, deleted) if h == ""), None)
        stages = (f"after the delete: app exited {app_exit:.2f} s, the Lease released "
                  f"{'never' if released is None else f'{released:.2f} s'}, a new holder "
                  f"{took:.2f} s, the sidecar exited {sidecar_exit:.2f} s (TTL {TTL})")
        print(stages)
        # SIGTERM released it: the holder cleared it (an expiry writes nothing; a follower
        # would take it from the old holder 15 s on), and a follower held it within a
        # second of the release.
        assert released is not None, stages
        assert took - released < 1.0, stages
        behind = eventually(lambda: next(
            (e for e in list(deployed.recorder.endpoints)
             if e.seen >= deleted and e.listed == (new,)), None),
                            10, "the new leader behind web-leader")
        answered = eventually(lambda: traffic.first_answer_from(new, deleted),
                              10, "an answer from the new leader")
        settled(deployed)
    finally:
        answers = traffic.stop()
        events.close()
    print(f"delete -> new holder {took * 1000:.0f} ms, -> endpoint "
          f"{(behind.seen - deleted) * 1000:.0f} ms, -> answer "
          f"{(answered.done - deleted) * 1000:.0f} ms")
    assert behind.seen - deleted < 3.0
    assert deployed.recorder.not_from_holder(ELECTION, answers) == []
    # The native sidecar stops after the app: the app's process exited first.
    assert events.when("/tasks/exit", app_id) < events.when("/tasks/exit", sidecar_id)
    # ... and in the replacement pod it started before the app.
    replacement = next(p.metadata.name for p in deployed.pods()
                       if p.metadata.name not in before)
    assert events.when("/tasks/start", deployed.container_id(replacement, "leadership")) < \
        events.when("/tasks/start", deployed.container_id(replacement, "app"))
    deployed.recorder.never_two_leaders()
    deployed.recorder.never_two_endpoints()


def _exit_time(events: RuntimeEvents, container_id: str) -> float | None:
    try:
        return events.when("/tasks/exit", container_id)
    except LookupError:
        return None


def test_a_frozen_leader_leaves_the_service_before_its_lease_expires(
        deployed: E2ECluster) -> None:
    leader = settled(deployed)
    # Freeze only the sidecar, the Lease's holder: the pod stays Running and Ready (the
    # app answers), so only the operator's reading of the Lease can take it out.
    frozen = deployed.freeze(leader, ("leadership",))
    stopped = time.monotonic()
    try:
        gone = eventually(lambda: next(
            (e for e in list(deployed.recorder.endpoints)
             if e.seen >= stopped and leader not in e.listed), None),
                          TTL + 10, "the frozen leader out of web-leader")
        renewed = deployed.recorder.last_renewal(ELECTION, stopped)
        # At its renew deadline (2/3 of the TTL without a renewal) the operator labels it
        # `stale`: out of the Service before any successor may take the Lease.
        labels = [r for t, pod, r in list(deployed.recorder.roles)
                  if pod == leader and t >= stopped]
        assert labels and labels[0] == "stale", labels
        after = gone.seen - renewed
        assert TTL * 2 / 3 - 1 < after < TTL, f"left the Service {after:.2f} s after its " \
                                              f"last renewal (Lease {TTL} s)"
        began, successor = eventually(
            lambda: deployed.recorder.next_holder(ELECTION, stopped, leader), 10 + TTL,
            "a successor")
        assert began - gone.seen > 1.0, "the successor's term began before the drain had " \
                                        "a second to reach kube-proxy"
        eventually(lambda: next(
            (e for e in list(deployed.recorder.endpoints)
             if e.seen >= gone.seen and e.listed == (successor,)), None),
                   10, "the successor behind web-leader")
    finally:
        deployed.thaw(frozen)
    # Thawed, the old sidecar finds it lost the Lease and follows; the labels agree.
    eventually(lambda: deployed.recorder.current().get(leader) == "follower",
               20, f"{leader} labelled follower again")
    settled(deployed)
    deployed.recorder.never_two_leaders()
    deployed.recorder.never_two_endpoints()


def test_a_rolling_update_hands_over_pod_by_pod(deployed: E2ECluster) -> None:
    first = settled(deployed)
    old = {p.metadata.name for p in deployed.pods()}
    traffic = Traffic(deployed.service_ip("web-leader"), interval=0.02).start()
    started = time.monotonic()
    try:
        deployed.cp.kubectl("-n", APP_NS, "rollout", "restart", "deployment/web")
        deployed.rollout_status(APP_NS, "web")
        leader = settled(deployed)
    finally:
        answers = traffic.stop()
    assert leader not in old, f"{first} led before the update, {leader} after it"
    assert not {p.metadata.name for p in deployed.pods()} & old
    changes = [h for _, h in deployed.recorder.holder_changes(ELECTION, started) if h]
    silence = traffic.longest_silence(started, answers[-1].sent)
    print(f"rolling update: {len(changes)} new holders, longest silence {silence:.2f} s, "
          f"{sum(a.body is None for a in answers)} of {len(answers)} requests failed")
    assert deployed.recorder.not_from_holder(ELECTION, answers) == []
    assert silence < 5.0
    deployed.recorder.never_two_leaders()
    deployed.recorder.never_two_endpoints()


def test_the_standby_operator_takes_over_when_the_active_pod_goes(
        deployed: E2ECluster) -> None:
    settled(deployed)
    active = deployed.holder("leadership-operator", OPERATOR_NS)
    deployed.v1.delete_namespaced_pod(active, OPERATOR_NS)
    took = time.monotonic()
    eventually(lambda: deployed.holder(
        "leadership-operator", OPERATOR_NS) not in ("", active), 20, "another active operator")
    took = time.monotonic() - took
    # The labels keep following the Lease under the new active replica.
    leader = settled(deployed)
    deployed.signal(leader, ("leadership",), signal.SIGTERM)
    eventually(lambda: next(
        (p for p in deployed.labelled("leader") if p != leader), None), 20, "a new leader labelled")
    settled(deployed)
    print(f"standby active {took:.2f} s after the delete")
    deployed.cp.kubectl("-n", OPERATOR_NS, "rollout", "status",
                        "deployment/leadership-operator", "--timeout=120s", timeout=130)


def test_under_the_lease_holder_policy_a_pod_cannot_name_another_holder(
        deployed: E2ECluster, tmp_path: Path) -> None:
    """The example's namespace opts into manifests/policies/lease-holder, which the e2e
    cluster installs, so the sidecars of the tests above elect, hand over and release under
    it. With a token bound to a follower pod, as that pod's sidecar has, naming any other
    holder is refused."""
    import json

    import kubernetes

    from controlplane.clients import sync_client

    leader = settled(deployed)
    follower = next(p for p in deployed.pods() if p.metadata.name != leader)
    token = deployed.v1.create_namespaced_service_account_token("web", APP_NS, {"spec": {
        "expirationSeconds": 600, "boundObjectRef": {
            "kind": "Pod", "apiVersion": "v1", "name": follower.metadata.name,
            "uid": follower.metadata.uid}}}).status.token
    config = json.loads(deployed.cp.kubeconfig.read_text())
    config["users"] = [{"name": "pod", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "pod"
    path = tmp_path / "as-pod"
    path.write_text(json.dumps(config))
    leases = kubernetes.client.CoordinationV1Api(sync_client(path))
    lease = leases.read_namespaced_lease(ELECTION, APP_NS)
    lease.spec.holder_identity = "someone-else"
    try:
        leases.replace_namespaced_lease(ELECTION, APP_NS, lease)
    except kubernetes.client.ApiException as exc:
        assert exc.status == 422 and "only as itself" in exc.body, exc.body
    else:
        raise AssertionError("a pod named another holder")
    assert deployed.holder() == leader
