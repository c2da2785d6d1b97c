"""`Node`: one real node's bring-up and tear-down (see the package's doc)."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import build, host, images, network
from ..clients import sync_client
from ..processes import Supervisor
from ..waiting import eventually
from .configs import containerd_config, kube_proxy_config, kubelet_config
from .events import RuntimeEvents
from .janitor import (
    guard_forwarding,
    kill_node_processes,
    make_cgroup_root,
    mark_created,
    record_before,
    sweep,
)
from .machine import (
    BEFORE_FILE,
    CGROUP_ROOT,
    NO_REGISTRY,
    NODE_BINARIES,
    NODE_NAME,
    READY_TIMEOUT,
    REGISTRY_HOSTS,
    RUN_DIR,
    STATE_DIR,
    NodeError,
    own_dirs,
    say,
)

if TYPE_CHECKING:
    from ..launcher import ControlPlane

class Node:
    """A node beside `control_plane` (see the package's doc): it reads the control plane's
    address and credentials, and owns its own processes (`processes`), logging to `logs`
    (kept when something fails, or with `keep_logs`). `config` is merged over its
    components' configurations: {"kube-proxy": {...}, "kubelet": {...}} (kube-proxy's
    nftables.minSyncPeriod, say, for a benchmark)."""

    def __init__(self, control_plane: ControlPlane, *,
                 config: dict[str, dict[str, Any]] | None = None,
                 keep_logs: bool = False) -> None:
        self.control_plane = control_plane
        self.config = config or {}
        self.keep_logs = keep_logs
        self.logs = Path(tempfile.mkdtemp(prefix="leadership-node-logs-"))
        self.processes = Supervisor(self.logs, self.logs)
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
            raise NodeError(f"cannot run a node here: {host.why_no_node(own_dirs())}")
        try:
            self.lock.acquire()
        except RuntimeError as exc:
            raise NodeError(str(exc)) from None
        why = host.why_no_node(own_dirs(), leftover_of_ours=BEFORE_FILE.exists())
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
            record_before()
            network.create_bridge()
            guard_forwarding()
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
            cwd=Path(__file__).resolve().parents[2])

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
        make_cgroup_root()
        self._start_containerd()
        self._import_images()
        self._start_kubelet()
        self._start_scheduler()
        self._start_kube_proxy()
        self._wait_ready()
        mark_created()
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
        self._spawn("containerd", [f"--config={conf}", "--log-level=warn"])

        def answers() -> bool:
            self.check_alive()
            return self.ctr("version", check=False).returncode == 0

        eventually(answers, 30, "containerd answering", every=0.1,
                   fail=lambda _: self._fail("containerd", "containerd did not answer within "
                                                           "30 s"))

    def _spawn(self, name: str, args: list[str]) -> None:
        self.processes.spawn(name, self.binaries[name], args, env=self._env())

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
        cp = self.control_plane
        config = {**kubelet_config(self.socket, resolv, cp.pki),
                  **self.config.get("kubelet", {})}
        conf.write_text(json.dumps(config, indent=2))
        self._spawn("kubelet", [
            f"--config={conf}", f"--kubeconfig={cp.kubeconfig_for('kubelet-client')}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={network.NODE_IP}",
            f"--root-dir={self.kubelet_dir}", f"--cert-dir={self.kubelet_dir / 'pki'}",
            "--v=1",
        ])

    def _start_scheduler(self) -> None:
        kubeconfig = self.control_plane.kubeconfig_for("scheduler")
        self._spawn("kube-scheduler", [
            f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}", "--leader-elect=false",
            "--bind-address=127.0.0.1", "--secure-port=10259", "--v=1",
        ])

    def _start_kube_proxy(self) -> None:
        conf = STATE_DIR / "kube-proxy.yaml"
        config = {**kube_proxy_config(self.control_plane.kubeconfig_for("kube-proxy")),
                  **self.config.get("kube-proxy", {})}
        conf.write_text(json.dumps(config, indent=2))
        self._spawn("kube-proxy", [f"--config={conf}", "--v=1"])

    def check_alive(self) -> None:
        exited = self.processes.exited()
        if exited is not None:
            raise self._fail(exited.name, f"{exited.name} exited with "
                                          f"{exited.popen.returncode}")

    def _fail(self, name: str, why: str) -> NodeError:
        self.keep_logs = True
        return NodeError(f"{self.processes.failure(self.processes.get(name), why)}\n    "
                         f"(the node's logs kept in {self.logs})")

    def _wait_ready(self) -> None:
        """Until the node is Ready without taints and a ClusterIP answers from the node."""
        import kubernetes

        v1 = kubernetes.client.CoreV1Api(sync_client(self.control_plane.kubeconfig))
        last = ["the node has not registered"]

        def ready() -> bool:
            self.check_alive()
            try:
                node = v1.read_node(NODE_NAME)
            except kubernetes.client.ApiException as exc:
                if exc.status != 404:
                    raise
                return False
            ready = any(c.type == "Ready" and c.status == "True"
                        for c in node.status.conditions or [])
            taints = [t.key for t in node.spec.taints or []]
            last[0] = f"Ready={ready}, taints={taints}"
            if ready and not taints:
                if self._service_answers():
                    return True
                last[0] = "kube-proxy has not programmed the kubernetes Service yet"
            return False

        eventually(ready, READY_TIMEOUT, "the node ready", every=0.2,
                   fail=lambda _: self._fail("kubelet", f"the node was not ready within "
                                                        f"{READY_TIMEOUT:.0f} s ({last[0]})"))

    def _service_answers(self) -> bool:
        """Whether the `kubernetes` Service's ClusterIP reaches the API server from here."""
        ctx = ssl.create_default_context(cafile=str(self.control_plane.pki / "ca.crt"))
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
        mark_created()
        for name in ("kubelet", "kube-scheduler", "kube-proxy"):
            self.processes.stop(name)
        kill_node_processes(include_daemons=False)
        self.processes.stop_all()

    def teardown(self) -> None:
        """Remove everything the node made (after `stop_workloads` and the control plane),
        and its logs unless they are kept."""
        try:
            if self.owns_machine:
                try:
                    sweep(trust_unmarked=True)  # this run just ended, under the lock: ours
                finally:
                    self._stop_reaper()
                    self.lock.release()
                    self.owns_machine = False
        finally:
            if self.keep_logs:
                print(f"node logs kept in {self.logs}", file=sys.stderr)
            else:
                shutil.rmtree(self.logs, ignore_errors=True)


