"""`make chaos`: a bounded, seeded fault-injection run with a split-brain checker.

    python -m chaos.run [--seconds 300] [--seed N] [--no-write]

On the local control plane: 5 candidate processes on the Lease ``web`` (two on
``kubernetes.aio``, two on pykube-ng, one client-go peer; one Python candidate's wall clock
is an hour ahead and one an hour behind, through libfaketime, which shows that expiry never
reads wall time), the sidecar, and the operator's 2 replicas, all as member pods' stand-ins.
Two candidates and one operator replica reach the API server through fault proxies.

Faults follow a seeded schedule (`chaos.schedule`; the seed is printed, and ``--seed``
replays it): SIGKILL of candidates and operator replicas, SIGSTOP of the leader past the
TTL, kube-apiserver and etcd restarts, latency, blackholes and resets on the proxies, and CPU
starvation of a candidate. The last part of the run has no faults. Then every process is
stopped and `chaos.checker` judges what was recorded; the run fails (exit 1) on any
violation, on a crash of the operator or the sidecar, or on a process left running. The
report is printed and written to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos import checker
from chaos.schedule import Fault, make_schedule
from controlplane.candidates import CandidateProcess, sidecar_answer
from controlplane.cluster import kubeconfig_via, proxy_to, service_account_kubeconfig
from controlplane.launcher import ControlPlane
from controlplane.processes import free_port
from controlplane.proxy import TcpProxy
from controlplane.recorder import ClusterRecorder

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "reliability.md"
TTL = 4
#: the processes that reach the API server through a fault proxy, in the schedule's order
PROXIED = ["c0", "c2", "s0", "op-0"]
RENEW_DEADLINE = TTL * 2 / 3
NS, LEASE = "chaos", "web"


def faketime_library() -> Path:
    """libfaketime: Debian's, wherever the machine's multiarch directory is, else the one the
    `libfaketime` package from PyPI (a test dependency) vendors, so `make test` needs no
    system package."""
    debian = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    if debian:
        return debian[0]
    import importlib.util

    spec = importlib.util.find_spec("libfaketime")
    if spec is None or spec.origin is None:
        return Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")  # reported missing
    return Path(spec.origin).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"


FAKETIME_LIB = faketime_library()
#: overlap allowed between terms stamped when a line or a poll arrives (client-go, sidecar).
STAMP_ALLOWANCE = 0.05


@dataclass
class Contender:
    """One process standing in for a member pod's container (or an operator replica)."""

    name: str                     # pod name, or operator identity
    kind: str                     # "python", "client-go", "sidecar", "operator"
    command: list[str]
    env: dict[str, str]
    log: Path
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    identity: str = ""
    expected_exit: bool = False
    crashes: list[str] = field(default_factory=list)
    terms: list[checker.Term] = field(default_factory=list)
    _open: dict[str, Any] | None = None
    stopped_at: float | None = None   # SIGSTOP time while frozen

    def start(self) -> None:
        if self.kind == "client-go":
            self.identity = f"{self.name}_{os.urandom(4).hex()}"
            self.command = [c if not c.startswith("-id=") else f"-id={self.identity}"
                            for c in self.command]
        else:
            self.identity = self.name
        self.expected_exit = False
        with self.log.open("a") as err:
            self.proc = subprocess.Popen(self.command, cwd=ROOT, env=self.env, text=True,
                                         stdout=subprocess.PIPE, stderr=err)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        if self.kind == "sidecar":
            threading.Thread(target=self._poll, args=(self.proc,), daemon=True).start()

    # --- terms from the process's own reports --------------------------------------------

    def _close(self, end: float) -> None:
        if self._open is not None:
            o, self._open = self._open, None
            stop = max(o["start"], min(end, o.get("until", end)))
            # Our candidates report each renewal's answer (`renewed`, within 10 ms): the write
            # landed before it, so the Lease runs out by then + TTL as anyone observes it.
            # For the others the last renewal is unknown: at most the term's end.
            lease_end = (o["renewed"] + TTL if "renewed" in o else stop + TTL)
            self.terms.append(checker.Term(self.name, self.name, o["start"], stop,
                                           o.get("token"), lease_end))

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic()
            if self.kind == "python":
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event["event"] == "leading":
                    self._close(event["at"])
                    self._open = {"start": min(event["at"], event["sent"]),
                                  "until": event["until"], "token": event["token"],
                                  "renewed": event["at"]}
                elif event["event"] == "until" and self._open is not None:
                    self._open["until"] = event["until"]
                    self._open["renewed"] = event["at"]
                elif event["event"] == "following":
                    self._close(event["at"])
            elif self.kind == "client-go":
                word = line.strip()
                if word == "LEADING":
                    self._open = {"start": now}
                elif word == "STOPPED":
                    self._close(now)
        # The process ended: a term it still had ends at its last renewal's belief, or now.
        self._close(time.monotonic())

    def _poll(self, proc: subprocess.Popen[str]) -> None:
        """The sidecar's belief as it serves it: GET /leader every 10 ms."""
        while proc.poll() is None:
            now = time.monotonic()
            answer = sidecar_answer(self.port, timeout=0.5)
            if answer.get("is_leader") and self._open is None:
                self._open = {"start": now, "token": answer.get("fencing_token")}
            elif answer.get("is_leader") and self._open is not None:
                self._open["until"] = time.monotonic()
            elif not answer.get("is_leader"):
                self._close(now)
            time.sleep(0.01)
        self._close(time.monotonic())

    # --- faults --------------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.expected_exit = True
            if sig == signal.SIGSTOP and self.kind == "client-go":
                self.stopped_at = time.monotonic()
                self._close(self.stopped_at)  # frozen: it acts no more until SIGCONT
                self._reopen_after_stop = True
            self.proc.send_signal(sig)
            if sig == signal.SIGCONT and self.kind == "client-go" and getattr(
                    self, "_reopen_after_stop", False):
                # Until it says STOPPED, a thawed client-go leader still believes it leads.
                self._reopen_after_stop = False
                self._open = {"start": time.monotonic()}
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait(timeout=20)

    def check_exit(self) -> str | None:
        """Report an exit nobody asked for; restart a client-go peer that ended its run."""
        if self.proc is None or self.proc.poll() is None or self.expected_exit:
            return None
        if self.kind == "client-go" and self.proc.returncode == 0:
            # client-go's RunOrDie returns once leadership is lost: the peer exits 0 and,
            # like a container, is started again.
            self.start()
            return f"{self.name} (client-go) ended its run after losing the Lease; restarted"
        self.crashes.append(f"{self.name} exited {self.proc.returncode} unasked")
        self.expected_exit = True  # reported once
        return None


