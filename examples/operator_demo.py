"""`make demo`: the operator's story, on a local control plane, in about a minute.

1. Starts etcd, kube-apiserver and kube-controller-manager on loopback (built on first use).
2. Applies manifests/operator and manifests/example as they are. The Deployments make their
   pods, which stay Pending: there is no kubelet. Local processes stand in for the
   containers, each with its pod's name as POD_NAME and its ServiceAccount's own token, so
   the manifests' RBAC is what they run with:
   - two `leadership operator` replicas (the operator Deployment's two pods);
   - three `leadership sidecar --election web` (the example app's three pods).
3. Shows what a user sees: `kubectl get lease`, `kubectl get pods -L leadership.dev/role`,
   what each sidecar's `GET /leader` answers, which pod the `web-leader` Service selects,
   and `leadership status`.
4. Then: SIGKILL of the leader's sidecar with no successor running (its label goes `stale`
   at its renew deadline, before the Lease expires, and the `web-leader` Service selects
   nobody; when the sidecars come back, the label moves to the new leader), a graceful
   handover (SIGTERM), and SIGKILL of the active operator replica (the standby takes over
   and keeps labelling).
5. Prints the measured times, checks from a watch that no two pods were ever labelled
   `leader` at once, stops everything and exits 0.

The Leases here last 4 s (manifests say 15 s) to keep the story short.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import kubernetes

from controlplane.clients import sync_client
from controlplane.cluster import service_account_kubeconfig
from controlplane.launcher import ControlPlane
from controlplane.processes import free_port, stop_process
from controlplane.recorder import ClusterRecorder
from controlplane.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
TTL = 4
NS, ELECTION = "leadership-example", "web"
OPERATOR_NS, OPERATOR_LEASE = "leadership-system", "leadership-operator"
T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.2f}s] {message}", flush=True)


def show(title: str, text: str) -> None:
    print(f"\n$ {title}\n{text.rstrip()}\n", flush=True)


@dataclass
class Proc:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)


class Demo:
    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.logs = cp.dir / "demo-logs"
        self.logs.mkdir()
        self.api = sync_client(cp.kubeconfig)
        self.v1 = kubernetes.client.CoreV1Api(self.api)
        self.sidecars: dict[str, Proc] = {}
        self.operators: dict[str, Proc] = {}
        self.times: list[tuple[str, str, float]] = []

    # --- set-up ----------------------------------------------------------------------------

    def pods(self, namespace: str, selector: str, count: int) -> list[str]:
        def names() -> list[str] | None:
            found = sorted(p.metadata.name for p in self.v1.list_namespaced_pod(
                namespace, label_selector=selector).items if not p.metadata.deletion_timestamp)
            return found if len(found) == count else None

        return eventually(names, 60, f"{count} pods ({selector})", every=0.1,
                          fail=lambda _: RuntimeError(f"{namespace}: {count} pods ({selector}) "
                                                      "never appeared"))

    def token_kubeconfig(self, namespace: str, account: str) -> Path:
        return service_account_kubeconfig(self.cp.kubeconfig, namespace, account,
                                          self.cp.dir / f"kubeconfig-{account}", create=False)

    def spawn(self, name: str, namespace: str, args: list[str]) -> Proc:
        port = free_port()
        log = self.logs / f"{name}.log"
        env = {**os.environ, "POD_NAME": name, "POD_NAMESPACE": namespace}
        env.pop("KUBECONFIG", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "leadership_operator.cli", *args, "--log-format=text",
             f"--{'http-port' if args[0] == 'operator' else 'port'}={port}"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))
        return Proc(name, port, proc, log)

    def start_operator(self, pod: str) -> None:
        self.operators[pod] = self.spawn(pod, OPERATOR_NS, [
            "operator", f"--kubeconfig={self.operator_kubeconfig}", "--all-namespaces",
            f"--lease-seconds={TTL}"])

    def start_sidecar(self, pod: str) -> None:
        self.sidecars[pod] = self.spawn(pod, NS, [
            "sidecar", f"--election={ELECTION}", f"--kubeconfig={self.web_kubeconfig}",
            f"--lease-seconds={TTL}"])

    def until_it_knows_the_leader(self, pod: str) -> None:
        """Until the (re)started sidecar of `pod` answers /leader with a leader."""
        def knows() -> bool:
            answer = self.sidecars[pod].get("/leader")
            return bool(answer) and '"leader": ""' not in answer

        eventually(knows, 3 * TTL, f"the sidecar of {pod} knowing the leader", every=0.02,
                   fail=lambda _: RuntimeError(f"the sidecar of {pod} never answered /leader"))

    def set_up(self) -> None:
        for directory in ("operator", "example"):
            self.cp.kubectl("apply", "-k", str(ROOT / "manifests" / directory))
        say("applied manifests/operator and manifests/example")
        self.operator_pods = self.pods(OPERATOR_NS, "app.kubernetes.io/name=leadership-operator",
                                       2)
        self.web_pods = self.pods(NS, f"leadership.dev/election={ELECTION}", 3)
        say(f"the Deployments made their pods (Pending, no kubelet): "
            f"{', '.join(self.operator_pods)}; {', '.join(self.web_pods)}")
        self.operator_kubeconfig = self.token_kubeconfig(OPERATOR_NS, "leadership-operator")
        self.web_kubeconfig = self.token_kubeconfig(NS, "web")
        self.recorder = ClusterRecorder(self.cp.kubeconfig, NS)
        for pod in self.operator_pods:
            self.start_operator(pod)
        for pod in self.web_pods:
            self.start_sidecar(pod)
        say("started 2 operator replicas and 3 sidecars, each as its pod, with its "
            "ServiceAccount's token")

    # --- what a user sees ------------------------------------------------------------------

    def view(self, brief: bool = False) -> None:
        """What a user sees; `brief` leaves out the sidecars' answers."""
        kubectl = self.cp.kubectl
        show(f"kubectl -n {NS} get lease {ELECTION}",
             kubectl("-n", NS, "get", "lease", ELECTION).stdout)
        show(f"kubectl -n {NS} get pods -L leadership.dev/role",
             kubectl("-n", NS, "get", "pods", "-L", "leadership.dev/role").stdout)
        if not brief:
            answers = []
            for pod, car in self.sidecars.items():
                if car.proc.poll() is None:
                    answers.append(f"{pod}: {car.get('/leader')}")
            show("curl localhost:4040/leader   (each sidecar)", "\n".join(answers))
        self.show_service()
        status = subprocess.run(
            [sys.executable, "-m", "leadership_operator.cli", "status", "-n", NS,
             f"--kubeconfig={self.cp.kubeconfig}"], capture_output=True, text=True, cwd=ROOT,
            timeout=60, check=True)
        show(f"leadership status -n {NS}", status.stdout)

    def show_service(self) -> None:
        service = self.v1.read_namespaced_service("web-leader", NS)
        selector = ",".join(f"{k}={v}" for k, v in service.spec.selector.items())
        selected = [p.metadata.name for p in self.v1.list_namespaced_pod(
            NS, label_selector=selector).items]
        show(f"the Service web-leader selects {selector}",
             "\n".join(selected) or "(no pod)")

    # --- the story -------------------------------------------------------------------------

    def leader_pod(self) -> str | None:
        leaders = [p for p, r in self.recorder.current().items() if r == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    def active_operator(self) -> str:
        lease = kubernetes.client.CoordinationV1Api(self.api).read_namespaced_lease(
            OPERATOR_LEASE, OPERATOR_NS)
        return str(lease.spec.holder_identity)

    def label_lag(self, pod: str, after: float) -> float:
        """Seconds from the Lease naming `pod` to the `leader` label on it."""
        changed = self.recorder.when_holder(ELECTION, lambda h: h == pod, after)
        return self.recorder.when_role(pod, "leader", after) - changed

    def first_leader(self) -> str:
        self.recorder.wait(lambda r: sum(v == "leader" for v in r.values()) == 1 and all(
            r.get(p) in ("leader", "follower") for p in self.web_pods), 60,
            "one leader labelled, the others followers")
        leader = self.leader_pod()
        assert leader is not None
        say(f"{leader} leads; the operator labelled it leader and the others follower")
        self.times.append(("first leader: Lease named it to its label", leader,
                           self.label_lag(leader, 0)))
        return leader

    def crash(self, leader: str) -> str:
        followers = [p for p in self.web_pods if p != leader]
        say(f"SIGTERM the followers' sidecars ({', '.join(followers)}): no successor is left")
        for pod in followers:
            self.sidecars[pod].stop(signal.SIGTERM)
        say(f"SIGKILL the sidecar of the leader {leader} (as if the pod froze)")
        renewed = self.recorder.last_renewal(ELECTION, time.monotonic())
        killed = time.monotonic()
        self.sidecars[leader].stop(signal.SIGKILL)
        self.recorder.wait(lambda r: r.get(leader) == "stale", 3 * TTL, f"{leader} stale")
        stale = self.recorder.when_role(leader, "stale", killed)
        say(f"{leader} labelled stale {stale - killed:.2f}s after the kill, "
            f"{stale - renewed:.2f}s after its last renewal (the Lease lasts {TTL}s), with "
            "no successor")
        self.times.append(("crash: last renewal to the label stale", leader, stale - renewed))
        self.view(brief=True)
        say("restart the three sidecars (as the kubelet would); a fresh candidate waits one "
            "Lease duration before it takes an expired Lease")
        restarted = time.monotonic()
        for pod in self.web_pods:
            self.start_sidecar(pod)
        self.recorder.wait(lambda r: self.leader_pod() is not None, 4 * TTL, "a new leader")
        new = self.leader_pod()
        assert new is not None
        say(f"{new} took the Lease and was labelled leader")
        self.times.append(("crash: Lease changed hands to the new leader label", new,
                           self.label_lag(new, restarted)))
        for pod in self.web_pods:
            self.until_it_knows_the_leader(pod)
        return new

    def handover(self, leader: str, what: str) -> str:
        say(f"SIGTERM the sidecar of the leader {leader} (a rolling update): it releases")
        sent = time.monotonic()
        self.sidecars[leader].stop(signal.SIGTERM)
        self.recorder.wait(lambda r: self.leader_pod() not in (None, leader), 3 * TTL,
                           "a new leader")
        new = self.leader_pod()
        assert new is not None
        took = self.recorder.when_role(new, "leader", sent) - sent
        say(f"{new} labelled leader {took * 1000:.0f} ms after the SIGTERM")
        self.times.append((f"{what}: SIGTERM to new leader label", new, took))
        self.start_sidecar(leader)
        self.until_it_knows_the_leader(leader)
        return new

    def operator_failover(self) -> None:
        active = self.active_operator()
        standby = next(p for p in self.operators if p != active)
        say(f"SIGKILL the active operator replica {active}; {standby} is the standby")
        killed = time.monotonic()
        self.operators[active].stop(signal.SIGKILL)
        deadline = killed + 3 * TTL
        while "leadership_operator_active 1.0" not in self.operators[standby].get("/metrics"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{standby} never became active")
            time.sleep(0.02)
        took = time.monotonic() - killed
        say(f"{standby} is active {took:.2f}s after the kill (its Lease lasts {TTL}s)")
        self.times.append(("operator: SIGKILL of the active to standby active", standby,
                           took))
        self.start_operator(active)  # the Deployment's pod would be restarted

    def finish(self) -> None:
        self.recorder.never_two_leaders()
        changes = len(self.recorder.roles)
        say(f"checked {changes} role label changes seen by a watch: never two leaders")
        if self.recorder.watch_errors:
            say(f"(the watch was resumed after: {'; '.join(self.recorder.watch_errors)})")
        for proc in [*self.sidecars.values(), *self.operators.values()]:
            proc.stop()
        self.recorder.close()
        bad = [f"{p.name}: {line}" for p in [*self.sidecars.values(), *self.operators.values()]
               for line in p.log.read_text(errors="replace").splitlines()
               if " ERROR " in line or "Traceback" in line]
        if bad:
            raise RuntimeError("errors logged:\n" + "\n".join(bad[:20]))

    def run(self) -> None:
        self.set_up()
        leader = self.first_leader()
        self.view()
        leader = self.crash(leader)
        self.view()
        leader = self.handover(leader, "graceful handover")
        self.operator_failover()
        self.handover(leader, "handover, new active operator")
        self.view()
        self.finish()


def main() -> int:
    print("Starting a local control plane (etcd, kube-apiserver, kube-controller-manager). "
          "The first run builds them from the Go module proxy: about 7 minutes.", flush=True)
    with ControlPlane(with_controller_manager=True) as cp:
        demo = Demo(cp)
        try:
            demo.run()
        except BaseException:
            for proc in [*demo.sidecars.values(), *demo.operators.values()]:
                proc.stop(signal.SIGKILL)
                print(f"--- {proc.name} (last lines) ---\n"
                      + "\n".join(proc.log.read_text(errors="replace").splitlines()[-15:]),
                      file=sys.stderr)
            raise
    print("Measured (monotonic clock; label times from a pod watch):")
    print(f"  {'what':58} {'pod':36} {'seconds':>8}")
    for what, pod, took in demo.times:
        print(f"  {what:58} {pod:36} {took:8.3f}")
    print(f"\nA crashed leader keeps its label until its Lease ({TTL}s) runs out, then it is "
          "stale: no Service selects it, even before a successor appears.")
    print(f"Done in {time.monotonic() - T0:.0f}s; nothing left running.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
