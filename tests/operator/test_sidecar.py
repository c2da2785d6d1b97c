"""`leadership sidecar` against the real control plane, with exactly the rights that
manifests/example gives it (its Lease by name, created beforehand): GET /leader follows the
Lease, /healthz never depends on leading, /metrics has client-go's names, SIGTERM releases."""

from __future__ import annotations

import contextlib
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
from controlplane.processes import free_port
from controlplane.waiting import eventually
from leadership_operator.http import IDLE_TIMEOUT
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


def lease_uid(core_api: kubernetes.client.ApiClient, namespace: str) -> str:
    lease = kubernetes.client.CoordinationV1Api(core_api).read_namespaced_lease("web", namespace)
    return str(lease.metadata.uid)


def test_leader_health_and_metrics_follow_the_lease_and_sigterm_hands_over_at_once(
        namespace: str, core_api: kubernetes.client.ApiClient,
        sidecars: Callable[..., Sidecar]) -> None:
    a = sidecars("web-a")
    a.wait(lambda: (a.leader() or {}).get("is_leader") is True, 20, "web-a leads")
    b = sidecars("web-b")
    b.wait(lambda: (b.leader() or {}).get("leader") == "web-a", 20, "web-b sees web-a")
    # The Lease was created empty: taking it is a transition, as in client-go.
    uid = lease_uid(core_api, namespace)
    assert a.leader() == {"leader": "web-a", "is_leader": True, "role": "leader",
                          "fence": {"lease_uid": uid, "token": 1}, "fencing_token": 1,
                          "lease": f"{namespace}/web", "waiting": None}
    assert b.leader() == {"leader": "web-a", "is_leader": False, "role": "follower",
                          "fence": None, "fencing_token": None,
                          "lease": f"{namespace}/web", "waiting": None}
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
    assert b.leader() == {"leader": "web-b", "is_leader": True, "role": "leader",
                          "fence": {"lease_uid": uid, "token": 2}, "fencing_token": 2,
                          "lease": f"{namespace}/web", "waiting": None}
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


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_thousands_of_idle_or_half_sent_connections_do_not_starve_the_leader(
        sidecars: Callable[..., Sidecar]) -> None:
    import socket

    a = sidecars("web-a", "--lease-seconds=3")
    a.wait(lambda: (a.leader() or {}).get("is_leader") is True, 20, "web-a leads")
    renewals = a.metric('leadership_candidate_renewals_total{name="web"}') or 0
    before = rss_mib(a.proc.pid)
    held: list[tuple[float, socket.socket]] = []  # (opened at, connection)
    opened = time.monotonic()
    try:
        for i in range(3000):  # half idle, half a request line and no more
            s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
            held.append((time.monotonic(), s))
            if i % 2:
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    s.sendall(b"GET /leader HTTP/1.1\r\nHost: web-a\r\n")  # (if refused:
                    # closed at once, which a send may find as a reset)
        peak = rss_mib(a.proc.pid)
        # The connections over the limit were closed at once; the rest within the idle
        # timeout (5 s) of their opening, though their clients keep them open.
        for at, s in held:
            s.settimeout(max(0.1, at + IDLE_TIMEOUT + 2 - time.monotonic()))
            try:
                assert s.recv(1) == b"", "a connection open longer than the idle timeout"
            except ConnectionResetError:
                pass  # closed with our unread request in its buffer: a reset, also closed
        closed = time.monotonic() - opened
        # Meanwhile the leader renewed every second (a 3 s Lease) and never stepped down.
        assert a.leader() == {**(a.leader() or {}), "is_leader": True, "leader": "web-a"}
        now = a.metric('leadership_candidate_renewals_total{name="web"}') or 0
        print(f"\n{len(held)} connections (half idle, half half-sent), every one closed "
              f"{closed:.1f} s after the first opened; {now - renewals:.0f} renewals meanwhile; "
              f"RSS {before:.0f} -> peak {peak:.0f} MiB")
        assert now - renewals >= int(closed) - 1, (renewals, now, closed)
        assert a.metric('leadership_candidate_step_downs_total{name="web"}') == 0
        assert peak - before < 32, f"the sidecar grew from {before:.0f} to {peak:.0f} MiB"
    finally:
        for _, s in held:
            s.close()


def test_a_deleted_lease_is_waited_for_and_the_fence_pair_refuses_the_old_leader(
        cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient,
        sidecars: Callable[..., Sidecar]) -> None:
    """An admin deletes the example's Lease, which its pods may not create: no crash loop,
    both wait, say why, and elect again once it is re-applied. The re-created Lease counts
    from the start again, so only the fence's pair (uid, token) refuses the old leader."""
    import sqlite3

    from examples.fencing import FencedOff, create_table, reset_fence, write_fenced
    from leadership import Fence

    a = sidecars("web-a")
    a.wait(lambda: (a.leader() or {}).get("is_leader") is True, 20, "web-a leads")
    b = sidecars("web-b")
    b.wait(lambda: (b.leader() or {}).get("leader") == "web-a", 20, "web-b sees web-a")
    fenced = (a.leader() or {})["fence"]
    old = Fence(fenced["lease_uid"], fenced["token"])
    db = sqlite3.connect(":memory:")
    create_table(db)
    write_fenced(db, old, "k", "from web-a")

    cp = cluster.require_control_plane()
    cp.kubectl("delete", "lease", "-n", namespace, "web")
    for car in (a, b):
        car.wait(lambda car=car: (car.leader() or {}).get("role") == "waiting", TTL + 10,
                 f"{car.pod} waits for the Lease")
        status, body = car.get("/healthz")
        assert status == 200 and "may not create it" in body, body
    assert not a.leader()["is_leader"] and a.proc.poll() is None and b.proc.poll() is None  # type: ignore[index]
    said = [line for line in a.log.read_text().splitlines() if "may not create it" in line]
    assert 1 <= len(said) <= 2, said  # the candidate's warning and the role line, once each

    cp.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE / "lease.yaml"))
    new_uid = lease_uid(core_api, namespace)
    assert new_uid != old.lease_uid

    def new_fence() -> Fence | None:
        for car in (a, b):
            answer = car.leader() or {}
            if answer.get("is_leader") and answer["fence"]["lease_uid"] == new_uid:
                return Fence(answer["fence"]["lease_uid"], answer["fence"]["token"])
        return None

    a.wait(lambda: new_fence() is not None, 20, "a leader on the re-created Lease")
    new = new_fence()
    assert new is not None and new.token <= old.token  # the count started again
    with pytest.raises(FencedOff):  # another Lease: refused until someone says the old is gone
        write_fenced(db, new, "k", "from the new leader")
    reset_fence(db, "k")
    write_fenced(db, new, "k", "from the new leader")
    with pytest.raises(FencedOff):  # the old term's fence: refused by the pair
        write_fenced(db, old, "k", "stale write from the old term")
    assert a.get("/healthz")[1] == b.get("/healthz")[1] == "ok\n"
