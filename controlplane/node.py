"""A real node beside the local control plane: containerd, runc, CNI, kubelet, kube-scheduler,
kube-proxy, running the project's image built from its Dockerfile, with no registry.

`ControlPlane(with_node=True)` owns one `Node`; nothing else starts one. Its life:

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
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import build, host, images, network
from .errors import ControlPlaneError
from .waiting import eventually

if TYPE_CHECKING:
    from .launcher import ControlPlane

STATE_DIR = Path("/var/lib/leadership-node")
RUN_DIR = Path("/run/leadership-node")
NODE_NAME = "leadership-node"
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


def _ours() -> tuple[Path, ...]:
    """Directories holding this project's node binaries (not "foreign" processes)."""
    return (build.cache_root(),)


class Node:
    """The node of one `ControlPlane` (see the module's doc)."""

    def __init__(self, control_plane: ControlPlane) -> None:
        self.cp = control_plane
        self.lock = host.NodeLock()
        self.binaries: dict[str, Path] = {}
        self.image_archives: dict[str, Path] = {}
        self.timings: dict[str, float] = {}
        #: True once this node holds the machine's node lock: only then may it tear down
        #: (a node refused because another one runs must not sweep that one away).
        self.owns_machine = False
        self._reaper: subprocess.Popen[bytes] | None = None

    # --- paths ---------------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return RUN_DIR / "containerd" / "containerd.sock"

    @property
    def kubelet_dir(self) -> Path:
        return STATE_DIR / "kubelet"

    # --- bring-up ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Everything before the API server starts (see the module's doc). Every failure is
        a `NodeError` whose message says what failed."""
        if sys.platform != "linux" or os.geteuid() != 0:
            raise NodeError(f"cannot run a node here: {host.why_no_node(_ours())}")
        try:
            self.lock.acquire()
        except RuntimeError as exc:
            raise NodeError(str(exc)) from None
        why = host.why_no_node(_ours(), leftover_of_ours=BEFORE_FILE.exists())
        if why:
            self.lock.release()
            raise NodeError(f"cannot run a node here: {why}")
        self.owns_machine = True  # from here on, tear-down is ours to do
        try:
            sweep(trust_unmarked=False)  # what a killed run left, and nothing else
            self._start_reaper()
            t0 = time.monotonic()
            host.ensure_packages(say)
            self.binaries = build.ensure([*NODE_BINARIES])
            self.timings["binaries"] = time.monotonic() - t0
            t0 = time.monotonic()
            self.image_archives = images.ensure_all(say)
            self.timings["images"] = time.monotonic() - t0
            _record_before()
            network.create_bridge()
            _guard_forwarding()
        except NodeError:
            raise
        except (build.BuildError, images.ImageError, network.NetworkError, RuntimeError,
                OSError, subprocess.SubprocessError) as exc:
            raise NodeError(f"preparing the node failed: {exc}") from exc

    def _start_reaper(self) -> None:
        """A process of its own session that tears the node down if this one dies without
        doing it (SIGKILL, a CI cancel): it waits on a pipe, and sweeps when the pipe closes
        before it was told the tear-down is done."""
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "controlplane.node", "reap"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            cwd=Path(__file__).resolve().parents[1])

    def _stop_reaper(self) -> None:
        reaper, self._reaper = self._reaper, None
        if reaper is not None and reaper.stdin is not None:
            try:
                reaper.stdin.write(b"done\n")
                reaper.stdin.close()
            except OSError:
                pass
            reaper.wait(timeout=30)

    def start(self) -> None:
        t0 = time.monotonic()
        for d in (STATE_DIR, RUN_DIR, self.kubelet_dir):
            d.mkdir(parents=True, exist_ok=True)
        _make_cgroup_root()
        self._start_containerd()
        self._import_images()
        self._start_kubelet()
        self._start_scheduler()
        self._start_kube_proxy()
        self._wait_ready()
        _mark_created()
        self.timings["start"] = time.monotonic() - t0

    def _env(self) -> dict[str, str]:
        path = os.pathsep.join(sorted({str(p.parent) for p in self.binaries.values()}))
        return {**os.environ, "PATH": f"{path}{os.pathsep}{os.environ.get('PATH', '')}"}

    def _start_containerd(self) -> None:
        conf = STATE_DIR / "containerd.toml"
        conf.write_text(containerd_config(self.binaries))
        (REGISTRY_HOSTS / "_default").mkdir(parents=True, exist_ok=True)
        (REGISTRY_HOSTS / "_default" / "hosts.toml").write_text(f'server = "{NO_REGISTRY}"\n')
        network.write_cni_config(STATE_DIR / "cni" / "net.d", STATE_DIR / "cni" / "ipam")
        self.cp.spawn("containerd", [f"--config={conf}", "--log-level=warn"],
                      binary=self.binaries["containerd"], env=self._env())
        deadline = time.monotonic() + 30
        while self.ctr("version", check=False).returncode != 0:
            self._check_alive()
            if time.monotonic() > deadline:
                raise self._fail("containerd", "containerd did not answer within 30 s")
            time.sleep(0.1)

    def ctr(self, *args: str, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`ctr` against the node's containerd, in the CRI namespace (k8s.io)."""
        proc = subprocess.run([str(self.binaries["ctr"]), f"--address={self.socket}",
                               "--namespace=k8s.io", *args], capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise NodeError(f"`ctr {' '.join(args)}` failed: {proc.stderr.strip()[-1000:]}")
        return proc

    def _import_images(self) -> None:
        t0 = time.monotonic()
        for name, archive in self.image_archives.items():
            self.ctr("images", "import", "--no-unpack=false", str(archive))
            say(f"imported {name} ({archive.stat().st_size / 1e6:.0f} MB)")
        self.timings["import"] = time.monotonic() - t0

    def _start_kubelet(self) -> None:
        conf = STATE_DIR / "kubelet.yaml"
        resolv = STATE_DIR / "resolv.conf"
        # Pods resolve nothing outside: no cluster DNS runs, and the machine's resolver is
        # not theirs to use. In-cluster clients find the API server by its Service IP.
        resolv.write_text("# leadership node: no resolver reachable from pods\n"
                          "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        config = {**kubelet_config(self.socket, resolv, self.cp.pki),
                  **self.cp.node_config.get("kubelet", {})}
        conf.write_text(json.dumps(config, indent=2))
        self.cp.spawn("kubelet", [
            f"--config={conf}", f"--kubeconfig={self.cp.kubeconfig_for('kubelet-client')}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={network.NODE_IP}",
            f"--root-dir={self.kubelet_dir}", f"--cert-dir={self.kubelet_dir / 'pki'}",
            "--v=1",
        ], binary=self.binaries["kubelet"], env=self._env())

    def _start_scheduler(self) -> None:
        kubeconfig = self.cp.kubeconfig_for("scheduler")
        self.cp.spawn("kube-scheduler", [
            f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}", "--leader-elect=false",
            "--bind-address=127.0.0.1", "--secure-port=10259", "--v=1",
        ], binary=self.binaries["kube-scheduler"])

    def _start_kube_proxy(self) -> None:
        conf = STATE_DIR / "kube-proxy.yaml"
        config = {**kube_proxy_config(self.cp.kubeconfig_for("kube-proxy")),
                  **self.cp.node_config.get("kube-proxy", {})}
        conf.write_text(json.dumps(config, indent=2))
        self.cp.spawn("kube-proxy", [f"--config={conf}", "--v=1"],
                      binary=self.binaries["kube-proxy"], env=self._env())

    def _check_alive(self) -> None:
        for name in ("containerd", "kubelet", "kube-scheduler", "kube-proxy"):
            try:
                proc = self.cp._component(name)
            except KeyError:
                continue
            if proc.popen.poll() is not None:
                raise self._fail(name, f"{name} exited with {proc.popen.returncode}")

    def _fail(self, name: str, why: str) -> NodeError:
        error = self.cp._fail(self.cp._component(name) if any(
            p.name == name for p in self.cp._procs) else None, why)
        return NodeError(str(error))

    def _wait_ready(self) -> None:
        """Until the node is Ready without taints and a ClusterIP answers from the node."""
        import kubernetes

        from .cluster import sync_client

        v1 = kubernetes.client.CoreV1Api(sync_client(self.cp.kubeconfig))
        deadline = time.monotonic() + READY_TIMEOUT
        last = "the node has not registered"
        while True:
            self._check_alive()
            try:
                node = v1.read_node(NODE_NAME)
                ready = any(c.type == "Ready" and c.status == "True"
                            for c in node.status.conditions or [])
                taints = [t.key for t in node.spec.taints or []]
                last = f"Ready={ready}, taints={taints}"
                if ready and not taints and self._service_answers():
                    return
                if ready and not taints:
                    last = "kube-proxy has not programmed the kubernetes Service yet"
            except kubernetes.client.ApiException as exc:
                if exc.status != 404:
                    raise
            if time.monotonic() > deadline:
                raise self._fail("kubelet", f"the node was not ready within "
                                            f"{READY_TIMEOUT:.0f} s ({last})")
            time.sleep(0.2)

    def _service_answers(self) -> bool:
        """Whether the `kubernetes` Service's ClusterIP reaches the API server from here."""
        ctx = ssl.create_default_context(cafile=str(self.cp.pki / "ca.crt"))
        try:
            with urllib.request.urlopen(f"https://{network.KUBERNETES_SERVICE_IP}/livez",
                                        context=ctx, timeout=1) as resp:
                return bool(resp.status in (200, 401, 403))
        except urllib.error.HTTPError as exc:
            return exc.code in (401, 403)  # reached the API server; anonymous is refused
        except OSError:
            return False

    # --- what the tests and the demo look at ---------------------------------------------

    def events(self) -> RuntimeEvents:
        """containerd's container start and exit events from now on (close it after)."""
        return RuntimeEvents(self.binaries["ctr"], self.socket)

    @staticmethod
    def container_pids(container_id: str) -> list[int]:
        """The processes of one container (its id from a pod's status, with or without the
        ``containerd://`` prefix), read from its cgroup."""
        cid = container_id.removeprefix("containerd://")
        pids: set[int] = set()
        for procs in (host.CGROUP_FS / "pids" / CGROUP_ROOT).glob(f"**/{cid}/cgroup.procs"):
            pids.update(int(p) for p in procs.read_text().split())
        return sorted(pids)

    # --- tear-down -----------------------------------------------------------------------

    def stop_workloads(self) -> None:
        """Stop the kubelet first (so it restarts nothing), then every pod process and shim,
        then containerd; the control plane's processes stop after this."""
        if not self.owns_machine:
            return
        _mark_created()
        for name in ("kubelet", "kube-scheduler", "kube-proxy"):
            try:
                self.cp.stop_component(name)
            except KeyError:
                pass
        _kill_node_processes(include_daemons=False)
        try:
            self.cp.stop_component("containerd")
        except KeyError:
            pass

    def teardown(self) -> None:
        """Remove everything the node made (after `stop_workloads` and the control plane)."""
        if not self.owns_machine:
            return
        try:
            sweep(trust_unmarked=True)  # this run just ended, under the lock: all of it is ours
        finally:
            self._stop_reaper()
            self.lock.release()
            self.owns_machine = False


