"""The node's pod network: one Linux bridge whose addresses exist only on this machine.

- The bridge ``leadership0`` holds the node's address, ``10.244.0.1/24``; pods get addresses
  from ``10.244.0.0/24`` (the CNI bridge plugin with host-local IPAM, ``isGateway: false``,
  ``ipMasq: false``: the plugin neither enables IP forwarding nor adds NAT).
- Pods get one route besides their own subnet: the Service range through the node, so that
  kube-proxy can turn a ClusterIP into a pod or the API server. No default route: a packet
  for any other address fails in the pod with "network unreachable".
- The host routes the Service range onto the bridge too (source ``10.244.0.1``), so a client
  on the node reaches ClusterIPs through kube-proxy and nothing for that range ever takes
  the machine's default route.
- IP forwarding stays off: the node refuses to start where it is on
  (`controlplane.host.why_no_node`), and a table of its own (`inet leadership-node`) drops
  anything forwarded from the bridge to another interface besides; so nothing a pod sends
  can leave the machine. Pods may not use the host's network (`HOST_NETWORK_POLICY`, an
  admission policy the node's API server enforces, with ``--allow-privileged=false``), and
  containerd resolves every registry to a closed loopback port: no image is ever pulled.

The API server binds and advertises the node address, because the ``kubernetes`` Service
cannot point at a loopback address; pods reach it as ``10.0.0.1:443`` through kube-proxy.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Any

from .errors import ControlPlaneError

BRIDGE = "leadership0"
NODE_IP = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
#: The control plane's --service-cluster-ip-range (the `kubernetes` Service is its first IP).
SERVICE_CIDR = "10.0.0.0/24"
#: The `kubernetes` Service's ClusterIP, which the API server's certificate must name.
KUBERNETES_SERVICE_IP = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))


class NetworkError(ControlPlaneError):
    """The bridge could not be made or removed; the message has the command's answer."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetworkError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


def bridge_exists() -> bool:
    return Path(f"/sys/class/net/{BRIDGE}").exists()


def create_bridge() -> None:
    """Make the bridge with the node's address and the Service route (idempotent)."""
    if not bridge_exists():
        _ip("link", "add", BRIDGE, "type", "bridge")
    # No IPv6 on the bridge: no router or neighbour discovery traffic at all.
    ipv6 = Path(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6")
    if ipv6.exists():  # a kernel without IPv6 has nothing to switch off
        ipv6.write_text("1\n")
    prefix = POD_CIDR.split("/")[1]
    _ip("addr", "replace", f"{NODE_IP}/{prefix}", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    _ip("route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", NODE_IP)


def delete_bridge() -> None:
    """Remove the bridge and with it its address and routes (idempotent)."""
    if bridge_exists():
        _ip("link", "delete", BRIDGE)


def forwarding_enabled() -> list[str]:
    """The forwarding switches that are on (IPv4 and IPv6); none on a safe machine."""
    on = []
    for path in ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"):
        try:
            if Path(path).read_text().strip() != "0":
                on.append(path)
        except OSError:
            continue
    return on


def routes_via_bridge() -> list[str]:
    """The host's IPv4 routes through the bridge, as `ip route` prints them."""
    out = _ip("-4", "route", "show", "dev", BRIDGE, check=False).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def cni_config(data_dir: Path) -> dict[str, Any]:
    """The CNI network list containerd hands to the bridge plugin for every pod."""
    return {
        "cniVersion": "1.0.0",
        "name": "leadership-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": False,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(data_dir),
                    "ranges": [[{"subnet": POD_CIDR, "rangeStart": "10.244.0.10",
                                 "rangeEnd": "10.244.0.250", "gateway": NODE_IP}]],
                    "routes": [{"dst": SERVICE_CIDR, "gw": NODE_IP}],
                },
            },
        ],
    }


def write_cni_config(conf_dir: Path, data_dir: Path) -> None:
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "10-leadership-node.conflist").write_text(
        json.dumps(cni_config(data_dir), indent=2))


#: Pods share no namespace of the host on the node (a pod on the host's network could send
#: anywhere the host can). Applied by the launcher to the node's API server.
HOST_NETWORK_POLICY = """\
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: leadership-node-no-host-namespaces
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["pods"]
  validations:
    - expression: >-
        !(has(object.spec.hostNetwork) && object.spec.hostNetwork) &&
        !(has(object.spec.hostPID) && object.spec.hostPID) &&
        !(has(object.spec.hostIPC) && object.spec.hostIPC)
      message: "pods on this local node may not share the host's network, PID or IPC
        namespace: nothing a pod does may reach beyond this machine"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: leadership-node-no-host-namespaces
spec:
  policyName: leadership-node-no-host-namespaces
  validationActions: ["Deny"]
"""
