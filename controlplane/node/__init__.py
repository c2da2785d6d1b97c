"""A real node beside the local control plane: containerd, runc, CNI, kubelet, kube-scheduler,
kube-proxy, running the project's image built from its Dockerfile, with no registry.

`controlplane.local.LocalCluster` runs one `Node` beside its `ControlPlane`; nothing
else starts one. Its life:

- `prepare()`, before the API server starts: checks the machine (`host.why_no_node`: Linux,
  root, and no kubelet or container runtime of the machine's own), takes the machine-wide
  node lock, sweeps what a killed earlier run left, installs the missing Debian packages
  (saying which first), builds the binaries and images it lacks (`controlplane.images`),
  records what it will change (paths the kubelet and containerd create wherever they are
  told to, sysctls the kubelet sets), and makes the pod bridge (`controlplane.network`).
- `start()`: containerd with its own root, state and sockets; the images imported into it;
  kubelet (cgroup v1 allowed, cgroupfs under one root cgroup of ours, its own resolver
  file, the Node authorizer's identity), kube-scheduler and kube-proxy (nftables mode);
  then waits until the node is Ready, untainted, and a ClusterIP answers from the node.
- `stop_workloads()` then `teardown()` (both idempotent, both safe after any failure):
  kills the kubelet, every process in the node's cgroups and every shim, stops containerd,
  removes kube-proxy's nftables tables and any ``KUBE-`` iptables chains, unmounts
  everything under the node's directories, removes its cgroups, the bridge, the paths it
  created and its directories, restores the sysctls, and releases the lock. `sweep()` is
  the same from a cold start, for what a killed run left behind.

One node per machine: the kubelet's ports and the bridge are machine-wide.

The package: `lifecycle` (`Node`), `configs` (the components' configurations, pure),
`janitor` (what the node changes, undone: `sweep`, `leftovers`), `events` (containerd's
task events), `machine` (its paths, sysctls and error); ``python -m controlplane.node``
prepares or sweeps.
"""

from __future__ import annotations

from .events import RuntimeEvents
from .janitor import leftovers, sweep
from .lifecycle import Node
from .machine import NODE_NAME, NodeError

__all__ = ["NODE_NAME", "Node", "NodeError", "RuntimeEvents", "leftovers", "sweep"]
