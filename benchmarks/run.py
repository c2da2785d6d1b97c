"""`make bench`: our Python candidates against the peers users would pick, in one run.

Contenders: our Candidate on each store (each process imports only its own client), the
sidecar (measured through GET /leader), client-go's ``tools/leaderelection`` (LeaseLock,
ReleaseOnCancel), and the official Python client's ``kubernetes.aio.leaderelection``
(LeaseLock), all on one control plane, each with ``--trials`` (default 30) of each failover;
a batch whose spread (max - min) is wider than its median is run once more.

Measured on a real etcd + kube-apiserver on loopback, with matched timings
(Lease duration 4 s; Python renews every 1.33 s and gives up after 2.67 s; client-go uses
RenewDeadline 2.67 s and RetryPeriod 1.33 s, its renew and poll interval):

- graceful handover: SIGTERM to the leader process (which releases the Lease) until the
  next candidate process prints LEADING;
- crash failover: SIGKILL of the leader process until the next one prints LEADING, and the
  same from the leader's last successful renewal as the audit log stamps it;
- requests: API requests to the Lease per minute, by verb, by the leader and by one
  follower, with one leader and two followers, counted by the API server (its audit log
  names each process's own ServiceAccount), never by the clients;
- footprint: CPU seconds per minute of the leader and a follower, and the resident set size
  of one idle candidate process.

Prints a table and writes it to docs/benchmarks.md. ``--trials N`` sets the repetitions.
"""

from __future__ import annotations

import argparse
import datetime
import math
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

from benchmarks import pages
from controlplane import build
from controlplane.candidates import CandidateProcess, sidecar_answer
from controlplane.cluster import audit_events, service_account_kubeconfig
from controlplane.launcher import ControlPlane
from controlplane.processes import free_port
from controlplane.waiting import eventually

TTL = 4
RENEW_INTERVAL = TTL / 3
RENEW_DEADLINE = 2 * TTL / 3
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks.md"
KINDS = ("python-kubernetes", "python-pykube", "sidecar", "client-go",
         "kubernetes-leaderelection")
OURS = KINDS[:3]
PEERS = KINDS[3:]
LOGS = Path(tempfile.mkdtemp(prefix="leadership-bench-"))
RNG = random.Random(1)


@dataclass
class Contender:
    """One candidate process; a thread timestamps its LEADING lines."""

    name: str
    proc: subprocess.Popen[str]
    log: Path
    leading_at: list[float] = field(default_factory=list)
    port: int = 0  # a sidecar's: its belief is polled from GET /leader
    #: seconds between polls: 5 ms while a failover is timed, 1 s in the steady state (the
    #: polling would otherwise be most of the sidecar's CPU).
    poll_every: float = 0.005

    def __post_init__(self) -> None:
        threading.Thread(target=self._poll if self.port else self._read, daemon=True).start()

    def _poll(self) -> None:
        """The sidecar's answer, every 5 ms: an app in another language sees just this."""
        was = False
        while self.proc.poll() is None:
            now = bool(sidecar_answer(self.port).get("is_leader"))
            if now and not was:
                self.leading_at.append(time.monotonic())
            was = now
            time.sleep(self.poll_every)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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
          kubeconfig: Path | None = None) -> Contender:
    port = free_port() if kind == "sidecar" else None
    command = CandidateProcess(kind.removeprefix("python-"), kubeconfig or cp.kubeconfig,
                               lease, name, TTL, namespace, renew_deadline=RENEW_DEADLINE,
                               retry_period=RENEW_INTERVAL, port=port).command()
    log = LOGS / f"{name}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
    return Contender(name, proc, log, port=port or 0)


def wait_for(predicate: Callable[[], bool], within: float, what: str,
             members: list[Contender]) -> None:
    def failure(_: object) -> RuntimeError:
        tails = "\n".join(f"--- {m.name} (exit {m.proc.poll()}):\n"
                          + "\n".join(m.log.read_text().splitlines()[-15:]) for m in members)
        return RuntimeError(f"benchmark: not within {within}s: {what}\n{tails}")

    eventually(predicate, within, what, every=0.002, fail=failure)


def leader_of(members: list[Contender]) -> Contender | None:
    """The member that most recently printed LEADING and still runs."""
    alive = [m for m in members if m.proc.poll() is None and m.leading_at]
    return max(alive, key=lambda m: m.leading_at[-1], default=None)


