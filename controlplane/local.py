"""`LocalCluster`: a control plane and a real node beside it, composed, on this machine.

Neither part owns the other. The cluster brings them up in the one order that works and
down in the reverse, whatever failed:

- `Node.prepare()`: host checks, the machine's node lock, packages, binaries, images, the
  pod bridge (the API server binds the node's address on it);
- `ControlPlane(for_node=True).start()`: etcd, kube-apiserver, kube-controller-manager;
- `Node.start()`: containerd, kubelet, kube-scheduler, kube-proxy; until Ready.

Down: the node's workloads (kubelet first, then every pod, then containerd), the control
plane, then the node's tear-down (mounts, cgroups, rules, bridge, paths, sysctls, lock).
"""

from __future__ import annotations

from typing import Any

from .launcher import ControlPlane
from .node import Node


class LocalCluster:
    """A control plane with a node (see the module's doc). Use as a context manager, or
    call `start()` / `stop()` (idempotent, safe after a failed start)."""

    def __init__(self, *, keep_logs: bool = False,
                 node_config: dict[str, dict[str, Any]] | None = None) -> None:
        self.control_plane = ControlPlane(for_node=True, keep_logs=keep_logs)
        self.node = Node(self.control_plane, config=node_config, keep_logs=keep_logs)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self.node.prepare()
            self.control_plane.start()
            self.node.start()
        except BaseException:
            self.stop()
            raise

    def check_alive(self) -> None:
        """Raise if a process of either part has exited."""
        self.control_plane.check_alive()
        self.node.check_alive()

    def stop(self) -> None:
        try:
            self.node.stop_workloads()
        finally:
            try:
                self.control_plane.stop()
            finally:
                self.node.teardown()
