"""Fixtures of the operator's tests.

Unit tests use `clock`. Integration tests (marked by using `cluster`) run the operator as a
local process, authenticated with a TokenRequest token of the ServiceAccount that
manifests/operator creates, so every test also shows that RBAC is enough. Member pods are
created through the API and stay Pending (there is no kubelet): the operator labels them
all the same. Candidates are processes whose identity is their pod's name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from controlplane.candidates import CandidateProcess
from controlplane.cluster import Cluster, service_account_kubeconfig, wait_until_allowed
from controlplane.processes import free_port, stop_process
from controlplane.recorder import ClusterRecorder
from leadership.testing import ManualClock

ROOT = Path(__file__).resolve().parents[2]
ROLE = "leadership.dev/role"
ELECTION = "leadership.dev/election"
TTL = 2  # candidates' and the operator's own Lease


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifests/operator applied once; a kubeconfig holding its ServiceAccount's token."""
    cp = cluster.require_control_plane()
    cp.kubectl("apply", "-k", str(ROOT / "manifests" / "operator"))
    path = service_account_kubeconfig(cluster.kubeconfig, "leadership-system",
                                      "leadership-operator",
                                      tmp_path_factory.mktemp("op") / "kubeconfig", create=False)
    wait_until_allowed(cp, path, "patch", "pods")
    return path


@dataclass
class OperatorProcess:
    identity: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def healthz(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)


@pytest.fixture
def start_operator(operator_kubeconfig: Path, tmp_path: Path
                   ) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(namespace: str | None, identity: str, *extra: str,
              kubeconfig: Path | None = None) -> OperatorProcess:
        port = free_port()
        log = tmp_path / f"operator-{identity}.log"
        scope = [f"--namespace={namespace}"] if namespace else ["--all-namespaces"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "leadership_operator.cli", "operator",
             f"--kubeconfig={kubeconfig or operator_kubeconfig}", *scope,
             f"--identity={identity}",
             "--lease-namespace=leadership-system", f"--lease-seconds={TTL}",
             f"--http-port={port}", "--log-format=text", *extra],
            cwd=ROOT, stderr=log.open("wb"), stdout=subprocess.DEVNULL)
        op = OperatorProcess(identity, proc, port, log)
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
    for op in started:  # a watch that never started, a failed reconcile: never silent
        text = op.log.read_text(errors="replace")
        bad = [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line]
        assert not bad, f"{op.identity} logged errors:\n" + "\n".join(bad[:10])


@dataclass
class Candidates:
    """Candidate processes: `start(pod)` campaigns as that pod's name (or a client-go peer
    in the <pod>_<uuid> form); `signal(pod, sig)`; all stopped at the end."""

    kubeconfig: Path
    namespace: str
    lease: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, pod: str, kind: str = "kubernetes") -> str:
        identity = f"{pod}_{os.urandom(8).hex()}" if kind == "client-go" else pod
        command = CandidateProcess(kind, self.kubeconfig, self.lease, identity, TTL, self.namespace,
                            renew_deadline=1.333, retry_period=0.666).command()
        self.procs[pod] = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
        return identity

    def signal(self, pod: str, sig: int) -> None:
        self.procs[pod].send_signal(sig)
        self.procs[pod].wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def candidates(cluster: Cluster, namespace: str) -> Iterator[Candidates]:
    made = Candidates(cluster.kubeconfig, namespace, "web")
    yield made
    made.stop_all()


@pytest.fixture
def recorder(cluster: Cluster, namespace: str) -> Iterator[ClusterRecorder]:
    made = ClusterRecorder(cluster.kubeconfig, namespace)
    yield made
    made.close()


def make_pods(core_api: kubernetes.client.ApiClient, namespace: str, names: list[str],
              election: str = "web", **extra_labels: str) -> None:
    v1 = kubernetes.client.CoreV1Api(core_api)
    for name in names:
        v1.create_namespaced_pod(namespace, {
            "metadata": {"name": name, "labels": {ELECTION: election, **extra_labels}},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}})


def events(core_api: kubernetes.client.ApiClient, namespace: str) -> list[Any]:
    return list(kubernetes.client.CoreV1Api(core_api).list_namespaced_event(namespace).items)


def json_dump(obj: Any) -> str:
    return json.dumps(obj, default=str)
