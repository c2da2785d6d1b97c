"""The node's own tests: it comes up, serves real pods, keeps its network on this machine,
and leaves nothing behind after a tear-down, even the second time in a row.

They need root on Linux (the kubelet manages cgroups, mounts and network namespaces): CI
has both. Where a node cannot come up, they fail and say why; they never skip.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from controlplane import host, network, node
from controlplane.clients import sync_client
from controlplane.launcher import ControlPlane
from controlplane.local import LocalCluster
from controlplane.node import janitor, machine
from controlplane.waiting import eventually

pytestmark = pytest.mark.node


def machine_state() -> dict[str, Any]:
    """What a node could change on this machine, as plainly comparable values."""

    def listing(path: str) -> list[str]:
        return sorted(p.name for p in Path(path).iterdir()) if Path(path).exists() else []

    nft = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {
        "paths": {p: Path(p).exists() for p in machine.HARD_CODED_PATHS},
        "run": listing("/run"), "var-lib": listing("/var/lib"), "var-log": listing("/var/log"),
        "sysctls": {name: janitor.read_sysctl(name) for name in machine.SYSCTLS},
        "links": sorted(p.name for p in Path("/sys/class/net").iterdir()),
        "routes": subprocess.run(["ip", "route"], capture_output=True, text=True).stdout,
        "nft": nft,
        "mounts": mounts(),
        "cgroups": {str(c): listing(str(c)) for c in host.cgroup_controllers()},
    }


#: Mounts this machine's own sandbox stacks and swaps while it runs (its tools' directory,
#: a tmpfs over it while they are unavailable): nothing of a node's, never compared.
NOT_OURS = ("/mnt/sandboxing/",)


def mounts() -> list[str]:
    """Each mount point and its filesystem type, sorted (stacked mounts appear twice)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if not fields[4].startswith(NOT_OURS):
            found.append(f"{fields[4]} {fields[fields.index('-') + 1]}")
    return sorted(found)


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What differs, by item; for lists, what came and what went."""
    out: dict[str, Any] = {}
    for key in before:
        if before[key] != after[key]:
            if isinstance(before[key], list):
                out[key] = {"new": sorted(set(after[key]) - set(before[key])),
                            "gone": sorted(set(before[key]) - set(after[key])),
                            "count": (len(before[key]), len(after[key]))}
            else:
                out[key] = (before[key], after[key])
    return out


def run_pod(cp: ControlPlane, name: str) -> None:
    """One pod on the node (the pause image, as nobody): cgroups, mounts, a network
    namespace, a veth on the bridge; waits until it runs."""
    v1 = kubernetes.client.CoreV1Api(sync_client(cp.kubeconfig))
    v1.create_namespaced_pod("default", {
        "metadata": {"name": name},
        "spec": {"automountServiceAccountToken": False, "containers": [{
            "name": "pause", "image": "registry.k8s.io/pause:3.10.1",
            "imagePullPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65535,
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}}}]}})
    eventually(lambda: v1.read_namespaced_pod(name, "default").status.phase == "Running", 60,
               f"{name} running", every=0.1)


def test_a_node_comes_up_twice_and_leaves_nothing_behind() -> None:
    before = machine_state()
    timings = []
    for attempt in ("first", "second"):
        started = time.monotonic()
        with LocalCluster() as cluster:
            cp = cluster.control_plane
            up = time.monotonic() - started
            run_pod(cp, f"pause-{attempt}")
            assert network.forwarding_enabled() == [], "IP forwarding was switched on"
            assert network.bridge_exists()
        timings.append((up, time.monotonic() - started - up))
        assert node.leftovers() == [], f"after the {attempt} tear-down"
        after = machine_state()
        assert after == before, (f"the machine changed after the {attempt} run: "
                                 f"{changes(before, after)}")
    print("node up / tear-down, s:", timings)


def test_the_pod_network_stays_on_this_machine() -> None:
    with LocalCluster() as cluster:
        cp = cluster.control_plane
        run_pod(cp, "pause-net")
        v1 = kubernetes.client.CoreV1Api(sync_client(cp.kubeconfig))
        pod = v1.read_namespaced_pod("pause-net", "default")
        assert pod.status.pod_ip.startswith("10.244.0.")
        assert network.forwarding_enabled() == []
        # The host routes only the pod range and the Service range onto the bridge.
        routes = network.routes_via_bridge()
        assert sorted(r.split()[0] for r in routes) == sorted(
            [network.POD_CIDR, network.SERVICE_CIDR]), routes
        # Inside the pod: no default route, so any address beyond the bridge and the
        # Service range is unreachable from the pod itself.
        pid = node.Node.container_pids(pod.status.container_statuses[0].container_id)[0]
        inside = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-4", "route"],
                                capture_output=True, text=True, check=True).stdout
        assert "default" not in inside, inside
        assert network.SERVICE_CIDR in inside, inside
        outside = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "route", "get",
                                  "192.0.2.1"], capture_output=True, text=True)
        assert outside.returncode != 0 and "unreachable" in outside.stderr, outside
        # The resolver the pods get points at nothing outside (their own loopback).
        resolv = Path(f"/proc/{pid}/root/etc/resolv.conf").read_text()
        servers = [line.split()[1] for line in resolv.splitlines()
                   if line.startswith("nameserver")]
        assert servers == ["127.0.0.1"], resolv
        # No NAT of pod traffic by the CNI plugin: the only tables are kube-proxy's and the
        # node's forwarding guard.
        ruleset = subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True,
                                 text=True, check=True).stdout
        tables = {t["table"]["name"] for t in json.loads(ruleset)["nftables"] if "table" in t}
        assert tables <= {"kube-proxy", machine.GUARD_TABLE}, tables


def test_a_second_node_on_one_machine_is_refused_and_leaves_the_first_alone() -> None:
    with LocalCluster() as cluster:
        cp = cluster.control_plane
        second = LocalCluster()
        with pytest.raises(node.NodeError, match="another leadership node runs on this "
                                                  "machine"):
            second.start()
        # The refused one tore nothing down: the first node still runs pods.
        run_pod(cp, "pause-after-refusal")
        assert network.bridge_exists() and machine.RUN_DIR.exists()


def test_pods_cannot_use_the_host_network_nor_pull_from_a_registry() -> None:
    with LocalCluster() as cluster:
        cp = cluster.control_plane
        v1 = kubernetes.client.CoreV1Api(sync_client(cp.kubeconfig))
        host_pod = {"metadata": {"name": "on-the-host"}, "spec": {
            "hostNetwork": True, "containers": [{"name": "pause",
                                                 "image": "registry.k8s.io/pause:3.10.1"}]}}
        with pytest.raises(kubernetes.client.ApiException) as refused:
            v1.create_namespaced_pod("default", host_pod)
        assert refused.value.status == 422
        assert "may not share the host's network" in str(refused.value.body)
        # An image that was not imported: the pull goes to a closed loopback port, at once.
        v1.create_namespaced_pod("default", {
            "metadata": {"name": "not-here"}, "spec": {"automountServiceAccountToken": False,
                                                      "containers": [{
                "name": "c", "image": "registry.k8s.io/not-imported:1.0"}]}})
        def pull_failed() -> list[Any]:
            status = v1.read_namespaced_pod("not-here", "default").status
            waiting = [c.state.waiting for c in status.container_statuses or []
                       if c.state and c.state.waiting]
            return waiting if waiting and waiting[0].reason in (
                "ErrImagePull", "ImagePullBackOff") else []

        waiting = eventually(pull_failed, 30, "the pull of a missing image failing", every=0.1)
        assert machine.NO_REGISTRY.removeprefix("http://") in (waiting[0].message or ""), \
            waiting[0].message
        # The forwarding guard is in place while the node runs.
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True,
                                text=True).stdout
        assert f"table inet {machine.GUARD_TABLE}" in tables
