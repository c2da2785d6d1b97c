"""`Deployed`: the project's manifests applied as they are to a control plane with a node,
and what the demo, the end-to-end tests and `make bench-node` ask of them: pods, the
leader, the Lease, a Service's address, a container's processes on the node.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kubernetes

from .clients import sync_client
from .network import KUBERNETES_SERVICE_IP

if TYPE_CHECKING:
    from .local import LocalCluster

ROOT = Path(__file__).resolve().parents[1]
APP_NS, ELECTION, APP = "leadership-example", "web", "web"
OPERATOR_NS, OPERATOR = "leadership-system", "leadership-operator"
ROLE = "leadership.dev/role"
#: the nftables table that `Deployed.cut_from_api_server` adds in a pod's network namespace.
PARTITION_TABLE = "leadership-partition"


class Deployed:
    def __init__(self, cluster: LocalCluster, example: str = "example") -> None:
        self.cp, self.node = cluster.control_plane, cluster.node
        #: the directory of manifests/ the app comes from: "example" (routed by the role
        #: label) or "example-leader-endpoint" (by the operator's one-write EndpointSlice).
        self.example = example
        self.api = sync_client(self.cp.kubeconfig)
        self.v1 = kubernetes.client.CoreV1Api(self.api)
        self.coordination = kubernetes.client.CoordinationV1Api(self.api)

    def apply(self) -> list[str]:
        """`kubectl apply -k` manifests/operator, the opt-in policy manifests/policies/
        lease-holder (the example's namespace opts in: its sidecars elect under it), then
        the example (`example`); their output."""
        return [self.cp.kubectl("apply", "-k", str(ROOT / "manifests" / d)).stdout
                for d in ("operator", "policies/lease-holder", self.example)]

    def rollout_status(self, namespace: str, deployment: str, timeout: float = 180) -> str:
        return self.cp.kubectl("-n", namespace, "rollout", "status",
                               f"deployment/{deployment}", f"--timeout={timeout:.0f}s",
                               timeout=timeout + 10).stdout

    def wait_ready(self, timeout: float = 180) -> None:
        """Until both Deployments are rolled out and every pod of theirs is Ready."""
        self.rollout_status(OPERATOR_NS, OPERATOR, timeout)
        self.rollout_status(APP_NS, APP, timeout)

    def pods(self, namespace: str = APP_NS, selector: str = f"leadership.dev/election={ELECTION}",
             *, include_terminating: bool = False) -> list[Any]:
        items = self.v1.list_namespaced_pod(namespace, label_selector=selector).items
        return sorted((p for p in items if include_terminating
                       or p.metadata.deletion_timestamp is None),
                      key=lambda p: p.metadata.name)

    def operator_pods(self) -> list[Any]:
        return self.pods(OPERATOR_NS, f"app.kubernetes.io/name={OPERATOR}")

    def holder(self, name: str = ELECTION, namespace: str = APP_NS) -> str:
        lease = self.coordination.read_namespaced_lease(name, namespace)
        return str(lease.spec.holder_identity or "")

    def labelled(self, role: str) -> list[str]:
        return [p.metadata.name for p in self.pods(include_terminating=True)
                if (p.metadata.labels or {}).get(ROLE) == role]

    def service_ip(self, name: str, namespace: str = APP_NS) -> str:
        return str(self.v1.read_namespaced_service(name, namespace).spec.cluster_ip)

    def container_id(self, pod: str, container: str, namespace: str = APP_NS) -> str:
        status = self.v1.read_namespaced_pod(pod, namespace).status
        for c in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
            if c.name == container and c.container_id:
                return str(c.container_id)
        raise LookupError(f"{namespace}/{pod} has no running container {container!r}")

    def pids(self, pod: str, container: str, namespace: str = APP_NS) -> list[int]:
        """The processes of one container, on the node."""
        return self.node.container_pids(self.container_id(pod, container, namespace))

    def signal(self, pod: str, containers: tuple[str, ...], sig: int,
               namespace: str = APP_NS) -> list[int]:
        """Send `sig` to every process of the pod's `containers` on the node; their pids."""
        pids = [pid for c in containers for pid in self.pids(pod, c, namespace)]
        for pid in pids:
            os.kill(pid, sig)
        return pids

    def freeze(self, pod: str, containers: tuple[str, ...] = ("leadership", "app")) -> list[int]:
        """SIGSTOP the pod's processes: to Kubernetes it still runs (a hung process, a
        partitioned pod); only its Lease's expiry tells."""
        return self.signal(pod, containers, signal.SIGSTOP)

    def cut_from_api_server(self, pod: str, namespace: str = APP_NS) -> int:
        """Drop, in the pod's network namespace, every packet to the API server's address
        (the `kubernetes` Service, which pods use): the pod runs on and clients still reach
        it, only the API server does not (a partition). The pid whose namespace it is, for
        `reconnect`; the rule goes with the namespace when the pod does."""
        pid = self.pids(pod, "leadership", namespace)[0]
        rules = (f"table inet {PARTITION_TABLE} {{ chain out {{ type filter hook output "
                 f"priority 0; policy accept; ip daddr {KUBERNETES_SERVICE_IP} tcp dport 443 "
                 "drop; }; }\n")
        subprocess.run(["nsenter", "-t", str(pid), "-n", "nft", "-f", "-"], input=rules,
                       text=True, check=True, capture_output=True)
        return pid

    def reconnect(self, pid: int) -> None:
        """Undo `cut_from_api_server` (nothing to undo if the pod is gone)."""
        subprocess.run(["nsenter", "-t", str(pid), "-n", "nft", "delete", "table", "inet",
                        PARTITION_TABLE], capture_output=True, check=False)

    def thaw(self, pids: list[int]) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