class RuntimeEvents:
    """containerd's task events (``ctr events``) from now on, stamped by containerd: which
    container started or exited when. `Node.events()` starts one; `close()` ends it.

    "From now on" holds from the moment the constructor returns: ``ctr events`` subscribes
    some time after it starts (longer on a busy machine), so the constructor labels the CRI
    namespace (a ``/namespaces/update`` event) until its own stream shows the event, then
    takes the label off."""

    TOPICS = ("/tasks/start", "/tasks/exit")
    PROBE = "leadership.dev/events-probe"

    def __init__(self, ctr: Path, socket: Path, within: float = 10.0) -> None:
        self.seen: list[tuple[float, str, str]] = []  # (unix time, topic, container id)
        self._subscribed = threading.Event()
        ctl = [str(ctr), f"--address={socket}"]
        self._proc = subprocess.Popen([*ctl, "--namespace=k8s.io", "events"],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        probes = iter(range(1, 1 << 30))

        def subscribed() -> bool:
            subprocess.run([*ctl, "namespaces", "label", "k8s.io",
                            f"{self.PROBE}={next(probes)}"], capture_output=True, timeout=10)
            return self._subscribed.wait(0.2)

        try:
            eventually(subscribed, within, "containerd's event stream subscribed", every=0)
        except AssertionError:
            self.close()
            raise
        finally:
            subprocess.run([*ctl, "namespaces", "label", "k8s.io", f"{self.PROBE}="],
                           capture_output=True, timeout=10)

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            # 2026-12-01 09:21:37.681489873 +0000 UTC k8s.io /tasks/exit {"container_id": ...}
            parts = line.split(" ", 6)
            if len(parts) >= 7 and parts[5] == "/namespaces/update" and self.PROBE in parts[6]:
                self._subscribed.set()
            if len(parts) < 7 or parts[5] not in self.TOPICS:
                continue
            day, clock = parts[0], parts[1]
            whole, _, fraction = clock.partition(".")
            stamp = datetime.datetime.fromisoformat(f"{day}T{whole}+00:00").timestamp()
            self.seen.append((stamp + float(f"0.{fraction or 0}"), parts[5],
                              json.loads(parts[6])["container_id"]))

    def when(self, topic: str, container_id: str) -> float:
        """When `container_id` (with or without ``containerd://``) had `topic` (the last time)."""
        cid = container_id.removeprefix("containerd://")
        times = [t for t, top, c in list(self.seen) if top == topic and c == cid]
        if not times:
            raise LookupError(f"no {topic} event for container {cid[:12]}")
        return times[-1]

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)
        self._thread.join(timeout=10)


