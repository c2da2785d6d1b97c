"""`make demo`: the operator's story on real pods, on a node of this machine.

What a user of the project does and sees, each step with the command they would type:

1. `kubectl apply -k manifests/operator`, `-k manifests/policies/lease-holder` (the opt-in
   policy the example's namespace opts into: a pod holds the Lease only as itself) and
   `-k manifests/example`, as they are: the operator's two pods and the app's three pods
   (the sidecar beside each app container), all from the image built from the Dockerfile,
   Running and Ready.
2. `kubectl get lease`, `kubectl get pods -L leadership.dev/role`, `leadership status`.
3. A client on the node calls the `web-leader` Service every 50 ms: every answer comes
   from the pod the Lease names.
4. `kubectl rollout restart deployment/web`: the leadership hands over pod by pod and the
   answers follow.
5. `kubectl delete pod <leader>`: the sidecar releases the Lease on SIGTERM, a follower takes
   it at once. Then every process of the new leader's pod SIGKILLed on the node (the pod is
   not deleted; the kubelet restarts its containers): its label goes `stale` when its
   Lease runs out, the Service answers nothing until a successor leads, then the successor.
6. `kubectl delete pod <active operator>`: the standby takes over; labels keep following.
7. The measured figures; no two pods were ever labelled leader, or behind `web-leader`;
   the node is torn down and nothing is left.

It needs root on Linux and a machine with no kubelet or container runtime of its own; it
checks, and otherwise says why in one line and runs the process version
(`make demo-processes`, `examples/operator_demo.py`). Before it installs or starts anything
it prints what.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from controlplane import build, host, images, network
from controlplane.build import BuildError
from controlplane.deployed import APP_NS, ELECTION, OPERATOR, OPERATOR_NS, Deployed
from controlplane.launcher import StartError
from controlplane.local import LocalCluster
from controlplane.node import NodeError, leftovers
from controlplane.recorder import ClusterRecorder
from controlplane.traffic import Traffic, ask
from controlplane.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
T0 = time.monotonic()
TTL = 15  # manifests/example's --lease-seconds


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


@dataclass
class Figures:
    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, what: str, value: str) -> None:
        self.rows.append((what, value))
        say(f"{what}: {value}")


class Story:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cp = cp = cluster.control_plane
        self.d = Deployed(cluster)
        self.env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig)}
        self.kubectl_bin = cp.binaries["kubectl"]
        self.figures = Figures()
        self.recorder = ClusterRecorder(cp.kubeconfig, APP_NS, service="web-leader")

    # --- what the user types -------------------------------------------------------------

    def run(self, *command: str, show: bool = True) -> str:
        """Run a command as the user would type it (kubectl, leadership) and show it."""
        argv = list(command)
        if argv[0] == "kubectl":
            argv[0] = str(self.kubectl_bin)
        elif argv[0] == "leadership":
            argv = [sys.executable, "-m", "leadership_operator.cli", *argv[1:]]
        out = subprocess.run(argv, env=self.env, cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"`{' '.join(command)}` failed: {out.stderr.strip()}")
        if show:
            print(f"\n$ {' '.join(command)}\n{out.stdout.rstrip()}\n", flush=True)
        return out.stdout

    def leader(self) -> str:
        return self.d.holder()

    def wait_settled(self, within: float = 120) -> str:
        """Until the Lease's holder is labelled leader, alone behind web-leader, and
        answering through it."""

        def check() -> str | None:
            holder = self.d.holder()
            state = self.recorder.endpoints[-1] if self.recorder.endpoints else None
            if (holder and self.d.labelled("leader") == [holder] and state is not None
                    and state.ready == (holder,) and self.traffic_answer() == holder):
                return holder
            return None

        return str(eventually(check, within, "the leader labelled and answering"))

    def traffic_answer(self) -> str | None:
        return ask(self.service_ip)

    # --- the steps -------------------------------------------------------------------------

    def deploy(self) -> None:
        say("1. Deploy the operator and the example app, as the manifests are")
        self.run("kubectl", "apply", "-k", "manifests/operator")
        self.run("kubectl", "apply", "-k", "manifests/policies/lease-holder")
        self.run("kubectl", "apply", "-k", "manifests/example")
        started = time.monotonic()
        self.d.wait_ready()
        self.figures.add("apply to every pod Running and Ready",
                         f"{time.monotonic() - started:.1f} s")
        self.run("kubectl", "-n", OPERATOR_NS, "get", "pods", "-o", "wide")
        self.run("kubectl", "-n", APP_NS, "get", "pods", "-o", "wide")
        self.service_ip = self.d.service_ip("web-leader")

    def look(self) -> str:
        say("2. Who leads: the Lease, the labels, leadership status")
        leader = self.wait_settled()
        self.run("kubectl", "-n", APP_NS, "get", "lease", ELECTION)
        self.run("kubectl", "-n", APP_NS, "get", "pods", "-L", "leadership.dev/role")
        self.run("kubectl", "-n", APP_NS, "get", "endpointslices",
                 "-l", "kubernetes.io/service-name=web-leader")
        self.run("leadership", "status", "-n", APP_NS)
        return leader

    def traffic(self, leader: str) -> None:
        say(f"3. A client on the node calls web-leader ({self.service_ip}) every 50 ms")
        print(f"\n$ while sleep 0.05; do curl -s http://{self.service_ip}/; echo; done\n",
              flush=True)
        client = Traffic(self.service_ip, interval=0.05).start()
        eventually(lambda: len(client.snapshot()) >= 40, 20, "40 answers")
        answers = client.stop()
        who = sorted({a.body or f"({a.error})" for a in answers})
        for line in [a.body or a.error for a in answers[:3]]:
            print(f"{line}", flush=True)
        print(f"... {len(answers)} answers, from: {', '.join(who)}\n", flush=True)
        if who != [leader]:
            raise RuntimeError(f"answers came from {who}, the Lease names {leader}")
        self.figures.add("answers from the pod the Lease names", f"{len(answers)} of "
                                                                 f"{len(answers)}")

    def handovers_since(self, since: float) -> list[tuple[float, str]]:
        return self.recorder.holder_changes(ELECTION, since)

    def rolling_update(self) -> None:
        say("4. A rolling update: every pod replaced, one at a time")
        client = Traffic(self.service_ip, interval=0.05).start()
        started = time.monotonic()
        self.run("kubectl", "-n", APP_NS, "rollout", "restart", "deployment/web")
        self.run("kubectl", "-n", APP_NS, "rollout", "status", "deployment/web",
                 "--timeout=180s")
        leader = self.wait_settled()
        answers = client.stop()
        for t, holder in self.handovers_since(started):
            say(f"   the Lease went to {holder or '(free: released)'} at +{t - started:.2f} s")
        gaps = self.no_leader_windows(started, time.monotonic())
        wrong = self.recorder.not_from_holder(ELECTION, answers)
        self.figures.add("rolling update: longest time with no leader endpoint",
                         f"{max(gaps, default=0.0) * 1000:.0f} ms")
        self.figures.add("rolling update: longest time with no answer",
                         f"{client.longest_silence(started, answers[-1].sent) * 1000:.0f} ms")
        self.figures.add("rolling update: answers from a pod that was not the leader",
                         f"{len(wrong)} of {len(answers)}")
        say(f"   {leader} leads after the update")

    def no_leader_windows(self, start: float, end: float) -> list[float]:
        """The spans in [start, end] during which web-leader had no ready endpoint."""
        spans, empty_since = [], None
        state = self.recorder.endpoints_at(start)
        if state is not None and not state.ready:
            empty_since = start
        for e in [e for e in list(self.recorder.endpoints) if start <= e.seen <= end]:
            if not e.ready and empty_since is None:
                empty_since = e.seen
            elif e.ready and empty_since is not None:
                spans.append(e.seen - empty_since)
                empty_since = None
        if empty_since is not None:
            spans.append(end - empty_since)
        return spans

    def delete_leader(self) -> None:
        leader = self.wait_settled()
        say(f"5a. Delete the leader pod {leader}: its sidecar releases the Lease on SIGTERM")
        client = Traffic(self.service_ip, interval=0.05).start()
        deleted = time.monotonic()
        self.run("kubectl", "-n", APP_NS, "delete", "pod", leader, "--wait=false")
        new = eventually(lambda: next(
            (h for _, h in self.handovers_since(deleted) if h not in ("", leader)), None),
                         30, "a new holder")
        answered = eventually(lambda: client.first_answer_from(new, deleted),
                              30, "an answer from the new leader")
        client.stop()
        changed = self.recorder.when_holder(ELECTION, lambda h: h == new, deleted)
        self.figures.add("delete the leader pod: to the Lease's new holder",
                         f"{(changed - deleted) * 1000:.0f} ms")
        self.figures.add("delete the leader pod: to the first answer from the new leader",
                         f"{(answered.done - deleted) * 1000:.0f} ms")

    def crash_leader(self) -> None:
        leader = self.wait_settled()
        say(f"5b. SIGKILL every process of the leader pod {leader} on the node (a crash: the "
            "pod is not deleted, the kubelet restarts its containers)")
        pids = {c: self.d.pids(leader, c) for c in ("leadership", "app")}
        print(f"\n$ kill -KILL {' '.join(str(p) for ps in pids.values() for p in ps)}"
              f"   # the pod's sidecar and app\n", flush=True)
        client = Traffic(self.service_ip, interval=0.05).start()
        renewed = self.recorder.last_renewal(ELECTION, time.monotonic())
        killed = time.monotonic()
        self.d.signal(leader, ("leadership", "app"), signal.SIGKILL)
        off = eventually(lambda: next(
            (t for t, pod, role in list(self.recorder.roles)
             if pod == leader and t >= killed and role != "leader"), None),
                         TTL + 15, f"{leader} no longer labelled leader")
        label = self.recorder.current().get(leader)
        say(f"   {leader} labelled {label} {off - renewed:.2f} s after its last renewal "
            f"(its renew deadline is {TTL * 2 / 3:g} s, the Lease lasts {TTL} s)")
        new = self.wait_settled()
        answered = client.first_answer_from(new, killed)
        answers = client.stop()
        silence = client.longest_silence(killed, answers[-1].sent)
        self.figures.add("crash: last renewal to the leader label off", f"{off - renewed:.2f} s")
        if answered is not None:
            self.figures.add("crash: last renewal to the first answer from the successor",
                             f"{answered.done - renewed:.2f} s ({new})")
        self.figures.add("crash: longest time with no answer", f"{silence:.2f} s")
        self.run("kubectl", "-n", APP_NS, "get", "pods", "-L", "leadership.dev/role")

    def operator_failover(self) -> None:
        active = self.d.holder(OPERATOR, OPERATOR_NS)
        say(f"6. Delete the active operator pod {active}: the standby takes over")
        deleted = time.monotonic()
        self.run("kubectl", "-n", OPERATOR_NS, "delete", "pod", active, "--wait=false")
        standby = eventually(lambda: (
            h if (h := self.d.holder(OPERATOR, OPERATOR_NS)) not in ("", active) else None),
                             30, "another active operator")
        self.figures.add("operator: delete the active pod to the standby active",
                         f"{(time.monotonic() - deleted) * 1000:.0f} ms ({standby})")
        leader = self.wait_settled()
        say(f"   the labels keep following under {standby}: SIGTERM the leader's sidecar")
        self.d.signal(leader, ("leadership",), signal.SIGTERM)
        new = eventually(lambda: next(
            (p for p in self.d.labelled("leader") if p != leader), None),
                         30, "a new leader labelled")
        say(f"   {new} labelled leader by {standby}")
        self.wait_settled()
        self.run("kubectl", "-n", APP_NS, "get", "pods", "-L", "leadership.dev/role")
        self.run("leadership", "status", "-n", APP_NS)

    def finish(self) -> None:
        self.recorder.never_two_leaders()
        self.recorder.never_two_endpoints()
        say(f"7. Checked {len(self.recorder.roles)} role label changes and "
            f"{len(self.recorder.endpoints)} changes of web-leader's endpoints, as watches "
            "saw them: never two pods labelled leader, never two behind web-leader")
        self.recorder.close()


def announce() -> None:
    """Say what will be installed, built and started, before doing any of it."""
    packages = host.missing_packages()
    if packages:
        say("It will install these Debian packages: " + ", ".join(
            f"{p} ({why})" for p, why in packages.items()))
    missing = [n for n in [*build.CONTROL_PLANE, *build.NODE, *build.IMAGE_TOOLS]
               if not build.target_path(n).is_file()]
    if missing:
        say(f"It will build from source, once (cached in {build.cache_root()}): "
            f"{', '.join(missing)}: about 10 minutes on 2 cores with empty caches")
    say(f"It will build the images (cached in {images.cache_dir()}): {images.PROJECT_IMAGE} "
        f"from the Dockerfile, {images.PAUSE}, {images.AGNHOST}, if their inputs changed")
    say("It starts: etcd, kube-apiserver, kube-controller-manager, containerd, kubelet, "
        f"kube-scheduler, kube-proxy; a bridge {network.BRIDGE} ({network.NODE_IP}/24) with "
        "no route off this machine; and removes all of it when done.")


def main() -> int:
    why = host.why_no_node((build.cache_root(),))
    if why:
        print(f"make demo: no real node on this machine ({why}); running the process "
              "version instead (make demo-processes).", flush=True)
        from examples import operator_demo

        return operator_demo.main()
    announce()
    started = time.monotonic()
    try:
        with LocalCluster() as cluster:
            up = time.monotonic() - started
            say(f"control plane and node up in {up:.0f} s (of which building: binaries "
                f"{cluster.node.timings.get('binaries', 0):.0f} s, images "
                f"{cluster.node.timings.get('images', 0):.0f} s)")
            story = Story(cluster)
            try:
                story.deploy()
                story.traffic(story.look())
                story.rolling_update()
                story.delete_leader()
                story.crash_leader()
                story.operator_failover()
                story.finish()
            except BaseException:
                story.recorder.close()
                raise
    except (NodeError, BuildError, StartError) as exc:
        print(f"make demo: the node did not come up: {exc}", file=sys.stderr)
        return 2
    left = leftovers()
    if left:
        print(f"make demo: left behind: {left}", file=sys.stderr)
        return 1
    print("\nMeasured (monotonic clock; labels, Lease and endpoints from watches):")
    for what, value in story.figures.rows:
        print(f"  {what:66} {value}")
    print(f"\nDone in {time.monotonic() - T0:.0f} s; the node is torn down, nothing is left "
          "running.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
