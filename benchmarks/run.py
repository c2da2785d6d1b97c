"""`make bench`: our Python candidates against the peers users would pick, in one run.

Contenders: our Candidate on each store (each process imports only its own client),
client-go's ``tools/leaderelection`` (LeaseLock, ReleaseOnCancel), and the official Python
client's ``kubernetes.aio.leaderelection`` (LeaseLock), all on one control plane.

Measured on a real etcd + kube-apiserver on loopback, with matched timings
(Lease duration 4 s; Python renews every 1.33 s and gives up after 2.67 s; client-go uses
RenewDeadline 2.67 s and RetryPeriod 1.33 s, its renew and poll interval):

- graceful handover: SIGTERM to the leader process (which releases the Lease) until the
  next candidate process prints LEADING;
- crash failover: SIGKILL of the leader process until the next one prints LEADING;
- requests: API requests to the Lease per minute by the leader and by one follower, with one
  leader and two followers, counted by the API server (its audit log names each process's
  own ServiceAccount), never by the clients;
- memory: resident set size of one idle candidate process.

Prints a table and writes it to docs/benchmarks.md. ``--trials N`` sets the repetitions.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from controlplane import build
from controlplane.cluster import audit_events, service_account_kubeconfig
from controlplane.launcher import ControlPlane

TTL = 4
RENEW_INTERVAL = TTL / 3
RENEW_DEADLINE = 2 * TTL / 3
OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
KINDS = ("python-kubernetes", "python-pykube", "client-go", "kubernetes-leaderelection")
OURS = KINDS[:2]
PEERS = KINDS[2:]
LOGS = Path(tempfile.mkdtemp(prefix="leadership-bench-"))
RNG = random.Random(1)


@dataclass
class Member:
    """One candidate process; a thread timestamps its LEADING lines."""

    name: str
    proc: subprocess.Popen[str]
    log: Path
    leading_at: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "LEADING":
                self.leading_at.append(time.monotonic())

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def spawn(kind: str, cp: ControlPlane, namespace: str, lease: str, name: str,
          kubeconfig: Path | None = None) -> Member:
    kubeconfig = kubeconfig or cp.kubeconfig
    if kind == "kubernetes-leaderelection":
        command = [sys.executable, "-m", "benchmarks.official_candidate",
                   f"--kubeconfig={kubeconfig}", f"--namespace={namespace}",
                   f"--lease={lease}", f"--id={name}", f"--ttl={TTL}"]
    elif kind == "client-go":
        command = [str(build.ensure(["leaderpeer"])["leaderpeer"]), f"-kubeconfig={kubeconfig}",
                   f"-id={name}", f"-lease-name={lease}", f"-namespace={namespace}",
                   f"-lease-duration={TTL}s", f"-renew-deadline={int(RENEW_DEADLINE * 1000)}ms",
                   f"-retry-period={int(RENEW_INTERVAL * 1000)}ms"]
    else:
        store = kind.removeprefix("python-")
        command = [sys.executable, "-m", "examples.candidate", f"--kubeconfig={kubeconfig}",
                   f"--namespace={namespace}", f"--lease={lease}", f"--id={name}",
                   f"--ttl={TTL}", f"--store={store}"]
    log = LOGS / f"{name}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
    return Member(name, proc, log)


def wait_for(predicate: Callable[[], bool], within: float, what: str,
             members: list[Member]) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {m.name} (exit {m.proc.poll()}):\n"
                              + "\n".join(m.log.read_text().splitlines()[-15:])
                              for m in members)
            raise RuntimeError(f"benchmark: not within {within}s: {what}\n{tails}")
        time.sleep(0.002)


def leader_of(members: list[Member]) -> Member | None:
    """The member that most recently printed LEADING and still runs."""
    alive = [m for m in members if m.proc.poll() is None and m.leading_at]
    return max(alive, key=lambda m: m.leading_at[-1], default=None)


def failover(kind: str, cp: ControlPlane, namespace: str, trial: int, sig: int) -> float:
    lease = f"{kind}-{'crash' if sig == signal.SIGKILL else 'stop'}-{trial}"
    members = [spawn(kind, cp, namespace, lease, f"{kind}-{trial}-{i}") for i in range(2)]
    try:
        wait_for(lambda: leader_of(members) is not None, 30, f"{lease}: a first leader", members)
        # The follower is up and watching (or polling). A random delay puts the signal at a
        # random phase of the renew and poll cycles, the same way for every kind.
        time.sleep(RNG.uniform(2.0, 2.0 + TTL))
        old = leader_of(members)
        assert old is not None
        other = next(m for m in members if m is not old)
        sent = time.monotonic()
        old.proc.send_signal(sig)
        wait_for(lambda: bool(other.leading_at), 3 * TTL, f"{lease}: a new leader", members)
        return other.leading_at[0] - sent
    finally:
        for m in members:
            m.proc.kill()
            m.proc.wait()


RBAC = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: bench-candidates}
rules:
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [get, list, watch, create, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bench-candidates}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: bench-candidates}
subjects:
  - {kind: Group, name: "system:serviceaccounts:NAMESPACE", apiGroup: rbac.authorization.k8s.io}
"""


