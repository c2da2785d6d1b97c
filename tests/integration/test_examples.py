"""The runnable examples in docs/library.md run, lead, and release the Lease on the way out."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import kubernetes
import pytest

from controlplane.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = r"ex_[0-9a-f-]{36}"  # the default: POD_NAME plus a per-process uuid


def released(core_api: kubernetes.client.ApiClient, namespace: str) -> bool:
    lease = kubernetes.client.CoordinationV1Api(core_api).read_namespaced_lease(
        "example", namespace)
    return lease.spec.holder_identity == "" and lease.spec.lease_transitions == 0


@pytest.mark.parametrize("module, leading_line", [
    ("examples.leader_asyncio", "working as leader (fencing token 0)"),
    ("examples.leader_threads", "leading (fencing token 0)"),
])
def test_example_leads_then_releases(cluster: Cluster, namespace: str,
                                     core_api: kubernetes.client.ApiClient, module: str,
                                     leading_line: str) -> None:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "POD_NAME": "ex"}
    done = subprocess.run([sys.executable, "-m", module, "--lease", "example",
                           "--namespace", namespace, "--seconds", "2.5"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any(re.fullmatch(f"{IDENTITY}: {re.escape(leading_line)}", x) for x in lines), lines
    assert re.fullmatch(f"{IDENTITY}: stopped; the lease is released", lines[-1]), lines
    assert released(core_api, namespace)


@pytest.mark.parametrize("module", ["examples.leader_asyncio", "examples.leader_threads"])
def test_example_exits_promptly_on_ctrl_c(cluster: Cluster, namespace: str,
                                          core_api: kubernetes.client.ApiClient,
                                          module: str) -> None:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "POD_NAME": "ex"}
    proc = subprocess.Popen([sys.executable, "-m", module, "--lease", "example",
                             "--namespace", namespace], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until it leads (it runs for an hour otherwise)
        assert "fencing token 0" in first, first
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        took = time.monotonic() - interrupted
        assert proc.returncode == 0, err[-2000:]
        assert took < 3, f"took {took:.1f}s to exit after Ctrl-C"
        assert out.splitlines()[-1].endswith("stopped; the lease is released"), out
        assert released(core_api, namespace)
    finally:
        proc.kill()
        proc.wait()


def test_fastapi_example_one_leader_among_workers_and_release_on_sigterm(
        cluster: Cluster, namespace: str, core_api: kubernetes.client.ApiClient) -> None:
    import json
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "POD_NAME": "web-0",
           "POD_NAMESPACE": namespace, "LEASE_NAME": "example"}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "examples.fastapi_app:app",
                             "--port", str(port), "--workers", "2"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        views: dict[str, dict[str, object]] = {}
        deadline = time.monotonic() + 60
        while not (len(views) == 2 and any(v["is_leader"] for v in views.values())):
            assert time.monotonic() < deadline, f"workers seen: {views}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/leader", timeout=2) as r:
                    view = json.load(r)
                views[view["identity"]] = view
            except OSError:
                time.sleep(0.1)  # not listening yet
        assert all(re.fullmatch(r"web-0_[0-9a-f-]{36}", identity) for identity in views)
        leaders = [identity for identity, v in views.items() if v["is_leader"]]
        assert len(leaders) == 1  # two workers, two identities, one leader
        lease = kubernetes.client.CoordinationV1Api(core_api).read_namespaced_lease(
            "example", namespace)
        assert lease.spec.holder_identity == leaders[0]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err[-2000:]
        # The other worker may take the Lease while the first shuts down; once both have
        # stopped, nobody holds it.
        lease = kubernetes.client.CoordinationV1Api(core_api).read_namespaced_lease(
            "example", namespace)
        assert lease.spec.holder_identity == ""
    finally:
        proc.kill()
        proc.wait()
