"""The node's component configurations: containerd's, the kubelet's and kube-proxy's, as
pure functions of where things are (tested without a node)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import images, network
from .machine import (
    CGROUP_ROOT,
    NODE_NAME,
    REGISTRY_HOSTS,
    RUN_DIR,
    STATE_DIR,
)


def containerd_config(binaries: dict[str, Path]) -> str:
    """containerd's config (version 3): its own root, state and sockets; CRI on runc with
    cgroupfs; pods' network namespaces under its state dir; the local pause image."""
    runtime = "plugins.'io.containerd.cri.v1.runtime'"
    return f"""\
version = 3
root = "{STATE_DIR / 'containerd'}"
state = "{RUN_DIR / 'containerd'}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs",
  "io.containerd.snapshotter.v1.blockfile", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing", "io.containerd.nri.v1.nri",
]

[grpc]
  address = "{RUN_DIR / 'containerd' / 'containerd.sock'}"

[ttrpc]
  address = "{RUN_DIR / 'containerd' / 'containerd.sock.ttrpc'}"

[plugins.'io.containerd.internal.v1.opt']
  path = "{STATE_DIR / 'opt'}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{images.PAUSE}"
  # Every registry resolves to a closed loopback port: an image that was not imported fails
  # to pull at once, and nothing is ever fetched from beyond this machine.
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{REGISTRY_HOSTS}"

[{runtime}]
  # This machine withholds CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below ours.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  [{runtime}.containerd]
    default_runtime_name = "runc"
  [{runtime}.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    runtime_path = "{binaries['containerd-shim-runc-v2']}"
    [{runtime}.containerd.runtimes.runc.options]
      BinaryName = "{binaries['runc']}"
      Root = "{RUN_DIR / 'runc'}"
      SystemdCgroup = false
  [{runtime}.cni]
    bin_dirs = ["{binaries['bridge'].parent}"]
    conf_dir = "{STATE_DIR / 'cni' / 'net.d'}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
"""


def kubelet_config(runtime_socket: Path, resolv_conf: Path, pki: Path) -> dict[str, Any]:
    """The kubelet's configuration. Every path it would otherwise put in /var or /etc is
    ours; the machine's settings are left alone where the kubelet allows it."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine has cgroup v1 (hybrid); kubelet 1.35 refuses it unless told (KEP-5573).
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "containerRuntimeEndpoint": f"unix://{runtime_socket}",
        "address": network.NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "resolvConf": str(resolv_conf),
        "podLogsDir": str(STATE_DIR / "pod-logs"),
        "volumePluginDir": str(STATE_DIR / "volume-plugins"),
        "staticPodPath": "",
        "failSwapOn": False,
        # The images exist only here (no registry to pull them again): never collect them,
        # and never evict pods for a full disk on a shared development machine.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "2s",
        "shutdownGracePeriod": "0s",
        "makeIPTablesUtilChains": False,
        "protectKernelDefaults": False,
        "logging": {"format": "text"},
    }


def kube_proxy_config(kubeconfig: Path) -> dict[str, Any]:
    """kube-proxy in nftables mode, with its own tables only, and no conntrack sysctl set
    (zero means "leave as it is")."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": network.NODE_IP,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": network.POD_CIDR,
        "detectLocalMode": "ClusterCIDR",
        "nodePortAddresses": [f"{network.NODE_IP}/32"],
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
    }


