"""The runnable examples in docs/library.md run, lead, and release the Lease on the way out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kubernetes
import pytest

from controlplane.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module, leading_line", [
    ("examples.leader_asyncio", "ex: working as leader (fencing token 0)"),
    ("examples.leader_threads", "ex: leading (fencing token 0)"),
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
    assert leading_line in lines, done.stdout
    assert lines[-1] == "ex: stopped; the lease is released"
    lease = kubernetes.client.CoordinationV1Api(core_api).read_namespaced_lease(
        "example", namespace)
    assert lease.spec.holder_identity == "" and lease.spec.lease_transitions == 0
