"""Start a real etcd + kube-apiserver (and optionally kube-controller-manager) on loopback.

Like controller-runtime's envtest: no kubelet, no Docker. The launcher

- builds the binaries when they are missing (`controlplane.build`);
- makes a throw-away PKI: a CA, the API server's serving certificate, an admin client
  certificate in ``system:masters``, and the service-account signing key pair, so the
  TokenRequest API issues real ServiceAccount tokens;
- runs the API server with RBAC authorization and an audit log of Lease requests
  (``audit.log``: who made which request to which Lease, used to count requests in tests);
- writes an admin kubeconfig and waits for ``/readyz`` with a deadline;
- stops everything on `stop()` (or exit of the ``with`` block, or when this process dies:
  children get SIGKILL through PR_SET_PDEATHSIG), removing its temp dir; when something fails
  to start it keeps the component logs and names them in the error.

It knows no node. ``for_node=True`` configures it to serve one beside it
(`controlplane.local.LocalCluster` composes the two).

``python -m controlplane`` (``make controlplane``) starts one and waits for Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import build, network
from .errors import ControlPlaneError
from .pki import kubeconfig_file, write_pki
from .processes import Process, Supervisor, free_port
from .waiting import eventually

READY_TIMEOUT = float(os.environ.get("LEADERSHIP_CONTROLPLANE_READY_TIMEOUT", "90"))


class StartError(ControlPlaneError):
    """A component did not start; the message names its log."""


class KubectlError(subprocess.CalledProcessError, ControlPlaneError):
    """`kubectl` failed; the message is its command and what it printed on stderr."""

    def __init__(self, proc: subprocess.CompletedProcess[str], args: tuple[str, ...]) -> None:
        super().__init__(proc.returncode, proc.args, proc.stdout, proc.stderr)
        self.command = " ".join(args)

    def __str__(self) -> str:
        return f"`kubectl {self.command}` failed ({self.returncode}): {self.stderr.strip()}"


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    resources:
      - group: coordination.k8s.io
        resources: ["leases"]
  - level: None
"""


