"""Where the node lives on this machine and what it changes there: its directories, the
paths its components create wherever they are told, the sysctls they set, its cgroup root,
and the one error of the node (`NodeError`)."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import build
from ..errors import ControlPlaneError
from ..pki import NODE_NAME as NODE_NAME  # its certificates' name, defined with them

STATE_DIR = Path("/var/lib/leadership-node")
RUN_DIR = Path("/run/leadership-node")

#: The kubelet's cgroupRoot: every pod's cgroup, in every controller, lives under it.
CGROUP_ROOT = "leadership-node"
#: Paths the kubelet, containerd, runc or the CNI plugins create whatever they are told.
#: Each is removed at teardown if it did not exist before the node's first start.
HARD_CODED_PATHS = (
    "/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/run/containerd",
    "/var/lib/cni", "/etc/cni", "/opt/cni", "/usr/libexec/kubernetes", "/run/netns",
    "/etc/cdi", "/run/cdi", "/var/lib/containerd", "/opt/containerd", "/run/runc",
    "/run/nri", "/run/mount",
)
#: Sysctls the kubelet and kube-proxy may set; restored at teardown.
SYSCTLS = (
    "vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet", "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max", "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
)
READY_TIMEOUT = 120.0
NODE_BINARIES = build.NODE


class NodeError(ControlPlaneError):
    """The node could not start; the message says why and names the logs."""


def say(message: str) -> None:
    print(f"[node] {message}", file=sys.stderr, flush=True)


def own_dirs() -> tuple[Path, ...]:
    """Directories holding this project's node binaries (not "foreign" processes)."""
    return (build.cache_root(),)



REGISTRY_HOSTS = STATE_DIR / "registry-hosts"
#: Where every image pull goes: a loopback port nothing listens on.
NO_REGISTRY = "http://127.0.0.1:1"
#: What was there before the node's first start (paths, sysctls), for the tear-down.
BEFORE_FILE = STATE_DIR / "before.json"
#: The file that marks a hard-coded path as made by the node.
MARK = ".made-by-leadership-node"
#: Our nftables table (the forwarding guard).
GUARD_TABLE = "leadership-node"