def failover(kind: str, cp: ControlPlane, namespace: str, trial: int,
             sig: int) -> tuple[float, float | None]:
    """(signal to the next candidate leading, and the same from the leader's last successful
    renewal as the API server's audit log stamps it), in seconds."""
    lease = f"{kind}-{'crash' if sig == signal.SIGKILL else 'stop'}-{trial}"
    members = [spawn(kind, cp, namespace, lease, f"{kind}-{trial}-{i}") for i in range(2)]
    try:
        wait_for(lambda: leader_of(members) is not None, 30, f"{lease}: a first leader", members)
        # The follower is up and watching (or polling). A random delay puts the signal at a
        # random phase of the renew and poll cycles (both 1.33 s; client-go's jittered poll
        # up to 2.9 s), the same way for every kind.
        time.sleep(RNG.uniform(1.5, 1.5 + 3.0))
        old = leader_of(members)
        assert old is not None
        other = next(m for m in members if m is not old)
        sent, sent_wall = time.monotonic(), time.time()
        old.proc.send_signal(sig)
        wait_for(lambda: bool(other.leading_at), 3 * TTL, f"{lease}: a new leader", members)
        took = other.leading_at[0] - sent
        writes = [wall_time(e["stageTimestamp"]) for e in audit_events(
            cp.audit_log, namespace, lease) if e["verb"] == "update"
            and e["stage"] == "ResponseComplete"
            and (e.get("responseStatus") or {}).get("code") == 200]
        # A renewal the old leader had in flight when the signal came lands a few ms after
        # it, and the Lease duration counts from it; the new leader cannot write until the
        # Lease has run out, seconds later (client-go then renews at once, so "the write
        # before the acquisition" would pick its own acquisition).
        before = [t for t in writes if t <= sent_wall + IN_FLIGHT]
        return took, (took + sent_wall - max(before)) if before else None
    finally:
        for m in members:
            m.proc.kill()
            m.proc.wait()


#: how long after a SIGKILL a renewal already sent may still land at the API server.
IN_FLIGHT = 1.0


def wall_time(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


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
    eventually(lambda: cp.kubectl(f"--kubeconfig={kubeconfig}", "auth", "can-i", "update",
                                  "leases", "-n", namespace, check=False).stdout.strip() == "yes",
               10, f"RBAC allowing {name} to update leases", every=0.05,
               fail=lambda _: RuntimeError(f"RBAC never allowed {name} to update leases"))
    return kubeconfig


def steady_state(kind: str, cp: ControlPlane, namespace: str,
                 seconds: float) -> dict[str, object]:
    """One leader and two followers on one Lease, for `seconds`: requests per minute by verb
    of the leader and of a follower (from the audit log, by ServiceAccount), CPU seconds per
    minute of each, and the RSS of an idle follower."""
    lease = f"{kind}-steady"
    names = [f"{kind}-s{i}" for i in range(3)]
    members = [spawn(kind, cp, namespace, lease, name, own_kubeconfig(cp, namespace, name))
               for name in names]
    for m in members:
        m.poll_every = 1.0
    try:
        wait_for(lambda: leader_of(members) is not None, 30, f"{lease}: a leader", members)
        time.sleep(3)
        start = len(audit_events(cp.audit_log, namespace, lease))
        cpu0 = {m.name: m.cpu_seconds() for m in members}
        time.sleep(seconds)
        cpu = {m.name: (m.cpu_seconds() - cpu0[m.name]) * 60 / seconds for m in members}
        window = [e for e in audit_events(cp.audit_log, namespace, lease)[start:]
                  if e["stage"] in ("ResponseComplete", "ResponseStarted")
                  and not (e["verb"] == "watch" and e["stage"] == "ResponseComplete")]
        leader = leader_of(members)
        assert leader is not None
        verbs: dict[str, dict[str, float]] = {m.name: {} for m in members}
        for event in window:
            user = event["user"]["username"].rsplit(":", 1)[-1]
            if user in verbs:
                verbs[user][event["verb"]] = verbs[user].get(event["verb"], 0) + 60 / seconds
        followers = [m for m in members if m is not leader]
        follower_verbs: dict[str, float] = {}
        for m in followers:
            for verb, rate in verbs[m.name].items():
                follower_verbs[verb] = follower_verbs.get(verb, 0) + rate / len(followers)
        return {"leader_verbs": verbs[leader.name], "follower_verbs": follower_verbs,
                "leader_cpu": cpu[leader.name],
                "follower_cpu": sum(cpu[m.name] for m in followers) / len(followers),
                "rss": followers[0].rss_kib()}
    finally:
        for m in members:
            m.proc.kill()
            m.proc.wait()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * q) - 1)]


def spread(values: list[float]) -> str:
    return (f"{1000 * pct(values, 0.5):.0f} / {1000 * pct(values, 0.99):.0f} / "
            f"{1000 * max(values):.0f}")


def verbs(rates: dict[str, float]) -> str:
    return ", ".join(f"{verb} {rate:.1f}" for verb, rate in sorted(rates.items())) or "0"


