"""Hostile or huge Leases cannot exhaust the operator (issue "Trust", item 3).

Anyone who may write Leases in some namespace (the built-in `edit` role may) can make
hundreds of them, each with a megabyte of holderIdentity. The operator, run cluster-wide as
deployed, must keep its memory within its request and its log within a few KiB, keep
labelling a real election meanwhile, and hold nothing once those Leases are gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes

from controlplane.waiting import eventually

from .conftest import ROLE, OperatorProcess, make_pods

#: Leases no pod is a member of, and the size of each one's holderIdentity.
HOSTILE = 500
HOLDER_BYTES = 1_000_000
#: Leases rewritten afterwards (another megabyte each), as churn.
CHURN = 100
#: the operator's memory request in manifests/operator (deployment.yaml).
REQUEST_MIB = 192


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Peak:
    """The highest RSS of a process, sampled every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.value = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.value = max(self.value, rss_mib(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.value


def test_huge_non_member_leases_cost_the_operator_neither_memory_nor_log(
        namespace: str, make_namespace: Callable[[], str],
        core_api: kubernetes.client.ApiClient,
        start_operator: Callable[..., OperatorProcess]) -> None:
    coordination = kubernetes.client.CoordinationV1Api(core_api)
    v1 = kubernetes.client.CoreV1Api(core_api)
    make_pods(core_api, namespace, ["web-0", "web-1"])
    coordination.create_namespaced_lease(namespace, {"metadata": {"name": "web"}, "spec": {
        "holderIdentity": "web-0", "leaseDurationSeconds": 600}})

    def role(pod: str) -> str | None:
        return (v1.read_namespaced_pod(pod, namespace).metadata.labels or {}).get(ROLE)

    op = start_operator(None, "op-hostile")
    eventually(lambda: role("web-0") == "leader", 30, "web-0 labelled leader")
    before_rss, before_log = rss_mib(op.proc.pid), op.log.stat().st_size
    peak = Peak(op.proc.pid)

    def hand_over(to: str, transitions: int) -> None:
        """Move the real election, and wait for its labels: the operator's cluster-wide
        watch delivers events in order, so once this is labelled, every event written
        before it has been taken in."""
        coordination.patch_namespaced_lease("web", namespace, {"spec": {
            "holderIdentity": to, "leaseTransitions": transitions}})
        eventually(lambda: role(to) == "leader", 60, f"{to} labelled leader")

    hostile = make_namespace()
    started = time.monotonic()

    def put(i: int, fill: str) -> None:
        body = {"metadata": {"name": f"huge-{i}"},
                "spec": {"holderIdentity": fill * HOLDER_BYTES, "leaseDurationSeconds": 15}}
        if fill == "x":
            coordination.create_namespaced_lease(hostile, body)
        else:
            coordination.patch_namespaced_lease(f"huge-{i}", hostile, body)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: put(i, "x"), range(HOSTILE)))
        list(pool.map(lambda i: put(i, "y"), range(CHURN)))
    written = time.monotonic() - started
    hand_over("web-1", 1)  # the real election keeps working, after every hostile event
    assert role("web-0") == "follower"
    during = peak.stop()
    log_growth = op.log.stat().st_size - before_log

    coordination.delete_collection_namespaced_lease(hostile)
    hand_over("web-0", 2)  # after every deletion
    after_rss = rss_mib(op.proc.pid)
    print(f"\n{HOSTILE} Leases of {HOLDER_BYTES:,} B + {CHURN} rewritten in {written:.1f} s: "
          f"operator RSS {before_rss:.0f} MiB before, peak {during:.0f}, "
          f"{after_rss:.0f} after deletion; log +{log_growth} B")
    assert during <= REQUEST_MIB, f"peak RSS {during:.0f} MiB over the {REQUEST_MIB} MiB request"
    assert during - before_rss <= 40, (before_rss, during)
    assert after_rss - before_rss <= 20, (before_rss, after_rss)
    assert log_growth <= 4096, op.log.read_text()[-4000:]
    assert op.healthz() == 200 and op.proc.poll() is None
