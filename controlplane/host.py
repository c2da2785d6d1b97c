"""What a node needs from this machine, checked and installed before anything starts.

- `why_no_node()` answers, in one line, why a node cannot run here (not Linux, not root, no
  overlayfs or cgroups, or a kubelet or container runtime of this machine's own already
  running: a node of ours would fight it over ports, cgroups and iptables), or None.
- `ensure_packages()` installs the Debian packages the node and the image build use, saying
  which and why before it does (root, `apt-get`).
- `NodeLock` makes sure only one node of ours runs on the machine at a time (the kubelet's
  ports and the bridge are machine-wide).

Nothing here starts a component; `controlplane.node` does.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from . import network
from .waiting import eventually

# command (or file) -> (Debian package, why the node needs it)
PACKAGES: dict[str, tuple[str, str]] = {
    "nft": ("nftables", "kube-proxy's nftables mode programs Services with it"),
    "debootstrap": ("debootstrap", "makes the image's Python base from Debian packages"),
    "gcc": ("gcc", "compiles runc (cgo, for seccomp) and the pause process"),
    "pkg-config": ("pkg-config", "finds libseccomp for runc's build"),
    "/usr/include/seccomp.h": ("libseccomp-dev", "runc applies the pods' seccomp profile"),
    "nsenter": ("util-linux", "the tests look inside pods' network namespaces"),
}
#: Processes of another kubelet or container runtime; a node of ours never runs beside them.
FOREIGN_DAEMONS = ("kubelet", "kube-proxy", "containerd", "dockerd", "crio", "k3s", "k0s",
                   "podman", "buildkitd")
FOREIGN_SOCKETS = ("/run/containerd/containerd.sock", "/var/run/docker.sock",
                   "/run/crio/crio.sock", "/run/k3s/containerd/containerd.sock")
#: The kubelet's, kube-proxy's and kube-scheduler's fixed ports (healthz, metrics, server).
NODE_PORTS = (10250, 10248, 10249, 10256, 10259)
LOCK_FILE = Path("/run/leadership-node.lock")


def _is_ours(exe: str, ours: tuple[Path, ...]) -> bool:
    return any(exe.startswith(str(root)) for root in ours)


def foreign_processes(ours: tuple[Path, ...]) -> list[str]:
    """`name (pid N, /path)` of every running kubelet or runtime not built by us."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            comm = (proc / "comm").read_text().strip()
            if comm not in FOREIGN_DAEMONS:
                continue
            exe = os.readlink(proc / "exe")
        except OSError:
            continue
        if not _is_ours(exe, ours):
            found.append(f"{comm} (pid {proc.name}, {exe})")
    return found


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def cgroup_v2_only() -> bool:
    return (CGROUP_FS / "cgroup.controllers").exists()


def overlapping_networks() -> list[str]:
    """This machine's routes and addresses that overlap the node's pod or Service range
    (except the node's own bridge): a node would cut them off."""
    ours = [ipaddress.ip_network(network.POD_CIDR), ipaddress.ip_network(network.SERVICE_CIDR)]
    found = []
    routes = json.loads(subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"],
                                       capture_output=True, text=True).stdout or "[]")
    for route in routes:
        dst, dev = route.get("dst", ""), route.get("dev", "")
        if dst in ("default", "") or dev == network.BRIDGE or route.get("type") in (
                "local", "broadcast"):
            continue
        try:
            net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if any(net.overlaps(o) for o in ours):
            found.append(f"route {dst} dev {dev}")
    links = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True,
                                      text=True).stdout or "[]")
    for link in links:
        if link.get("ifname") == network.BRIDGE:
            continue
        for addr in link.get("addr_info", []):
            net = ipaddress.ip_network(f"{addr['local']}/{addr['prefixlen']}", strict=False)
            if any(net.overlaps(o) for o in ours):
                found.append(f"address {addr['local']}/{addr['prefixlen']} on {link['ifname']}")
    return found


def foreign_kube_rules() -> list[str]:
    """nftables tables or iptables chains of a kube-proxy or kubelet: only a leftover of
    ours may exist before our node starts (the sweep knows it)."""
    found = []
    if shutil.which("nft"):
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True,
                                text=True).stdout
        found += [t.strip() for t in tables.splitlines() if t.strip().endswith(" kube-proxy")]
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool):
            for table in ("filter", "nat", "mangle"):
                rules = subprocess.run([tool, "-w", "-t", table, "-S"], capture_output=True,
                                       text=True).stdout
                found += [f"{tool} -t {table} {r}" for r in rules.splitlines()
                          if r.startswith("-N KUBE-")]
    return found


