"""What the node changes on the machine, recorded before and undone after: its processes,
mounts, cgroups, nftables and iptables rules, the bridge, the paths its components made,
the sysctls. `sweep` is the whole tear-down, from any state; `leftovers` says what is left;
`reap` is the tear-down a killed run gets from its watcher."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from .. import build, host, images, network
from ..waiting import eventually
from .machine import (
    BEFORE_FILE,
    CGROUP_ROOT,
    GUARD_TABLE,
    HARD_CODED_PATHS,
    MARK,
    RUN_DIR,
    STATE_DIR,
    SYSCTLS,
    NodeError,
)


def read_sysctl(name: str) -> str | None:
    try:
        return (Path("/proc/sys") / name).read_text().strip()
    except OSError:
        return None


def record_before() -> None:
    """Note the hard-coded paths that do not exist yet and the sysctls' values."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    before = {
        "created": host.missing(HARD_CODED_PATHS),
        "sysctls": {name: value for name in SYSCTLS
                    if (value := read_sysctl(name)) is not None},
    }
    BEFORE_FILE.write_text(json.dumps(before, indent=2))


def make_cgroup_root() -> None:
    """The kubelet wants its cgroupRoot to exist in every controller; cpuset's must be
    populated before anything can join it."""
    for controller in host.cgroup_controllers():
        root = controller / CGROUP_ROOT
        root.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (root / knob).exists() and not (root / knob).read_text().strip():
                (root / knob).write_text((controller / knob).read_text())


def node_cgroups() -> list[Path]:
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


def kill_node_processes(include_daemons: bool = True) -> None:
    """SIGKILL every process in the node's cgroups and every shim (and, if asked, every
    daemon of ours), until none is left."""
    left: set[int] = set()

    def none_left() -> bool:
        left.clear()
        left.update(host.cgroup_pids(node_cgroups()) | _node_daemons(include_daemons))
        left.discard(os.getpid())
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return not left

    eventually(none_left, 30, "every process of the node killed", every=0.05,
               fail=lambda _: NodeError(f"processes of the node survived SIGKILL for 30 s: "
                                        f"{sorted(left)}"))


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

def mark_created() -> None:
    """Mark every hard-coded path this run created, so that a later sweep knows it is ours
    even if this process is killed and the path is found much later."""
    if not BEFORE_FILE.exists():
        return
    for name in json.loads(BEFORE_FILE.read_text()).get("created", []):
        path = Path(name)
        if path.is_dir() and not path.is_symlink() and not (path / MARK).exists():
            (path / MARK).write_text("made by the leadership node; removed at its tear-down\n")


def guard_forwarding() -> None:
    """Defence in depth beside forwarding being off: a table of ours that drops anything
    forwarded from the bridge to any other interface."""
    rules = (f"table inet {GUARD_TABLE} {{\n chain forward {{\n"
             "  type filter hook forward priority -200; policy accept;\n"
             f'  iifname "{network.BRIDGE}" oifname != "{network.BRIDGE}" drop\n }}\n}}\n')
    proc = subprocess.run(["nft", "-f", "-"], input=rules, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NodeError(f"could not install the forwarding guard: {proc.stderr.strip()}")

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

    step("killing the node's processes", kill_node_processes, True)
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
        if read_sysctl(name) != value:
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
    found += [f"cgroup {c}" for c in node_cgroups()]
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


def reap() -> int:
    """Wait until the node's process ends; if it ended without tearing down, do it."""
    told = sys.stdin.read()
    if told.strip() == "done":
        return 0
    lock = host.NodeLock()

    def acquired() -> bool:
        try:
            lock.acquire()
            return True
        except RuntimeError:
            return False

    # The dead process's lock goes with it; its children may still be dying.
    try:
        eventually(acquired, 30, "the node lock", every=0.2,
                   fail=lambda _: RuntimeError("the node lock stays held"))
    except RuntimeError:
        return 1  # someone else holds it now: their node, not ours to sweep
    try:
        sweep(trust_unmarked=True)
    finally:
        lock.release()
    return 0