@dataclass
class ControlPlane:
    """A running control plane. Use as a context manager, or call `start()` / `stop()`.

    With ``for_node=True`` it serves a real node beside it (`controlplane.local`): the API
    server binds and advertises the node's address (the ``kubernetes`` Service cannot point
    at loopback, and the pod bridge must exist first), admits ServiceAccounts (tokens
    mounted the normal way), authorizes kubelets with the Node authorizer and reaches them
    with a client certificate, and the controller manager runs (with the node-lifecycle
    controller, which clears the not-ready taint)."""

    with_controller_manager: bool = False
    keep_logs: bool = False
    for_node: bool = False
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="leadership-cp-")))
    server: str = ""
    kubeconfig: Path = field(init=False)
    audit_log: Path = field(init=False)
    binaries: dict[str, Path] = field(default_factory=dict)
    processes: Supervisor = field(init=False)
    _started: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.kubeconfig = self.dir / "kubeconfig"
        self.audit_log = self.dir / "logs" / "audit.log"
        self.processes = Supervisor(self.logs, self.dir)
        if self.for_node:
            self.with_controller_manager = True  # Deployments make the node's pods

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def address(self) -> str:
        """The address the API server binds and advertises."""
        return network.NODE_IP if self.for_node else "127.0.0.1"

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, args: list[str]) -> Process:
        return self.processes.spawn(name, self.binaries[name], args)

    def kubeconfig_for(self, identity: str) -> Path:
        """A kubeconfig for one of the cluster's own identities (`IDENTITIES`)."""
        path = self.dir / f"kubeconfig-{identity}"
        if not path.exists():
            path.write_text(kubeconfig_file(self.server, self.pki, identity))
        return path

    def stop_component(self, name: str) -> list[str]:
        """Stop one component (SIGTERM, SIGKILL after 3 s); return its flags for a restart.
        Safe from any thread (tests run it off their event loop)."""
        args = self.processes.stop(name)
        if args is None:
            raise KeyError(f"{name} is not running in this control plane")
        return args

    def start_component(self, name: str, args: list[str]) -> None:
        """Start a component stopped by `stop_component` again, same flags and port; main
        thread only. For the API server, follow with `wait_ready()`."""
        self._spawn(name, args)

    def wait_ready(self) -> None:
        """Wait for the API server's /readyz (safe from any thread)."""
        self._wait_ready()

    def restart(self, name: str, downtime: float = 0.0) -> None:
        """Stop a component, keep it down `downtime` s, start it again and wait until ready."""
        args = self.stop_component(name)
        time.sleep(downtime)
        self.start_component(name, args)
        if name == "kube-apiserver":
            self.wait_ready()

    def _fail(self, proc: Process | None, why: str) -> StartError:
        self.keep_logs = True
        return StartError(f"{self.processes.failure(proc, why)}\n    (all logs kept in "
                          f"{self.logs})")

    def start(self) -> None:
        """Start everything (idempotent: a started control plane is left as it is)."""
        if self._started:
            return
        names = ["etcd", "kube-apiserver", "kubectl"]
        if self.with_controller_manager:
            names.append("kube-controller-manager")
        self.pki.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._started = True
        try:
            self.binaries.update(build.ensure(names))
            self._start_all()
        except BaseException:
            self.stop()
            raise

    def _api_server_flags(self, etcd_port: int, api_port: int) -> list[str]:
        if self.for_node:
            # Real pods: tokens mounted by the ServiceAccount admission plugin, the kubelet
            # confined to its own node's objects, and the API server able to reach the
            # kubelet (logs, exec) with a client certificate, checking the kubelet's.
            node_flags = [
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={self.pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={self.pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={self.pki / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        else:
            node_flags = ["--authorization-mode=RBAC",
                          "--disable-admission-plugins=ServiceAccount"]
        return [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--secure-port={api_port}", f"--bind-address={self.address}",
            f"--advertise-address={self.address}", f"--cert-dir={self.dir / 'apiserver-certs'}",
            f"--tls-cert-file={self.pki / 'apiserver.crt'}",
            f"--tls-private-key-file={self.pki / 'apiserver.key'}",
            f"--client-ca-file={self.pki / 'ca.crt'}",
            *node_flags,
            f"--service-cluster-ip-range={network.SERVICE_CIDR}",
            f"--service-account-issuer={self.server}/",
            f"--service-account-key-file={self.pki / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki / 'sa.key'}",
            f"--allow-privileged={'false' if self.for_node else 'true'}",
            f"--audit-policy-file={self.dir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--v=1",
        ]

    def _start_all(self) -> None:
        write_pki(self.pki)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self._spawn("etcd", [
            f"--data-dir={self.dir / 'etcd'}", "--name=default",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=2147483648",
        ])
        (self.dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self.server = f"https://{self.address}:{api_port}"
        self._spawn("kube-apiserver", self._api_server_flags(etcd_port, api_port))
        self.kubeconfig.write_text(kubeconfig_file(self.server, self.pki))
        self._wait_ready()
        if self.for_node:
            self.kubectl("apply", "-f", "-", input=network.HOST_NETWORK_POLICY)
        if self.with_controller_manager:
            self.start_controller_manager()

    def start_controller_manager(self) -> None:
        """Start kube-controller-manager (idempotent): Deployments then make Pods, and garbage
        collection and namespace deletion work."""
        if self.processes.get("kube-controller-manager") is not None:
            return
        if "kube-controller-manager" not in self.binaries:
            self.binaries.update(build.ensure(["kube-controller-manager"]))
        # Without a node nothing would clear a node's not-ready taint; with one, the
        # node-lifecycle controller must run, or nothing ever schedules.
        lifecycle = "" if self.for_node else "-nodelifecycle,"
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={self.pki / 'ca.crt'}",
            f"--cluster-signing-key-file={self.pki / 'ca.key'}",
            "--use-service-account-credentials=false",
            f"--controllers=*,-nodeipam,{lifecycle}-cloud-node-lifecycle,"
            "-service-lb-controller,-route",
            "--v=1",
        ])

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """An admin GET against the API server (e.g. ``/readyz``, ``/metrics``)."""
        try:
            with urllib.request.urlopen(self.server + path, context=self._ssl(),
                                        timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _wait_ready(self) -> None:
        last = ["no answer yet"]

        def ready() -> bool:
            exited = self.processes.exited()
            if exited is not None:
                raise self._fail(exited, f"{exited.name} exited with "
                                         f"{exited.popen.returncode}")
            try:
                status, body = self.get("/readyz", timeout=2)
                if status == 200:
                    return True
                last[0] = f"/readyz answered {status}: {body[-300:].decode(errors='replace')}"
            except (OSError, ssl.SSLError) as exc:
                last[0] = str(exc)
            return False

        eventually(ready, READY_TIMEOUT, "kube-apiserver ready", every=0.2,
                   fail=lambda _: self._fail(self.processes.get("kube-apiserver"),
                                             "kube-apiserver not ready within "
                                             f"{READY_TIMEOUT:.0f}s ({last[0]})"))

    def check_alive(self) -> None:
        exited = self.processes.exited()
        if exited is not None:
            raise self._fail(exited, f"{exited.name} died with {exited.popen.returncode}")

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.binaries["kubectl"]), f"--kubeconfig={self.kubeconfig}",
                               *args], text=True, capture_output=True, timeout=timeout,
                              input=input)
        if check and proc.returncode != 0:
            raise KubectlError(proc, args)
        return proc

    def stop(self) -> None:
        """Stop everything and remove its files (idempotent, safe after a failed start)."""
        try:
            self.processes.stop_all()
        finally:
            self._started = False
            if self.keep_logs:
                print(f"control plane logs kept in {self.logs}", file=sys.stderr)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