def why_no_node(ours: tuple[Path, ...] = (), *, leftover_of_ours: bool = False) -> str | None:
    """One line saying why this machine cannot host our node now, or None if it can.
    `ours` are directories whose binaries are this project's (a leftover of ours is not
    foreign: the node sweeps it); `leftover_of_ours` says that a killed node of ours left
    state behind, so Kubernetes rules found now are its own."""
    if sys.platform != "linux":
        return f"a node needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "a node needs root (the kubelet manages cgroups, mounts and network namespaces)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlayfs, which the container runtime needs"
    if not CGROUP_FS.is_dir() or not any(CGROUP_FS.iterdir()):
        return "no cgroup filesystem is mounted at /sys/fs/cgroup"
    if cgroup_v2_only():
        return ("this machine has cgroup v2 only; the node is made for the cgroup v1 (hybrid) "
                "machines this project runs on")
    if shutil.which("ip") is None:
        return "iproute2's `ip` is missing (apt-get install iproute2)"
    forwarding = network.forwarding_enabled()
    if forwarding:
        return ("IP forwarding is on (" + ", ".join(forwarding) + "): pods could reach beyond "
                "this machine; the node runs only where it is off")
    overlaps = overlapping_networks()
    if overlaps:
        return (f"this machine's networks overlap the node's ranges ({network.POD_CIDR}, "
                f"{network.SERVICE_CIDR}): {', '.join(overlaps)}")
    foreign = foreign_processes(ours)
    if foreign:
        return ("this machine runs a kubelet or container runtime of its own: "
                + ", ".join(foreign) + "; a second one would fight it")
    sockets = [s for s in FOREIGN_SOCKETS if Path(s).exists()]
    if sockets:
        return f"a container runtime's socket exists: {', '.join(sockets)}"
    if not leftover_of_ours:
        rules = foreign_kube_rules()
        if rules:
            return ("Kubernetes network rules of another node are here: " + ", ".join(rules[:3])
                    + ("..." if len(rules) > 3 else ""))
    busy = [p for p in NODE_PORTS if _listening(p)]
    if busy:
        return f"the node's ports are in use: {', '.join(map(str, busy))}"
    return None


def missing_packages() -> dict[str, str]:
    """Debian package -> why, for each that this machine lacks."""
    missing = {}
    for what, (package, why) in PACKAGES.items():
        present = Path(what).exists() if what.startswith("/") else shutil.which(what)
        if not present:
            missing[package] = why
    return missing


def ensure_packages(say: object = print) -> list[str]:
    """Install the missing Debian packages (printing each and why first); return them."""
    missing = missing_packages()
    if not missing:
        return []
    if shutil.which("apt-get") is None:
        raise RuntimeError("missing packages and no apt-get to install them: "
                           + ", ".join(f"{p} ({why})" for p, why in missing.items()))
    assert callable(say)
    say("Installing Debian packages the node needs (apt-get):")
    for package, why in missing.items():
        say(f"  {package}: {why}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(args)}` failed:\n{proc.stdout[-1500:]}"
                               f"{proc.stderr[-1500:]}")
    return list(missing)


class NodeLock:
    """An exclusive lock on the machine's one node (flock: released when the process dies)."""

    def __init__(self, path: Path = LOCK_FILE) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise RuntimeError(f"another leadership node runs on this machine (pid "
                                   f"{holder}; lock {self.path}); one node per machine") from None
            # The holder unlinks the file before unlocking it: a lock taken on a file that is
            # no longer the one at the path is no lock at all; take the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still held: nobody can take a stale copy
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


# --- cgroups -------------------------------------------------------------------------------

CGROUP_FS = Path("/sys/fs/cgroup")


def cgroup_controllers() -> list[Path]:
    """Each mounted cgroup hierarchy: the v1 controllers (and a hybrid's v2 tree), or the one
    v2 tree."""
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS]  # cgroup v2 only
    return [d for d in CGROUP_FS.iterdir() if d.is_dir() and not d.is_symlink()]


def cgroup_tree(*tops: str) -> list[Path]:
    """Every cgroup under the top-level cgroups `tops`, in every hierarchy, deepest first."""
    found: list[Path] = []
    for controller in cgroup_controllers():
        for top in tops:
            # os.walk ignores directories that vanish under it: the kubelet and runc remove
            # cgroups while this walks.
            for parent, _dirs, _files in os.walk(controller / top):
                found.append(Path(parent))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def cgroup_pids(cgroups: list[Path]) -> set[int]:
    pids: set[int] = set()
    for cgroup in cgroups:
        try:
            pids.update(int(p) for p in (cgroup / "cgroup.procs").read_text().split())
        except (OSError, ValueError):
            continue
    return pids


def remove_cgroups(*tops: str, within: float = 10.0) -> None:
    """rmdir every cgroup under `tops`, retrying while the kernel still counts a process
    that was just killed (EBUSY), for up to `within` seconds."""
    busy: list[str] = []

    def removed() -> bool:
        busy.clear()
        for cgroup in cgroup_tree(*tops):
            try:
                cgroup.rmdir()
            except FileNotFoundError:
                continue
            except OSError as exc:
                busy.append(f"{cgroup}: {exc.strerror}")
        return not busy

    eventually(removed, within, "the cgroups removed", every=0.05,
               fail=lambda _: RuntimeError(f"could not remove the cgroups "
                                           f"{', '.join(busy[:3])}"))


# --- paths other programs create wherever they are told ------------------------------------

def missing(paths: tuple[str, ...] | list[str]) -> list[str]:
    """Those of `paths` that do not exist now (so that what creates them can be undone)."""
    return [p for p in paths if not os.path.lexists(p)]


def remove_paths(paths: list[str]) -> None:
    """Remove each of `paths` (files, symlinks or trees) that exists."""
    for name in paths:
        path = Path(name)
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)


def unmount(point: str) -> None:
    """Detach one mount (umount2 MNT_DETACH), without util-linux's /run/mount bookkeeping."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.umount2(point.encode(), 2) != 0:  # MNT_DETACH
        errno = ctypes.get_errno()
        if errno not in (22, 2):  # EINVAL: not a mount (any more); ENOENT: gone
            raise OSError(errno, os.strerror(errno), point)