class Run:
    def __init__(self, cp: ControlPlane, seed: int, seconds: float, logs: Path) -> None:
        self.cp, self.seed, self.seconds, self.logs = cp, seed, seconds, logs
        self.members: dict[str, Contender] = {}
        self.proxies: list[TcpProxy] = []
        self.proxied: list[str] = []
        self.done: list[tuple[Fault, str]] = []
        self.t0 = 0.0

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {message}", flush=True)

    # --- set-up --------------------------------------------------------------------------

    def set_up(self) -> None:
        cp = self.cp
        cp.kubectl("apply", "-k", str(ROOT / "manifests" / "operator"))
        cp.kubectl("create", "namespace", NS)
        pods = ["c0", "c1", "c2", "c3", "c4", "s0"]
        for pod in pods:
            cp.kubectl("-n", NS, "run", pod, "--image=registry.example/app:1",
                       f"--labels=leadership.dev/election={LEASE}")
        admin = cp.kubeconfig
        operator_kc = service_account_kubeconfig(admin, "leadership-system",
                                                 "leadership-operator",
                                                 self.logs / "operator-kubeconfig", create=False)

        def via_proxy(kubeconfig: Path, name: str) -> Path:
            proxy = proxy_to(kubeconfig).start()
            self.proxies.append(proxy)
            self.proxied.append(name)
            return kubeconfig_via(proxy, kubeconfig, self.logs / f"kubeconfig-{name}")

        base = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        # Wall clocks only: Debian's build and the vendored one name the switch differently.
        fake = {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                "DONT_FAKE_MONOTONIC": "1"}

        def python(pod: str, store: str, kubeconfig: Path, env: dict[str, str]) -> Contender:
            return Contender(pod, "python", CandidateProcess(store, kubeconfig, LEASE, pod, TTL, NS,
                                                   events=True).command(),
                          {**base, **env}, self.logs / f"{pod}.log")

        members = [
            python("c0", "kubernetes", via_proxy(admin, "c0"), {}),
            python("c1", "pykube", admin, {**fake, "FAKETIME": "+1h"}),
            python("c2", "pykube", via_proxy(admin, "c2"), {}),
            python("c3", "kubernetes", admin, {**fake, "FAKETIME": "-1h"}),
            Contender("c4", "client-go", CandidateProcess(
                "client-go", admin, LEASE, "c4", TTL, NS, renew_deadline=RENEW_DEADLINE,
                retry_period=TTL / 3).command(), base, self.logs / "c4.log"),
        ]
        port = free_port()
        members.append(Contender("s0", "sidecar", CandidateProcess(
            "sidecar", via_proxy(admin, "s0"), LEASE, "s0", TTL, NS, port=port).command(),
            {**base, "POD_NAME": "s0", "POD_NAMESPACE": NS},
            self.logs / "s0.log", port))
        for i, kubeconfig in enumerate((via_proxy(operator_kc, "op-0"), operator_kc)):
            name = f"op-{i}"
            members.append(Contender(name, "operator", [
                sys.executable, "-m", "leadership_operator.cli", "operator",
                f"--kubeconfig={kubeconfig}", f"--namespace={NS}", f"--identity={name}",
                "--lease-namespace=leadership-system", f"--lease-seconds={TTL}",
                f"--http-port={free_port()}", "--log-format=text"], base,
                self.logs / f"{name}.log"))
        assert self.proxied == PROXIED, self.proxied  # the schedule names proxies by index
        for member in members:
            self.members[member.name] = member
            member.start()

    # --- faults --------------------------------------------------------------------------

    def leader(self) -> Contender | None:
        holder = self.recorder.current_holder(LEASE) or ""
        return next((m for m in self.members.values()
                     if m.kind != "operator" and m.proc is not None and holder
                     and (holder == m.identity)), None)

    def inject(self, fault: Fault) -> str:
        kind, target = fault.kind, fault.target
        if kind in ("kill-candidate", "kill-operator"):
            member = self.members[target]
            member.signal(signal.SIGKILL)
            time.sleep(fault.seconds)
            member.start()
            return target
        if kind == "zombie-leader":
            zombie = self.leader()
            if zombie is None:
                return "skipped: no leader"
            zombie.signal(signal.SIGSTOP)
            time.sleep(fault.seconds)
            zombie.signal(signal.SIGCONT)
            return zombie.name
        if kind.startswith("proxy-"):
            index = int(target.split(":")[1])
            proxy, name = self.proxies[index], self.proxied[index]
            if kind == "proxy-latency":
                proxy.latency = random.Random(fault.at).uniform(0.2, 0.5)
                time.sleep(fault.seconds)
                proxy.latency = 0.0
            elif kind == "proxy-blackhole":
                proxy.partition()
                time.sleep(fault.seconds)
                proxy.heal()
            else:
                proxy.reset()
            return name
        if kind == "starve-cpu":
            member = self.members[target]
            assert member.proc is not None
            burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                       for _ in range(os.cpu_count() or 2)]
            try:
                os.setpriority(os.PRIO_PROCESS, member.proc.pid, 19)
                time.sleep(fault.seconds)
                if member.proc.poll() is None:
                    os.setpriority(os.PRIO_PROCESS, member.proc.pid, 0)
            finally:
                for burner in burners:
                    burner.kill()
                    burner.wait()
            return target
        component = "kube-apiserver" if kind == "restart-apiserver" else "etcd"
        self.cp.restart(component, fault.seconds)
        self.cp.wait_ready()
        return component

    # --- the run -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.t0 = time.monotonic()
        quiet = max(12.0, 3 * TTL)
        names = ["c0", "c1", "c2", "c3", "c4", "s0"]
        schedule = make_schedule(self.seed, self.seconds, ttl=TTL, candidates=names,
                                 operators=["op-0", "op-1"], proxied=len(PROXIED), quiet=quiet)
        print(f"chaos: seed {self.seed}, {self.seconds:.0f}s, {len(schedule)} faults "
              f"(replay with --seed {self.seed})", flush=True)
        for fault in schedule:
            print(f"  {fault}", flush=True)
        self.recorder = ClusterRecorder(self.cp.kubeconfig, NS)
        self.set_up()
        # The clock of the schedule starts once the election has a labelled leader.
        self.recorder.wait(lambda roles: "leader" in roles.values(), 60,
                           "a first leader labelled")
        self.t0 = time.monotonic()
        self.log("started 5 candidates, the sidecar and 2 operator replicas; "
                 f"{self.leader().name if self.leader() else '?'} leads")
        faults_end = time.monotonic()
        for fault in schedule:
            wait = self.t0 + fault.at - time.monotonic()
            if wait > 0:
                self.watchful_sleep(wait)
            hit = self.inject(fault)
            self.done.append((fault, hit))
            self.log(f"{fault.kind} {hit}" + (f" ({fault.seconds:.1f}s)" if fault.seconds
                                               else ""))
            faults_end = time.monotonic()
        self.watchful_sleep(self.t0 + self.seconds - time.monotonic())
        end = time.monotonic()
        self.log("faults over; stopping everything")
        for member in self.members.values():
            member.check_exit()
            member.signal(signal.SIGCONT)
            member.signal(signal.SIGTERM)
        self.recorder.close()
        for proxy in self.proxies:
            proxy.stop()
        left = [m.name for m in self.members.values() if m.proc and m.proc.poll() is None]
        return self.judge(schedule, faults_end, end, left)

    def lease_sightings(self) -> list[checker.Term]:
        """Every change of the Lease a watch saw, as the pod it named: the label may stay
        until that sighting + TTL (the operator's contract: expiry as observed)."""
        holders = self.recorder.holder_changes(LEASE)
        seen = []
        for at, name in self.recorder.renewals:
            if name != LEASE:
                continue
            holder = next((h for t, h in reversed(holders) if t <= at), "")
            pod = next((m.name for m in self.members.values() if holder and (
                holder == m.name or holder.startswith(m.name + "_"))), None)
            if pod is not None:
                seen.append(checker.Term(pod, pod, at, at, lease_end=at + TTL))
        return seen

    def operator_disrupted(self) -> list[tuple[float, float]]:
        """When the operator could not keep the 1 s promise: from a fault on an operator
        replica (or on the API server, etcd, or the CPU) until the standby's own Lease has
        run out and it has resynced (its Lease duration + 2 s after the fault ends)."""
        windows = []
        for fault, hit in self.done:
            if fault.kind in ("kill-operator", "restart-apiserver", "restart-etcd",
                              "starve-cpu") or hit.startswith("op-"):
                start = self.t0 + fault.at
                windows.append((start, start + fault.seconds + TTL + 2.0))
        return windows

    def watchful_sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + max(0.0, seconds)
        while time.monotonic() < deadline:
            for member in self.members.values():
                if note := member.check_exit():
                    self.log(note)
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def judge(self, schedule: list[Fault], faults_end: float, end: float,
              left: list[str]) -> dict[str, Any]:
        terms = [t for m in self.members.values() for t in m.terms]
        kind = {name: m.kind for name, m in self.members.items()}
        ours = [t for t in terms if kind[t.candidate] == "python"]
        found = (checker.overlaps(ours, 0.0)
                 + [v for v in checker.overlaps(terms, STAMP_ALLOWANCE)
                    if any(kind[w] != "python" for w in v.who)]
                 + checker.fencing(t for t in terms if t.token is not None)
                 + checker.two_leader_labels(self.recorder.roles)
                 + checker.stale_leader_labels(self.recorder.roles, self.lease_sightings(),
                                               label_grace=1.0, end=end,
                                               excused=self.operator_disrupted())
                 + checker.leaderless(terms, faults_end, end, TTL + 1.0))
        # What the client-go peer itself believes is client-go's behaviour, not ours: kept
        # and reported, but it does not fail the run.
        peer = [v for v in found if v.rule in ("overlap", "fencing")
                and any(kind.get(w) == "client-go" for w in v.who)]
        excused = [v for v in found if v.rule == "late-label-excused"]
        violations = [v for v in found if v not in peer and v not in excused]
        (self.logs / "recorded.json").write_text(json.dumps({
            "t0": self.t0, "terms": [vars(t) for t in terms], "roles": self.recorder.roles,
            "holders": self.recorder.holders,
            "faults": [[vars(f), hit] for f, hit in self.done]}, indent=1))
        crashes = [c for m in self.members.values() for c in m.crashes
                   if m.kind in ("operator", "sidecar")]
        crashes += [c for m in self.members.values() for c in m.crashes
                    if m.kind not in ("operator", "sidecar")]
        gaps = sorted(b.start - a.end for a, b in zip(
            sorted(ours, key=lambda t: t.start), sorted(ours, key=lambda t: t.start)[1:],
            strict=False) if b.candidate != a.candidate)
        return {"seed": self.seed, "seconds": self.seconds, "schedule": schedule,
                "done": self.done, "terms": terms, "violations": sorted(
                    violations, key=lambda v: v.at), "peer_findings": peer,
                "excused": excused,
                "crashes": crashes, "left": left,
                "label_changes": len(self.recorder.roles),
                "holder_changes": len(self.recorder.holders),
                "min_handover_gap": gaps[0] if gaps else None,
                "watch_errors": self.recorder.watch_errors, "t0": self.t0}