def own_kubeconfig(cp: ControlPlane, namespace: str, name: str) -> Path:
    """A kubeconfig for a ServiceAccount of its own, so that the audit log names who made
    each request (counting on the server, not in the client); waits until RBAC allows it."""
    kubeconfig = service_account_kubeconfig(cp.kubeconfig, namespace, name, LOGS / name)
    deadline = time.monotonic() + 10
    while cp.kubectl(f"--kubeconfig={kubeconfig}", "auth", "can-i", "update", "leases",
                     "-n", namespace, check=False).stdout.strip() != "yes":
        if time.monotonic() > deadline:
            raise RuntimeError(f"RBAC never allowed {name} to update leases")
        time.sleep(0.05)
    return kubeconfig


def steady_state(kind: str, cp: ControlPlane, namespace: str,
                 seconds: float) -> tuple[float, float, int]:
    """(leader requests per minute, requests per minute of one follower, RSS KiB of an idle
    follower process), three candidates on one Lease, from the audit log by user."""
    lease = f"{kind}-steady"
    names = [f"{kind}-s{i}" for i in range(3)]
    members = [spawn(kind, cp, namespace, lease, name, own_kubeconfig(cp, namespace, name))
               for name in names]
    try:
        wait_for(lambda: leader_of(members) is not None, 30, f"{lease}: a leader", members)
        time.sleep(3)
        start = len(audit_events(cp.audit_log, namespace, lease))
        time.sleep(seconds)
        window = [e for e in audit_events(cp.audit_log, namespace, lease)[start:]
                  if e["stage"] in ("ResponseComplete", "ResponseStarted")
                  and not (e["verb"] == "watch" and e["stage"] == "ResponseComplete")]
        leader = leader_of(members)
        assert leader is not None
        per_minute = {m.name: 0.0 for m in members}
        for event in window:
            user = event["user"]["username"].rsplit(":", 1)[-1]
            if user in per_minute:
                per_minute[user] += 60 / seconds
        followers = [m for m in members if m is not leader]
        follower_rate = sum(per_minute[m.name] for m in followers) / len(followers)
        return per_minute[leader.name], follower_rate, followers[0].rss_kib()
    finally:
        for m in members:
            m.proc.kill()
            m.proc.wait()