def table(results: dict[str, dict[str, object]]) -> str:
    rows = ["| candidate | graceful handover, ms p50 / p99 / max | crash failover from the "
            "signal, ms p50 / p99 / max | crash failover from the last renewal (audit log), "
            "ms p50 / p99 / max | leader requests / min by verb | follower requests / min by "
            "verb | CPU s / min, leader / follower | idle RSS, MiB |",
            "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: |"]
    for kind, r in results.items():
        rows.append(
            f"| {kind} | {spread(r['handover'])} | {spread(r['crash'])} | "  # type: ignore[arg-type]
            f"{spread(r['crash_from_renewal'])} | {verbs(r['leader_verbs'])} | "  # type: ignore[arg-type]
            f"{verbs(r['follower_verbs'])} | {r['leader_cpu']:.2f} / {r['follower_cpu']:.2f} | "  # type: ignore[arg-type]
            f"{int(r['rss']) / 1024:.0f} |")  # type: ignore[call-overload]
    ratios = []
    for kind in (k for k in OURS if k in results):
        for peer in (k for k in PEERS if k in results):
            a, b = results[kind], results[peer]
            ratios.append(
                f"- {kind} / {peer}: graceful handover p50 "
                f"{pct(a['handover'], 0.5) / pct(b['handover'], 0.5):.3f}x, "  # type: ignore[arg-type]
                f"crash failover p50 {pct(a['crash'], 0.5) / pct(b['crash'], 0.5):.2f}x, "  # type: ignore[arg-type]
                f"idle memory {int(a['rss']) / int(b['rss']):.1f}x")  # type: ignore[call-overload]
    return "\n".join(rows) + "\n\nRatios (lower is better):\n\n" + "\n".join(ratios) + "\n"


def targets(results: dict[str, dict[str, object]]) -> str:
    lines = ["| target | measured | met |", "| --- | --- | :---: |"]
    for kind in (k for k in OURS if k in results):
        r = results[kind]
        p99 = 1000 * pct(r["handover"], 0.99)  # type: ignore[arg-type]
        lines.append(f"| {kind}: graceful handover p99 < 50 ms | {p99:.0f} ms | "
                     f"{'yes' if p99 < 50 else 'no'} |")
        crash = 1000 * pct(r["crash_from_renewal"], 0.99)  # type: ignore[arg-type]
        lines.append(f"| {kind}: crash failover from the last renewal p99 <= TTL + 100 ms "
                     f"| {crash:.0f} ms | {'yes' if crash <= 1000 * TTL + 100 else 'no'} |")
        extra = {v: n for v, n in r["follower_verbs"].items() if v != "watch"}  # type: ignore[attr-defined]
        lines.append(f"| {kind}: followers make no request besides their watch | "
                     f"{verbs(extra)} | {'yes' if not any(extra.values()) else 'no'} |")
    if "python-pykube" in results:
        rss = int(results["python-pykube"]["rss"]) / 1024  # type: ignore[call-overload]
        lines.append(f"| python-pykube: candidate RSS <= 40 MiB | {rss:.0f} MiB | "
                     f"{'yes' if rss <= 40 else 'no'} |")
    return "\n".join(lines) + "\n"


def measure(kind: str, cp: ControlPlane, trials: int, steady: float) -> dict[str, object]:
    """Every figure of one contender; a batch whose spread exceeds its median is run again,
    and both batches are kept (the spread is printed either way)."""
    handover: list[float] = []
    crash: list[tuple[float, float | None]] = []
    for batch in range(2):
        h = [failover(kind, cp, "bench", t + batch * trials, signal.SIGTERM)[0]
             for t in range(trials)]
        c = [failover(kind, cp, "bench", t + batch * trials, signal.SIGKILL)
             for t in range(trials)]
        handover += h
        crash += c
        wide = [name for name, v in (("handover", h), ("crash", [x for x, _ in c]))
                if max(v) - min(v) > statistics.median(v)]
        print(f"   batch {batch + 1}: handover {spread(h)} ms, crash "
              f"{spread([x for x, _ in c])} ms (p50 / p99 / max)"
              + (f"; spread wider than the median: {', '.join(wide)}" if wide else ""),
              flush=True)
        if not wide:
            break
    result: dict[str, object] = {
        "handover": handover, "crash": [x for x, _ in crash],
        "crash_from_renewal": [y for _, y in crash if y is not None]}
    result.update(steady_state(kind, cp, "bench", steady))
    return result


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=30)
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
            results[kind] = measure(kind, cp, args.trials, args.steady_seconds)
    if set(results) != set(KINDS):
        print(table(results))
        return 0
    versions = build.load_versions()
    body = table(results)
    # Its figures, not its hand-written reading (that stays on its own page).
    operator = (ROOT / "docs" / "operator-scale.md").read_text().split(
        pages.ANALYSIS)[0].rstrip("\n").split("\n\n", 2)
    body += ("\nTargets:\n\n" + targets(results) + "\nThe operator at 1,000 elections (from "
             "`make bench-operator`, docs/operator-scale.md; target: label flip p99 < 250 ms):"
             "\n\n" + operator[-1] + "\n")
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
            "process prints LEADING (the sidecar: until its GET /leader, polled every 5 ms, "
            "answers is_leader), so they include process signal handling and a pipe. Crash "
            "failover is also given from the leader's last successful renewal as the API "
            "server's audit log stamps it: the figure the Lease duration bounds.\n\n"
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
            "loads aiohttp, urllib3, requests and its generated models).\n\n"
            "The stall once seen with two fresh pykube candidates under CPU saturation is "
            "tried again, and explained, by `make bench-stall`: [stall.md](stall.md).\n")
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
