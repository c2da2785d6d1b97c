"""`leadership sidecar` against the real control plane, with exactly the rights that
manifests/example gives it (its Lease by name, created beforehand): GET /leader follows the
Lease, /healthz never depends on leading, /metrics has client-go's names, SIGTERM releases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from controlplane.cluster import Cluster, service_account_kubeconfig, wait_until_allowed
from controlplane.launcher import free_port
from controlplane.waiting import eventually
from tests.operator.conftest import ROOT

EXAMPLE = ROOT / "manifests" / "example"
TTL = 15  # long: a handover faster than this can only be the release


class Sidecar:
    def __init__(self, pod: str, namespace: str, kubeconfig: Path, log: Path,
                 *extra: str) -> None:
        self.pod, self.port, self.log = pod, free_port(), log
        env = {**os.environ, "POD_NAME": pod, "POD_NAMESPACE": namespace}
        env.pop("KUBECONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leadership_operator.cli", "sidecar", "--election=web",
             f"--port={self.port}", f"--kubeconfig={kubeconfig}", f"--lease-seconds={TTL}",
             "--log-format=text", *extra],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()
        except OSError:
            return 0, ""

    def leader(self) -> dict[str, Any] | None:
        status, body = self.get("/leader")
        return json.loads(body) if status == 200 else None

    def metric(self, line_start: str) -> float | None:
        _, body = self.get("/metrics")
        for line in body.splitlines():
            if line.startswith(line_start + " "):
                return float(line.split()[-1])
        return None

    def wait(self, predicate: Callable[[], bool], within: float, what: str) -> float:
        """`eventually`, failing at once if the sidecar exits meanwhile; the time it held."""

        def holds() -> bool:
            assert self.proc.poll() is None or what.startswith("exit"), (
                f"{self.pod} exited: {self.log.read_text()[-2000:]}")
            return predicate()

        eventually(holds, within, f"{self.pod}: {what}", every=0.01)
        return time.monotonic()


@pytest.fixture
def example_rights(cluster: Cluster, namespace: str, tmp_path: Path) -> Path:
    """manifests/example's ServiceAccount, Lease and Role in this test's namespace; a
    kubeconfig with that account's token."""
    cp = cluster.require_control_plane()
    for name in ("serviceaccount.yaml", "lease.yaml", "rbac.yaml"):
        cp.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE / name))
    path = service_account_kubeconfig(cluster.kubeconfig, namespace, "web",
                                      tmp_path / "web-kubeconfig", create=False)
    wait_until_allowed(cp, path, "update", "leases/web")
    return path


@pytest.fixture
def sidecars(namespace: str, example_rights: Path, tmp_path: Path
             ) -> Iterator[Callable[..., Sidecar]]:
    started: list[Sidecar] = []

    def start(pod: str, *extra: str) -> Sidecar:
        car = Sidecar(pod, namespace, example_rights, tmp_path / f"{pod}.log", *extra)
        started.append(car)
        return car

    yield start
    for car in started:
        if car.proc.poll() is None:
            car.proc.kill()
            car.proc.wait()


def holder(core_api: kubernetes.client.ApiClient, namespace: str) -> str:
    lease = kubernetes.client.CoordinationV1Api(core_api).read_namespaced_lease("web", namespace)
    return lease.spec.holder_identity or ""


def test_leader_health_and_metrics_follow_the_lease_and_sigterm_hands_over_at_once(
        namespace: str, core_api: kubernetes.client.ApiClient,
        sidecars: Callable[..., Sidecar]) -> None:
    a = sidecars("web-a")
    a.wait(lambda: (a.leader() or {}).get("is_leader") is True, 20, "web-a leads")
    b = sidecars("web-b")
    b.wait(lambda: (b.leader() or {}).get("leader") == "web-a", 20, "web-b sees web-a")
    # The Lease was created empty: taking it is a transition, as in client-go.
    assert a.leader() == {"leader": "web-a", "is_leader": True, "fencing_token": 1,
                          "lease": f"{namespace}/web"}
    assert b.leader() == {"leader": "web-a", "is_leader": False, "fencing_token": None,
                          "lease": f"{namespace}/web"}
    # Liveness never depends on leading.
    assert a.get("/healthz")[0] == b.get("/healthz")[0] == 200
    # client-go's metric names, so its dashboards and alerts work; and the library's own.
    assert a.metric('leader_election_master_status{name="web"}') == 1.0
    assert b.metric('leader_election_master_status{name="web"}') == 0.0
    assert b.metric('leader_election_slowpath_total{name="web"}') == 0.0
    assert a.metric('leadership_candidate_acquisitions_total{name="web"}') == 1.0
    a.wait(lambda: (a.metric('leadership_candidate_renewals_total{name="web"}') or 0) >= 1,
           TTL, "web-a renews")

    sent = time.monotonic()
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(timeout=10) == 0
    took = b.wait(lambda: (b.leader() or {}).get("is_leader") is True, TTL,
                  "web-b leads") - sent
    assert took < 2, f"handover took {took:.2f}s: the Lease was not released"
    assert b.leader() == {"leader": "web-b", "is_leader": True, "fencing_token": 2,
                          "lease": f"{namespace}/web"}
    assert holder(core_api, namespace) == "web-b"
    assert "releas" in a.log.read_text()


def test_a_crashed_leader_is_answered_as_gone_once_its_lease_runs_out(
        namespace: str, sidecars: Callable[..., Sidecar]) -> None:
    a = sidecars("web-a", "--lease-seconds=3")
    a.wait(lambda: (a.leader() or {}).get("is_leader") is True, 20, "web-a leads")
    b = sidecars("web-b", "--lease-seconds=3")
    b.wait(lambda: (b.leader() or {}).get("leader") == "web-a", 20, "web-b sees web-a")
    a.proc.kill()
    a.proc.wait()
    killed = time.monotonic()
    took = b.wait(lambda: (b.leader() or {}).get("is_leader") is True, 10, "web-b leads")
    assert took - killed < 3 + 1.5  # the Lease's 3 s, observed from web-b's last sight of it
    assert b.metric('leader_election_master_status{name="web"}') == 1.0


def test_without_rights_it_exits_1_saying_why(cluster: Cluster, namespace: str,
                                               tmp_path: Path) -> None:
    nobody = service_account_kubeconfig(cluster.kubeconfig, namespace, "nobody",
                                        tmp_path / "nobody")
    car = Sidecar("web-x", namespace, nobody, tmp_path / "x.log")
    assert car.proc.wait(timeout=30) == 1
    text = car.log.read_text()
    assert "forbidden" in text.lower() and "Traceback" not in text, text[-2000:]
