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

``python -m controlplane`` (``make controlplane``) starts one and waits for Ctrl-C.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import build, network
from .errors import ControlPlaneError
from .processes import die_with_parent, free_port, stop_process

if TYPE_CHECKING:
    from .node import Node

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


# --- PKI -----------------------------------------------------------------------------------

NODE_NAME = "leadership-node"
#: file stem -> (common name, organization, serving?): the identities a cluster's parts use.
#: Kubernetes' built-in RBAC knows each of these names (system:kube-scheduler, ...), and the
#: Node authorizer knows system:node:<name> in system:nodes.
IDENTITIES: dict[str, tuple[str, str | None, bool]] = {
    "apiserver": ("kube-apiserver", None, True),
    "admin": ("leadership-admin", "system:masters", False),
    "controller-manager": ("system:kube-controller-manager", None, False),
    "scheduler": ("system:kube-scheduler", None, False),
    "kube-proxy": ("system:kube-proxy", None, False),
    "kubelet-client": (f"system:node:{NODE_NAME}", "system:nodes", False),
    "kubelet-serving": (NODE_NAME, None, True),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters", False),
}
SERVER_NAMES = {
    "kube-apiserver": ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
    NODE_NAME: ("localhost", NODE_NAME),
}

def _write_pki(d: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=7)

    def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("leadership-test-ca"))
          .issuer_name(name("leadership-test-ca")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(not_before)
          .not_valid_after(not_after)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, org: str | None, server: bool) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn, org)).issuer_name(ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(not_before).not_valid_after(not_after)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if server:
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES[cn]]
            sans += [x509.IPAddress(ipaddress.ip_address(a))
                     for a in ("127.0.0.1", network.NODE_IP, network.KUBERNETES_SERVICE_IP)]
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        else:
            usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)

    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "ca.key").write_bytes(key_pem(ca_key))
    for stem, (cn, org, server) in IDENTITIES.items():
        crt, key = leaf(cn, org, server)
        (d / f"{stem}.crt").write_bytes(crt)
        (d / f"{stem}.key").write_bytes(key)
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (d / "sa.key").write_bytes(key_pem(sa))
    (d / "sa.pub").write_bytes(sa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for p in d.iterdir():
        p.chmod(0o600)


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


def _kubeconfig(server: str, pki: Path, identity: str = "admin") -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "leadership-test",
        "clusters": [{"name": "leadership-test", "cluster": {
            "server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": "admin", "user": {
            "client-certificate": str(pki / f"{identity}.crt"),
            "client-key": str(pki / f"{identity}.key")}}],
        "contexts": [{"name": "leadership-test", "context": {
            "cluster": "leadership-test", "user": "admin", "namespace": "default"}}],
    }, indent=2)


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    args: list[str]