# --- configuration -------------------------------------------------------------------------

REGISTRY_HOSTS = STATE_DIR / "registry-hosts"
#: Where every image pull goes: a loopback port nothing listens on.
NO_REGISTRY = "http://127.0.0.1:1"


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


# --- what the node changes, recorded before and undone after -----------------------------

BEFORE_FILE = STATE_DIR / "before.json"


def _read_sysctl(name: str) -> str | None:
    try:
        return (Path("/proc/sys") / name).read_text().strip()
    except OSError:
        return None


def _record_before() -> None:
    """Note the hard-coded paths that do not exist yet and the sysctls' values."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    before = {
        "created": host.missing(HARD_CODED_PATHS),
        "sysctls": {name: value for name in SYSCTLS
                    if (value := _read_sysctl(name)) is not None},
    }
    BEFORE_FILE.write_text(json.dumps(before, indent=2))


def _make_cgroup_root() -> None:
    """The kubelet wants its cgroupRoot to exist in every controller; cpuset's must be
    populated before anything can join it."""
    for controller in host.cgroup_controllers():
        root = controller / CGROUP_ROOT
        root.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (root / knob).exists() and not (root / knob).read_text().strip():
                (root / knob).write_text((controller / knob).read_text())


def _node_cgroups() -> list[Path]:
    """Every cgroup of ours (deepest first): the kubelet's pods and BuildKit's builds."""
    return host.cgroup_tree(CGROUP_ROOT, images.BUILDKIT_CGROUP)


def _node_daemons(include_daemons: bool) -> set[int]:
    """Processes running one of our node binaries (shims always; daemons if asked)."""
    names = {"containerd-shim-runc-v2", "runc"}
    if include_daemons:
        names |= {"kubelet", "containerd", "kube-proxy", "kube-scheduler", "buildkitd"}
    cache = str(build.cache_root())
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            exe = os.readlink(proc / "exe")
        except OSError:
            continue
        if exe.startswith(cache) and Path(exe.removesuffix(" (deleted)")).name in names:
            found.add(int(proc.name))
    return found


def _kill_node_processes(include_daemons: bool = True) -> None:
    """SIGKILL every process in the node's cgroups and every shim (and, if asked, every
    daemon of ours), until none is left."""
    deadline = time.monotonic() + 30
    while True:
        pids = host.cgroup_pids(_node_cgroups()) | _node_daemons(include_daemons)
        pids.discard(os.getpid())
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise NodeError(f"processes of the node survived SIGKILL for 30 s: {sorted(pids)}")
        time.sleep(0.05)


def _mounts_under(roots: list[Path]) -> list[str]:
    """Mount points under any of `roots`, deepest first (from /proc/self/mountinfo)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def _unmount_all(roots: list[Path]) -> None:
    for _ in range(5):  # mounts can be stacked on one point
        points = _mounts_under(roots)
        if not points:
            return
        for point in points:
            host.unmount(point)
    left = _mounts_under(roots)
    if left:
        raise NodeError(f"could not unmount: {left}")