def table(results: dict[str, dict[str, object]], trials: int) -> str:
    def ms(values: object) -> str:
        v = list(values)  # type: ignore[call-overload]
        return f"{statistics.median(v) * 1000:.0f} ({min(v) * 1000:.0f}-{max(v) * 1000:.0f})"

    rows = ["| candidate | graceful handover, ms median (min-max) | crash failover, ms median "
            "(min-max) | leader requests / min | follower requests / min | idle RSS, MiB |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for kind in KINDS:
        r = results[kind]
        rows.append(f"| {kind} | {ms(r['handover'])} | {ms(r['crash'])} | "
                    f"{r['leader_requests']:.1f} | {r['requests']:.1f} | "
                    f"{int(r['rss']) / 1024:.0f} |")  # type: ignore[call-overload]

    def median(kind: str, key: str) -> float:
        return float(statistics.median(results[kind][key]))  # type: ignore[arg-type]

    ratios = []
    for kind in OURS:
        for peer in PEERS:
            ratios.append(
                f"- {kind} / {peer}: graceful handover "
                f"{median(kind, 'handover') / median(peer, 'handover'):.3f}x, crash failover "
                f"{median(kind, 'crash') / median(peer, 'crash'):.2f}x, idle memory "
                f"{int(results[kind]['rss']) / int(results[peer]['rss']):.1f}x")  # type: ignore[call-overload]
    return "\n".join(rows) + "\n\nRatios (lower is better):\n\n" + "\n".join(ratios) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--steady-seconds", type=float, default=20.0)
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                   help="which candidates to measure (docs/ is written only with all)")
    args = p.parse_args()
    load_before = os.getloadavg()
    results: dict[str, dict[str, object]] = {}
    started = time.monotonic()
    with ControlPlane() as cp:
        subprocess.run([str(cp.binaries["kubectl"]), f"--kubeconfig={cp.kubeconfig}", "create",
                        "namespace", "bench"], check=True, capture_output=True)
        subprocess.run([str(cp.binaries["kubectl"]), f"--kubeconfig={cp.kubeconfig}", "apply",
                        "-n", "bench", "-f", "-"], input=RBAC.replace("NAMESPACE", "bench"),
                       text=True, check=True, capture_output=True)
        for kind in args.kinds:
            print(f"== {kind}", flush=True)
            handover = [failover(kind, cp, "bench", t, signal.SIGTERM) for t in range(args.trials)]
            print(f"   graceful handover: {[round(x, 3) for x in handover]}", flush=True)
            crash = [failover(kind, cp, "bench", t, signal.SIGKILL) for t in range(args.trials)]
            print(f"   crash failover:    {[round(x, 3) for x in crash]}", flush=True)
            leader_requests, requests, rss = steady_state(kind, cp, "bench",
                                                          args.steady_seconds)
            print(f"   requests/min: leader {leader_requests:.1f}, follower {requests:.1f}; "
                  f"idle RSS {rss} KiB", flush=True)
            results[kind] = {"handover": handover, "crash": crash, "requests": requests,
                             "leader_requests": leader_requests, "rss": rss}
    if set(results) != set(KINDS):
        return 0
    versions = build.load_versions()
    body = table(results, args.trials)
    print("\n" + body)
    if not args.no_write:
        OUT.write_text(
            "# Benchmarks\n\n"
            f"`make bench` ({args.trials} trials each, {args.steady_seconds:.0f} s steady-state "
            f"window), run {datetime.date.today()} on {os.cpu_count()} cores, "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"kube-apiserver {versions.kubernetes} and etcd {versions.etcd} on loopback; "
            f"took {time.monotonic() - started:.0f} s. Load average before the run: "
            f"{load_before[0]:.2f}, {load_before[1]:.2f}, {load_before[2]:.2f}. Command: "
            f"`{' '.join(['python -m benchmarks.run', *sys.argv[1:]])}` (`make bench`).\n\n"
            f"All candidates use a {TTL} s Lease: Python renews every {RENEW_INTERVAL:.2f} s and "
            f"steps down after {RENEW_DEADLINE:.2f} s; client-go runs with RenewDeadline "
            f"{RENEW_DEADLINE:.2f} s and RetryPeriod {RENEW_INTERVAL:.2f} s (its renew and "
            "poll interval); the official client's elector runs with lease_duration 4, "
            f"renew_deadline {RENEW_DEADLINE:.2f} and retry_period {RENEW_INTERVAL:.2f}. "
            "Times run from the signal to the leader process until the next "
            "process prints LEADING, so they include process signal handling and a pipe.\n\n"
            + body + "\n"
            "Why: Python followers watch the Lease and act on the release event; client-go "
            "followers poll it every RetryPeriod to 2.2 RetryPeriods (jitter), so a graceful "
            "handover waits for the next poll. The official Python elector also polls, and it "
            "has no release on shutdown: a SIGTERM is a crash to it, so its graceful handover "
            "is its crash failover. After a crash all wait out the Lease duration "
            "counted from when they last *saw* a renewal: a watching follower sees each "
            "renewal at once, a polling one up to a poll period late, and then notices the "
            "expiry only at its next poll. Crash failover is therefore between TTL - "
            "renew interval and TTL for Python, and longer and more spread for client-go. "
            "Idle memory is mostly the imported client library: each Python candidate process "
            "imports only its own (pykube-ng and requests; or kubernetes, whose import also "
            "loads aiohttp, urllib3, requests and its generated models).\n")
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