WHAT_IS_CHECKED = """\
Set-up: 5 candidates on one Lease (c0, c3 on `kubernetes.aio`, c1, c2 on pykube-ng, c4 the
client-go peer; c1's wall clock an hour ahead and c3's an hour behind, through libfaketime),
the sidecar s0, and 2 operator replicas; c0, c2, the sidecar s0 and operator op-0 reach the
API server through fault proxies. The checker fails the run on: two candidates believing
they lead at once (our candidates' belief is exact: from the winning write's send time to
`leading_until`; 0 ms allowed), a fencing token that does not grow with a new holder, two
pods labelled `leader` at once, a `leader` label more than 1 s past its Lease's expiry as a
watch saw it, more than TTL + 1 s without a leader after the faults, an unasked exit of any
process, or a process left running. Not checked: what an application does with its belief
(that is what fencing tokens are for), and clock *rate* skew beyond what a frozen or starved
process shows.
"""


def report(r: dict[str, Any], command: str) -> str:
    kinds = collections.Counter(f.kind for f, hit in r["done"] if not hit.startswith("skipped"))
    skipped = [f"{f.kind} ({hit})" for f, hit in r["done"] if hit.startswith("skipped")]
    by_candidate = collections.Counter(t.candidate for t in r["terms"])
    verdict = ("**No violation**" if not (r["violations"] or r["crashes"] or r["left"])
               else "**FAILED**")
    lines = [
        "# Reliability: the chaos run", "",
        f"`{command}`, run {datetime.date.today()} on {os.cpu_count()} cores "
        f"(seed {r['seed']}, {r['seconds']:.0f} s, Lease {TTL} s).", "",
        f"{verdict}: {len(r['violations'])} violations, {len(r['crashes'])} unasked exits, "
        f"{len(r['left'])} processes left running.", "",
        WHAT_IS_CHECKED, "",
        "| faults injected | count |", "| --- | ---: |",
        *(f"| {k} | {n} |" for k, n in sorted(kinds.items())), "",
        f"Terms of leadership seen: {len(r['terms'])} ("
        + ", ".join(f"{c} {n}" for c, n in sorted(by_candidate.items())) + "); "
        f"{r['holder_changes']} Lease terms and {r['label_changes']} role label changes "
        "seen by a watch.",
    ]
    if r["min_handover_gap"] is not None:
        lines.append(f"Smallest gap between two Python candidates' terms (one's belief "
                     f"ending, the next one's winning write sent): "
                     f"{1000 * r['min_handover_gap']:.0f} ms.")
    if skipped:
        lines.append("Skipped: " + ", ".join(skipped) + ".")
    if r["watch_errors"]:
        lines.append(f"The label watch resumed {len(r['watch_errors'])} times (API server "
                     "restarts).")
    if r["peer_findings"]:
        lines += ["", "Findings about the client-go peer (its own belief; they do not fail "
                  "the run): after a freeze, client-go keeps its leading context until its "
                  "renew loop times out, up to RenewDeadline after it thaws, even though "
                  "another candidate already leads. Our candidates' `is_leader` is "
                  "time-based and ends at the renew deadline, frozen or not.",
                  *(f"- {v}" for v in r["peer_findings"])]
    if r["excused"]:
        lines += ["", "Leader labels late during a fault on the operator itself or the API "
                  "server (the 1 s promise assumes a working operator: a killed active "
                  "replica is replaced when its own Lease runs out, then it resyncs):",
                  *(f"- {v}" for v in r["excused"])]
    lines += ["", "Violations:" if r["violations"] else "No violations.",
              *(f"- {v}" for v in r["violations"]), *(f"- crash: {c}" for c in r["crashes"]),
              *(f"- left running: {n}" for n in r["left"]), "",
              "The schedule (seconds after the start):", "",
              *(f"- {f} -> {hit}" for f, hit in r["done"]), ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=300.0, help="length of the run")
    p.add_argument("--seed", type=int, default=None, help="replay this schedule")
    p.add_argument("--no-write", action="store_true", help="leave docs/reliability.md alone")
    args = p.parse_args()
    if args.seconds < 20:
        p.error("--seconds must be at least 20 (the last 12 s have no faults)")
    if not FAKETIME_LIB.exists():
        print(f"chaos: {FAKETIME_LIB} is missing: `pip install libfaketime` (a test "
              "dependency) or Debian's faketime package", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"leadership-chaos-{seed}-{os.getpid()}"
    logs.mkdir(parents=True)
    with ControlPlane() as cp:
        result = Run(cp, seed, args.seconds, logs).run()
    command = f"python -m chaos.run --seconds {args.seconds:.0f} --seed {seed}"
    text = report(result, command)
    print("\n" + text)
    print(f"logs: {logs}")
    if not args.no_write:
        OUT.write_text(text)
        print(f"wrote {OUT}")
    failed = result["violations"] or result["crashes"] or result["left"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