def _remove_nftables() -> None:
    """kube-proxy's tables (nftables mode), and the iptables chains the kubelet makes
    (``KUBE-*``) when an iptables binary exists."""
    if shutil.which("nft"):
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()  # "table ip kube-proxy"
            if len(parts) == 3 and parts[2] in ("kube-proxy", GUARD_TABLE):
                subprocess.run(["nft", "delete", "table", parts[1], parts[2]],
                               capture_output=True)
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            rules = subprocess.run([tool, "-w", "-t", table, "-S"], capture_output=True,
                                   text=True).stdout.splitlines()
            for rule in rules:
                if rule.startswith("-A ") and " KUBE-" in f" {rule}" and not rule.startswith(
                        "-A KUBE-"):
                    subprocess.run([tool, "-w", "-t", table, "-D", *rule.split()[1:]],
                                   capture_output=True)
            chains = [r.split()[1] for r in rules if r.startswith("-N KUBE-")]
            for chain in chains:
                subprocess.run([tool, "-w", "-t", table, "-F", chain], capture_output=True)
            for chain in chains:
                subprocess.run([tool, "-w", "-t", table, "-X", chain], capture_output=True)


MARK = ".made-by-leadership-node"


def _mark_created() -> None:
    """Mark every hard-coded path this run created, so that a later sweep knows it is ours
    even if this process is killed and the path is found much later."""
    if not BEFORE_FILE.exists():
        return
    for name in json.loads(BEFORE_FILE.read_text()).get("created", []):
        path = Path(name)
        if path.is_dir() and not path.is_symlink() and not (path / MARK).exists():
            (path / MARK).write_text("made by the leadership node; removed at its tear-down\n")


