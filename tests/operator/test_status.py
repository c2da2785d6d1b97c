"""`leadership status`: the row of each election is a pure function (tested exactly), and the
command against the real control plane shows a disagreement between Lease and labels."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import kubernetes
import pytest

from controlplane.cluster import Cluster
from leadership.toolkit import format_microtime
from leadership_operator.contract import Labels
from leadership_operator.status import election_row, render
from tests.operator.conftest import ROLE, ROOT, make_pods

NOW = datetime.datetime(2026, 11, 27, 12, 0, 0, tzinfo=datetime.UTC)
LABELS = Labels()


def lease(holder: str, renewed_ago: float, duration: int = 10,
          transitions: int = 3) -> dict[str, Any]:
    renewed = NOW - datetime.timedelta(seconds=renewed_ago)
    return {"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "renewTime": format_microtime(renewed), "leaseTransitions": transitions}}


def pods(**roles: str | None) -> list[dict[str, Any]]:
    return [{"metadata": {"name": name, "labels": {
        LABELS.election: "web", **({LABELS.role: role} if role else {})}}}
        for name, role in roles.items()]


def row(the_lease: dict[str, Any] | None, members: list[dict[str, Any]]) -> Any:
    return election_row("ns", "web", the_lease, members, LABELS, NOW)


def test_an_agreeing_election_has_no_disagreement() -> None:
    r = row(lease("a", 2.5), pods(a="leader", b="follower"))
    assert (r.holder, r.labelled_leader, r.renewed_seconds_ago, r.transitions, r.members,
            r.lease_state, r.disagreement) == ("a", ["a"], 2.5, 3, 2, "leading", "")
    client_go = row(lease("a_4f1c", 1), pods(a="leader", b="follower"))
    assert client_go.disagreement == ""


@pytest.mark.parametrize("the_lease, roles, says", [
    (lease("a", 1), {"a": "follower", "b": "leader"}, "holder pod a is not the one labelled"),
    (lease("a", 1), {"a": None, "b": "follower"}, "holder pod a is not the one labelled"),
    (lease("a", 1), {"a": "leader", "b": "leader"}, "2 pods labelled leader"),
    (lease("a", 30), {"a": "leader", "b": "follower"}, "labelled leader but the Lease is "
                                                      "expired"),
    (lease("", 1), {"a": "leader"}, "labelled leader but the Lease is free"),
    (None, {"a": "leader"}, "labelled leader but the Lease is missing"),
    (None, {"a": "follower"}, "no such Lease: a typo in the election label"),
    (lease("zz", 1), {"a": "follower"}, "the holder matches no member pod"),
])
def test_each_disagreement_is_named(the_lease: dict[str, Any] | None,
                                    roles: dict[str, str | None], says: str) -> None:
    assert says in row(the_lease, pods(**roles)).disagreement


def test_a_late_holder_is_drained_by_its_own_renew_deadline() -> None:
    late = row(lease("a", 8), pods(a="leader", b="follower"))
    assert (late.lease_state, late.disagreement) == ("late",
                                                     "labelled leader but the Lease is late")
    assert "a (late)" in render([late], "table", color=False)
    declared = pods(a="leader", b="follower")
    declared[0]["metadata"]["annotations"] = {LABELS.renew_deadline: "9"}
    assert row(lease("a", 8), declared).lease_state == "leading"


def test_an_expired_holder_with_a_stale_label_agrees() -> None:
    r = row(lease("a", 30), pods(a="stale", b="follower"))
    assert (r.lease_state, r.disagreement) == ("expired", "")


def test_the_table_marks_disagreements_and_json_carries_every_field() -> None:
    rows = [row(lease("a", 1), pods(a="leader")), row(lease("a", 1), pods(a="follower",
                                                                          b="leader"))]
    text = render(rows, "table", color=False).splitlines()
    assert text[0].split()[:3] == ["NAMESPACE", "LEASE", "HOLDER"]
    assert "!" not in text[1] and "! holder pod a is not the one labelled leader" in text[2]
    assert "\033[1;31m" in render(rows, "table", color=True).splitlines()[2]
    data = json.loads(render(rows, "json", color=False))["elections"]
    assert data[1]["disagreement"] and data[1]["labelled_leader"] == ["b"]
    assert set(data[0]) >= {"namespace", "lease", "holder", "labelled_leader",
                            "renewed_seconds_ago", "transitions", "members", "disagreement"}


def status(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "leadership_operator.cli", "status",
                           f"--kubeconfig={cluster.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def put_lease(core_api: kubernetes.client.ApiClient, namespace: str, holder: str) -> None:
    api = kubernetes.client.CoordinationV1Api(core_api)
    body = {"metadata": {"name": "web"}, "spec": {
        "holderIdentity": holder, "leaseDurationSeconds": 600, "leaseTransitions": 1,
        "renewTime": format_microtime(datetime.datetime.now(datetime.UTC))}}
    try:
        api.replace_namespaced_lease("web", namespace, {
            **body, "metadata": {"name": "web", "resourceVersion": api.read_namespaced_lease(
                "web", namespace).metadata.resource_version}})
    except kubernetes.client.ApiException as exc:
        assert exc.status == 404
        api.create_namespaced_lease(namespace, body)


def test_the_command_shows_the_disagreement_of_a_real_election(
        cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient) -> None:
    make_pods(core_api, namespace, ["web-0", "web-1"])
    v1 = kubernetes.client.CoreV1Api(core_api)
    put_lease(core_api, namespace, "web-0")
    v1.patch_namespaced_pod("web-1", namespace, {"metadata": {"labels": {ROLE: "leader"}}})
    done = status(cluster, "-n", namespace, "-o", "json")
    assert done.returncode == 0, done.stderr
    [election] = json.loads(done.stdout)["elections"]
    assert (election["namespace"], election["lease"], election["holder"],
            election["labelled_leader"], election["members"], election["transitions"]) == (
        namespace, "web", "web-0", ["web-1"], 2, 1)
    assert "holder pod web-0 is not the one labelled leader" in election["disagreement"]
    table = status(cluster, "-n", namespace).stdout.splitlines()
    assert len(table) == 2 and table[1].startswith(namespace) and "! holder pod" in table[1]
    # Every namespace (the default) includes this one.
    assert any(line.startswith(namespace) for line in status(cluster).stdout.splitlines())


def test_watch_prints_again_when_the_election_changes(
        cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient) -> None:
    make_pods(core_api, namespace, ["web-0", "web-1"])
    put_lease(core_api, namespace, "web-0")
    proc = subprocess.Popen([sys.executable, "-m", "leadership_operator.cli", "status",
                             f"--kubeconfig={cluster.kubeconfig}", "-n", namespace,
                             "--watch", "--interval=0.2", "-o", "json"],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        first = [proc.stdout.readline() for _ in range(3)]
        assert '"elections"' in "".join(first)
        put_lease(core_api, namespace, "web-1")
        deadline = time.monotonic() + 20
        seen = ""
        while '"holder": "web-1"' not in seen:
            assert time.monotonic() < deadline, "the change was never printed"
            seen += proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_a_renew_time_ahead_of_the_servers_clock_is_a_note_not_a_disagreement() -> None:
    r = row(lease("a", -3600), pods(a="leader", b="follower"))
    assert (r.lease_state, r.disagreement) == ("leading", "")
    assert any("3600s ahead of the API server's clock" in p for p in r.problems)
    assert "in 3600s (holder's clock ahead)" in render([r], "table", color=False)
    # Within the second of the Date header's resolution: neither late nor ahead (the renew
    # deadline of a 10 s Lease is 6.67 s), nor expired.
    edge = row(lease("a", 7.5), pods(a="leader"))
    assert (edge.lease_state, edge.disagreement) == ("leading", "")
    drained = row(lease("a", 10.5), pods(a="stale"))
    assert (drained.lease_state, drained.disagreement) == ("late", "")
    just = row(lease("a", -0.4), pods(a="leader"))  # renewed in the Date header's second
    assert (just.renewed_seconds_ago, just.problems) == (0.0, [])


def test_a_lease_no_pod_is_a_member_of_never_disagrees() -> None:
    r = row(lease("kube-apiserver-abc", 1), [])
    assert (r.members, r.disagreement) == (0, "")


def test_a_holder_with_terminal_escapes_is_printed_escaped() -> None:
    text = render([row(lease("\x1b]0;pwned\x07web", 1), pods(web="follower"))], "table",
                  color=False)
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b]0;pwned\\x07web" in text


async def test_a_pod_whose_election_label_is_no_lease_name_is_no_election() -> None:
    from leadership.testing import ManualClock
    from leadership_operator.status import collect
    from leadership_operator.testing import FakeKube

    kube = FakeKube(ManualClock())
    kube.put_pod("ns", "typo", {LABELS.election: "Not_A_Lease"})
    kube.put_pod("ns", "web-0", {LABELS.election: "web"})
    rows = await collect(kube, ["ns"], LABELS, all_leases=False)
    assert [(r.lease, r.members) for r in rows] == [("web", 1)]


def test_status_judges_time_by_the_api_servers_clock_not_this_machines(
        cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient) -> None:
    from chaos.run import FAKETIME_LIB

    make_pods(core_api, namespace, ["web-0", "web-1"])
    put_lease(core_api, namespace, "web-0")
    v1 = kubernetes.client.CoreV1Api(core_api)
    v1.patch_namespaced_pod("web-0", namespace, {"metadata": {"labels": {ROLE: "leader"}}})
    for offset in ("+1h", "-1h"):  # this machine's wall clock an hour off, either way
        done = subprocess.run(
            [sys.executable, "-m", "leadership_operator.cli", "status",
             f"--kubeconfig={cluster.kubeconfig}", "-n", namespace, "-o", "json"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
            env={**os.environ, "LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": offset,
                 "FAKETIME_DONT_FAKE_MONOTONIC": "1", "DONT_FAKE_MONOTONIC": "1"})
        assert done.returncode == 0, done.stderr
        [election] = json.loads(done.stdout)["elections"]
        assert (election["lease_state"], election["disagreement"]) == ("leading", ""), offset
        assert 0 <= election["renewed_seconds_ago"] < 60, (offset, election)