@dataclass
class ControlPlane:
    """A running control plane. Use as a context manager, or call `start()` / `stop()`.

    With ``with_node=True`` it also runs a real node (`controlplane.node`): the pod bridge is
    made first, the API server binds and advertises the node's address (the ``kubernetes``
    Service cannot point at loopback), admits ServiceAccounts (tokens mounted the normal
    way), authorizes the kubelet with the Node authorizer, and the controller manager runs
    the node-lifecycle controller (which clears the not-ready taint). `stop()` tears the node
    down completely, whatever state it is in."""

    with_controller_manager: bool = False
    keep_logs: bool = False
    with_node: bool = False
    #: Settings merged over the node's component configurations: {"kube-proxy": {...},
    #: "kubelet": {...}} (e.g. kube-proxy's nftables.minSyncPeriod, for a benchmark).
    node_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="leadership-cp-")))
    server: str = ""
    kubeconfig: Path = field(init=False)
    audit_log: Path = field(init=False)
    binaries: dict[str, Path] = field(default_factory=dict)
    node: Node | None = field(default=None, init=False)
    _procs: list[_Process] = field(default_factory=list)
    _started: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.kubeconfig = self.dir / "kubeconfig"
        self.audit_log = self.dir / "logs" / "audit.log"
        if self.with_node:
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
        return network.NODE_IP if self.with_node else "127.0.0.1"

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spawn(self, name: str, args: list[str], *, binary: Path | None = None,
              env: dict[str, str] | None = None) -> _Process:
        """Start `name` (its cached binary unless `binary` is given) with `args`, logging to
        ``logs/<name>.log``; it dies with this process and is stopped by `stop()`."""
        # PR_SET_PDEATHSIG fires when the parent *thread* exits: a child started from a worker
        # thread would be killed when that thread ends. Spawn from the main thread only.
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(f"start {name} from the main thread (PR_SET_PDEATHSIG is "
                               "bound to the thread that forks)")
        log = self.logs / f"{name}.log"
        out = open(log, "ab")
        try:
            popen = subprocess.Popen([str(binary or self.binaries[name]), *args], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.dir, preexec_fn=die_with_parent,
                                     start_new_session=True, env=env)
        finally:
            out.close()
        proc = _Process(name, popen, log, args)
        self._procs.append(proc)
        return proc

    _spawn = spawn

    def kubeconfig_for(self, identity: str) -> Path:
        """A kubeconfig for one of the cluster's own identities (`IDENTITIES`)."""
        path = self.dir / f"kubeconfig-{identity}"
        if not path.exists():
            path.write_text(_kubeconfig(self.server, self.pki, identity))
        return path

    def _component(self, name: str) -> _Process:
        for proc in self._procs:
            if proc.name == name:
                return proc
        raise KeyError(f"{name} is not running in this control plane")

    def stop_component(self, name: str) -> list[str]:
        """Stop one component (SIGTERM, SIGKILL after 3 s); return its flags for a restart.
        Safe from any thread (tests run it off their event loop)."""
        old = self._component(name)
        stop_process(old.popen, grace=3)
        self._procs.remove(old)
        return old.args

    def start_component(self, name: str, args: list[str]) -> None:
        """Start a component stopped by `stop_component` again, same flags and port; main
        thread only. For the API server, follow with `wait_ready()`."""
        self._spawn(name, args)

    def wait_ready(self) -> None:
        """Wait for the API server's /readyz (safe from any thread)."""
        self._wait_ready(self._component("kube-apiserver"), self._component("etcd"),
                         time.monotonic())

    def restart(self, name: str, downtime: float = 0.0) -> None:
        """Stop a component, keep it down `downtime` s, start it again and wait until ready."""
        args = self.stop_component(name)
        time.sleep(downtime)
        self.start_component(name, args)
        if name == "kube-apiserver":
            self.wait_ready()

    def _fail(self, proc: _Process | None, why: str) -> StartError:
        self.keep_logs = True
        tail = ""
        if proc is not None and proc.log.exists():
            lines = proc.log.read_text(errors="replace").splitlines()[-25:]
            tail = "\n    " + "\n    ".join(lines)
        where = f"; its log: {proc.log}" if proc else ""
        return StartError(f"{why}{where} (all logs kept in {self.logs}){tail}")

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
            if self.with_node:
                from .node import Node

                self.node = Node(self)
                self.node.prepare()  # host checks, packages, binaries, images, the bridge
            self.binaries.update(build.ensure(names))
            self._start_all()
            if self.node is not None:
                self.node.start()
        except BaseException:
            self.stop()
            raise

    def _start_all(self) -> None:
        t0 = time.monotonic()
        _write_pki(self.pki)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd = self._spawn("etcd", [
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
        if self.with_node:
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
        api = self._spawn("kube-apiserver", [
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
            f"--allow-privileged={'false' if self.with_node else 'true'}",
            f"--audit-policy-file={self.dir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--v=1",
        ])
        self.kubeconfig.write_text(_kubeconfig(self.server, self.pki))
        self._wait_ready(api, etcd, t0)
        if self.with_node:
            self.kubectl("apply", "-f", "-", input=network.HOST_NETWORK_POLICY)
        if self.with_controller_manager:
            self.start_controller_manager()

    def start_controller_manager(self) -> None:
        """Start kube-controller-manager (idempotent): Deployments then make Pods, and garbage
        collection and namespace deletion work."""
        if any(p.name == "kube-controller-manager" for p in self._procs):
            return
        if "kube-controller-manager" not in self.binaries:
            self.binaries.update(build.ensure(["kube-controller-manager"]))
        # Without a node nothing would clear a node's not-ready taint; with one, the
        # node-lifecycle controller must run, or nothing ever schedules.
        lifecycle = "" if self.with_node else "-nodelifecycle,"
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

    def _wait_ready(self, api: _Process, etcd: _Process, t0: float) -> None:
        deadline = t0 + READY_TIMEOUT
        last = "no answer yet"
        while time.monotonic() < deadline:
            for proc in (etcd, api):
                if proc.popen.poll() is not None:
                    raise self._fail(proc, f"{proc.name} exited with {proc.popen.returncode}")
            try:
                status, body = self.get("/readyz", timeout=2)
                if status == 200:
                    return
                last = f"/readyz answered {status}: {body[-300:].decode(errors='replace')}"
            except (OSError, ssl.SSLError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise self._fail(api, f"kube-apiserver not ready within {READY_TIMEOUT:.0f}s ({last})")

    def check_alive(self) -> None:
        for proc in self._procs:
            if proc.popen.poll() is not None:
                raise self._fail(proc, f"{proc.name} died with {proc.popen.returncode}")

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.binaries["kubectl"]), f"--kubeconfig={self.kubeconfig}",
                               *args], text=True, capture_output=True, timeout=timeout,
                              input=input)
        if check and proc.returncode != 0:
            raise KubectlError(proc, args)
        return proc

    def stop(self) -> None:
        """Stop everything and remove its files (idempotent, safe after a failed start).
        A node is torn down completely: its pods' processes, mounts, cgroups, nftables
        rules, network and files (`controlplane.node.Node.stop`)."""
        node, self.node = self.node, None
        try:
            if node is not None:
                node.stop_workloads()  # kubelet, pods and runtime go before the API server
        finally:
            try:
                self._stop_processes()
                if node is not None:
                    node.teardown()
            finally:
                self._started = False
                if self.keep_logs:
                    print(f"control plane logs kept in {self.logs}", file=sys.stderr)
                else:
                    shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_processes(self) -> None:
        for proc in reversed(self._procs):
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in reversed(self._procs):
            try:
                proc.popen.wait(timeout=3)  # the apiserver would drain watches for longer
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        self._procs.clear()