def _guard_forwarding() -> None:
    """Defence in depth beside forwarding being off: a table of ours that drops anything
    forwarded from the bridge to any other interface."""
    rules = (f"table inet {GUARD_TABLE} {{\n chain forward {{\n"
             "  type filter hook forward priority -200; policy accept;\n"
             f'  iifname "{network.BRIDGE}" oifname != "{network.BRIDGE}" drop\n }}\n}}\n')
    proc = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NodeError(f"could not install the forwarding guard: {proc.stderr.strip()}")


GUARD_TABLE = "leadership-node"


def sweep(*, trust_unmarked: bool) -> None:
    """Remove everything a node of ours leaves (see the module's doc). Idempotent: on a
    clean machine it does nothing. Paths the components create wherever they are told are
    removed if this run created them: marked ones always, unmarked ones only when
    `trust_unmarked` (the run just ended under the lock, so nothing else made them). Every
    step runs even if one fails; the failures are raised together at the end."""
    errors: list[str] = []

    def step(what: str, action: Any, *args: Any) -> None:
        try:
            action(*args)
        except Exception as exc:
            errors.append(f"{what}: {exc}")

    step("killing the node's processes", _kill_node_processes, True)
    before: dict[str, Any] = {}
    if BEFORE_FILE.exists():
        try:
            before = json.loads(BEFORE_FILE.read_text())
        except ValueError as exc:
            errors.append(f"{BEFORE_FILE} is unreadable ({exc}): hard-coded paths kept")
    created = [Path(p) for p in before.get("created", [])]
    ours = [p for p in created if trust_unmarked or (p / MARK).exists()]
    step("removing nftables and iptables rules", _remove_nftables)
    step("unmounting", _unmount_all, [STATE_DIR, RUN_DIR, *ours, images.buildkit_root()])
    step("removing cgroups", host.remove_cgroups, CGROUP_ROOT, images.BUILDKIT_CGROUP)
    for link in _bridge_ports():
        subprocess.run(["ip", "link", "delete", link], capture_output=True)
    step("removing the bridge", network.delete_bridge)
    for name, value in before.get("sysctls", {}).items():
        if _read_sysctl(name) != value:
            step(f"restoring {name}", (Path("/proc/sys") / name).write_text, value + "\n")
    step("removing the paths it created", host.remove_paths, [str(p) for p in ours])
    left = [str(p) for p in created if p not in ours and os.path.lexists(p)]
    if left:
        errors.append(f"kept, not marked as ours: {', '.join(left)} (remove them by hand if "
                      "a killed node of this project made them)")
    for d in (RUN_DIR, STATE_DIR):
        shutil.rmtree(d, ignore_errors=True)
        if d.exists():
            errors.append(f"could not remove {d}")
    if errors:
        raise NodeError("tear-down incomplete: " + "; ".join(errors))


def _bridge_ports() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "master", network.BRIDGE],
                         capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
            if line.count(":") >= 2]


def leftovers() -> list[str]:
    """What of a node is still on this machine (nothing after a complete tear-down): for
    the tests that bring a node up and down."""
    found = []
    for path in (STATE_DIR, RUN_DIR):
        if path.exists():
            found.append(str(path))
    if network.bridge_exists():
        found.append(f"the bridge {network.BRIDGE}")
    found += [f"cgroup {c}" for c in _node_cgroups()]
    found += [f"mount {m}" for m in _mounts_under([STATE_DIR, RUN_DIR,
                                                   images.buildkit_root()])]
    found += [f"process {p}" for p in _node_daemons(include_daemons=True)]
    if shutil.which("nft"):
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True,
                                text=True).stdout
        found += [f"nftables {t.strip()}" for t in tables.splitlines()
                  if t.strip().endswith((" kube-proxy", f" {GUARD_TABLE}"))]
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool):
            for table in ("filter", "nat", "mangle"):
                rules = subprocess.run([tool, "-w", "-t", table, "-S"], capture_output=True,
                                       text=True).stdout
                found += [f"{tool} -t {table} {r}" for r in rules.splitlines() if "KUBE-" in r]
    return found


def _reap() -> int:
    """Wait until the node's process ends; if it ended without tearing down, do it."""
    told = sys.stdin.read()
    if told.strip() == "done":
        return 0
    lock = host.NodeLock()
    deadline = time.monotonic() + 30
    while True:  # the dead process's lock goes with it; its children may still be dying
        try:
            lock.acquire()
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                return 1  # someone else holds it now: their node, not ours to sweep
            time.sleep(0.2)
    try:
        sweep(trust_unmarked=True)
    finally:
        lock.release()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m controlplane.node prepare|sweep`: install, build and cache what a node
    needs (packages, binaries, images) without starting one, so that `make test` builds
    before its timed tests run; or remove what a killed node left. On a machine that cannot
    host a node, `prepare` says why and exits 0 (the node's tests then fail with that
    reason); both exit 2 when another node of ours runs here."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m controlplane.node", description=main.__doc__)
    parser.add_argument("what", choices=["prepare", "sweep", "reap"],
                        help="prepare: build what a node needs; sweep: remove what a killed "
                             "node left behind; reap: (internal) sweep when stdin closes")
    args = parser.parse_args(argv)
    if args.what == "reap":
        return _reap()
    if sys.platform != "linux" or os.geteuid() != 0:
        say(f"no node on this machine: {host.why_no_node(_ours())}")
        return 0 if args.what == "prepare" else 2
    lock = host.NodeLock()
    try:
        lock.acquire()
    except RuntimeError as exc:
        say(str(exc))
        return 2
    try:
        if args.what == "sweep":
            sweep(trust_unmarked=False)
            say("swept: nothing of a node is left" if not leftovers()
                else f"left: {leftovers()}")
            return 0
        why = host.why_no_node(_ours(), leftover_of_ours=BEFORE_FILE.exists())
        if why:
            say(f"no node on this machine: {why}")
            return 0
        t0 = time.monotonic()
        host.ensure_packages(say)
        build.ensure([*NODE_BINARIES])
        images.ensure_all(say)
        say(f"ready: binaries and images cached ({time.monotonic() - t0:.0f} s)")
        return 0
    except (NodeError, build.BuildError, images.ImageError, RuntimeError, OSError) as exc:
        say(f"error: {exc}")
        return 2
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
