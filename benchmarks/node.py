"""`make bench-node`: how fast traffic follows the Lease, on real pods, stage by stage.

    python -m benchmarks.node [--trials 30] [--crash-trials N]
                              [--scenarios handover rolling crash freeze]
                              [--routes label endpoint] [--no-write] [--no-peer]

The manifests as they are (`manifests/operator`, `manifests/example`: three app pods with
the sidecar, a 15 s Lease) on a node of this machine (`controlplane.local.LocalCluster`).
Two routes to the leader, each on a node of its own (kube-proxy's sync period is one for
the whole node: two routes to the same pods would slow each other): `label`,
manifests/example's `web-leader` Service, which selects the role label (the EndpointSlice
controller writes its slices), and `endpoint`, manifests/example-leader-endpoint's
selector-less `web-leader-endpoint`, whose one EndpointSlice the operator writes. A client
on the node calls the route's Service every 10 ms, each request on a new connection;
watches record the Lease, the role labels and the route's EndpointSlices, all on one
monotonic clock. Beside it, a kept-alive client (one connection, as HTTP libraries and
database drivers keep by default) calls the same Service on the same cadence: its rows say
when it first reached the new leader and how often the old one answered it after the new
term began. Per scenario and route, `--trials` trials (`--crash-trials` for crash and
freeze, which wait a Lease's duration each), each from a settled state (the
holder labelled leader, alone and ready behind the route, answering through it, and no
EndpointSlice of the namespace changed for 1.2 s, so that kube-proxy's sync period does not
carry over from the previous trial):

- handover: `kubectl delete pod <leader>`. Stages: delete -> the Lease names a new holder
  (the app exits, the sidecar is stopped after it and releases, a watching follower
  acquires) -> the new holder labelled `leader` (the operator) -> web-leader's EndpointSlice
  lists it ready (the EndpointSlice controller) -> the first request answered by it
  (kube-proxy). Target: Lease change to first answer p99 < 500 ms.
- rolling: `kubectl rollout restart deployment/web` (3 replicas, maxSurge 1, maxUnavailable
  0): leader changes, the longest time with no ready endpoint behind web-leader, the longest
  time with no answer, answers from a pod that was not the holder while the request was in
  flight (target 0).
- crash: SIGKILL of the leader's sidecar (the Lease's holder) on the node; the kubelet
  restarts it and it waits out its own old Lease. From the last renewal: the endpoint not
  ready (the kubelet saw the container die), the label off and the endpoint removed
  (target <= TTL + 1 s), the first answer by the successor. The pod is then deleted, so
  that repeated kills do not push it into the kubelet's crash-loop back-off.
- freeze: SIGSTOP of the leader's sidecar: the pod stays Running and Ready, only the Lease
  tells. From the last renewal: the endpoint removed (target <= TTL + 1 s), the first
  answer by the successor; answers by the frozen pod after its Lease had a new holder.
- partition: the leader pod's network namespace drops every packet to the API server's
  address (`Deployed.cut_from_api_server`), restored after the Lease's duration; the pod
  runs on and its clients still reach it. The same measures as freeze.

Percentiles are nearest-rank: with 30 trials p99 is the largest value. Writes
docs/node.md unless --no-write.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import pages
from controlplane import build
from controlplane.deployed import APP_NS, ELECTION, Deployed
from controlplane.local import LocalCluster
from controlplane.recorder import ClusterRecorder
from controlplane.traffic import Answer, Traffic, ask
from controlplane.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "node.md"
TTL = 15
INTERVAL = 0.01
#: seconds without any EndpointSlice change in the app's namespace before a trial starts:
#: kube-proxy applies a change at once only a sync period (1 s) after its last sync, so a
#: trial started right after the previous one's last change would pay for it.
QUIET = 1.2
SCENARIOS = ("handover", "rolling", "crash", "freeze", "partition")
#: route -> (its Service, the directory of manifests/ it comes from).
ROUTES = {"label": ("web-leader", "example"),
          "endpoint": ("web-leader-endpoint", "example-leader-endpoint")}
T = TypeVar("T")


@dataclass
class Results:
    #: scenario -> measure -> one value per trial (seconds, or a count)
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, scenario: str, measure: str, value: float) -> None:
        self.values.setdefault(scenario, {}).setdefault(measure, []).append(value)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class Bench:
    def __init__(self, cluster: LocalCluster, route: str = "label",
                 results: Results | None = None) -> None:
        self.cp = cluster.control_plane
        self.route, (self.service, example) = route, ROUTES[route]
        self.d = Deployed(cluster, example)
        self.rec = ClusterRecorder(self.cp.kubeconfig, APP_NS, service=self.service)
        self.results = results if results is not None else Results()
        self.warm_up: dict[str, list[float]] = {}

    def add(self, scenario: str, measure: str, value: float) -> None:
        """One trial's value, under the scenario and this route."""
        self.results.add(f"{scenario}, {self.route} route", measure, value)

    def settle(self, within: float = 120) -> str:
        address = self.d.service_ip(self.service)

        def check() -> str | None:
            pods = self.d.pods()
            holder = self.d.holder()
            state = self.rec.endpoints[-1] if self.rec.endpoints else None
            ready = all(any(c.type == "Ready" and c.status == "True"
                            for c in p.status.conditions or []) for p in pods)
            changed = self.rec.slice_changes[-1] if self.rec.slice_changes else 0.0
            if (len(pods) == 3 and ready and holder and self.d.labelled("leader") == [holder]
                    and state is not None and state.listed == (holder,)
                    and state.ready == (holder,) and ask(address) == holder
                    and time.monotonic() - changed >= QUIET):
                return holder
            return None

        return str(eventually(check, within, "a settled example"))

    def new_holder(self, since: float, old: str) -> tuple[float, str]:
        found = self.rec.next_holder(ELECTION, since, old)
        if found is None:
            raise LookupError(f"no holder after {old} since {since:.3f}")
        return found

    def wait(self, what: str, condition: Callable[[], T | None], within: float) -> T:
        """Poll `condition` every 10 ms until it returns a value; that value."""
        value = eventually(condition, within, what, every=0.01)
        assert value is not None
        return value

    # --- scenarios -------------------------------------------------------------------------

    def clients(self) -> tuple[Traffic, Traffic]:
        """Both kinds of client, started: a new connection per request, and one kept-alive
        connection (`Traffic`)."""
        address = self.d.service_ip(self.service)
        return (Traffic(address, interval=INTERVAL).start(),
                Traffic(address, interval=INTERVAL, keep_alive=True).start())

    def kept_alive(self, scenario: str, kept: list[Answer], since: float, t_lease: float,
                   old: str, new: str) -> None:
        """The kept-alive client's measures: its first answer from the new leader after the
        Lease changed, and its answers by the old leader sent after the new term began."""
        first = next((a for a in kept if a.sent >= since and a.body == new), None)
        self.add(scenario, "kept-alive client: Lease -> first answer from the new leader",
                 (first.done if first else math.inf) - t_lease)
        self.add(scenario, "kept-alive client: answers by the old leader after the new term "
                 "began", sum(1 for a in kept if a.body == old and a.sent >= t_lease))

    def handover(self) -> None:
        leader = self.settle()
        traffic, kept = self.clients()
        try:
            t0 = time.monotonic()
            self.d.v1.delete_namespaced_pod(leader, APP_NS)
            t_lease, new = self.wait("a new holder",
                                     lambda: self.rec.next_holder(ELECTION, t0, leader), 30)
            t_label = self.wait("the new leader labelled", lambda: next(
                (t for t, p, r in list(self.rec.roles)
                 if p == new and r == "leader" and t >= t0), None), 30)
            t_slice = self.wait("the new leader behind the route", lambda: next(
                (e.seen for e in list(self.rec.endpoints)
                 if e.seen >= t0 and e.ready == (new,)), None), 30)
            first = self.wait("an answer from the new leader",
                              lambda: traffic.first_answer_from(new, t0), 30)
            # The kept-alive client gets its answer once its connection ended (the old pod
            # went, or the gate closed it): waited for, as long as that takes.
            self.wait("a kept-alive answer from the new leader",
                      lambda: kept.first_answer_from(new, t0), TTL + 30)
        finally:
            answers = traffic.stop()
            kept_answers = kept.stop()
        add = self.add
        self.kept_alive("handover", kept_answers, t0, t_lease, leader, new)
        add("handover", "delete -> Lease has a new holder", t_lease - t0)
        add("handover", "Lease -> new holder labelled leader", t_label - t_lease)
        add("handover", "label -> EndpointSlice lists it ready", t_slice - t_label)
        add("handover", "EndpointSlice -> first answer from it", first.done - t_slice)
        add("handover", "Lease -> first answer from the new leader", first.done - t_lease)
        add("handover", "delete -> first answer from the new leader", first.done - t0)
        add("handover", "longest time with no answer",
            traffic.longest_silence(t0, first.done))
        add("handover", "answers from a non-leader",
            len(self.rec.not_from_holder(ELECTION, answers)))

    def rolling(self) -> None:
        self.settle()
        traffic, kept = self.clients()
        try:
            t0 = time.monotonic()
            self.cp.kubectl("-n", APP_NS, "rollout", "restart", "deployment/web")
            self.d.rollout_status(APP_NS, "web")
            self.settle()
            end = time.monotonic()
        finally:
            answers = traffic.stop()
            kept_answers = kept.stop()
        changes = [h for _, h in self.rec.holder_changes(ELECTION, t0) if h]
        add = self.add
        add("rolling", "rollout duration", end - t0)
        add("rolling", "leader changes", len(changes))
        add("rolling", "longest time with no ready leader endpoint",
            max(self.no_endpoint_windows(t0, end), default=0.0))
        add("rolling", "longest time with no answer", traffic.longest_silence(t0, end))
        add("rolling", "answers from a non-leader",
            len(self.rec.not_from_holder(ELECTION, answers)))
        add("rolling", "requests failed", sum(a.body is None for a in answers))
        add("rolling", "kept-alive client: answers from a non-leader",
            len(self.rec.not_from_holder(ELECTION, kept_answers)))

    def no_endpoint_windows(self, start: float, end: float) -> list[float]:
        spans, since = [], None
        for e in [e for e in list(self.rec.endpoints) if start <= e.seen <= end]:
            if not e.ready and since is None:
                since = e.seen
            elif e.ready and since is not None:
                spans.append(e.seen - since)
                since = None
        return spans

    def crash(self, sig: int, scenario: str) -> None:
        leader = self.settle()
        traffic, kept = self.clients()
        frozen: list[int] = []
        cut: int | None = None
        try:
            t0 = time.monotonic()
            if scenario == "partition":
                cut = self.d.cut_from_api_server(leader)
            else:
                pids = self.d.signal(leader, ("leadership",), sig)
                frozen = pids if sig == signal.SIGSTOP else []
            t_removed = self.wait("the old leader out of the route", lambda: next(
                (e.seen for e in list(self.rec.endpoints)
                 if e.seen >= t0 and leader not in e.listed), None), TTL + 30)
            t_lease, new = self.wait("a successor", lambda: next(
                ((t, h) for t, h in self.rec.holder_changes(ELECTION, t0)
                 if h not in ("", leader)), None), 30)
            first = self.wait("an answer from the successor",
                              lambda: traffic.first_answer_from(new, t0), 30)
            # The old holder's last write: the last change before the successor's. Not the
            # last one before the signal: a renewal in flight when it came lands after it.
            renewed = self.rec.last_renewal(ELECTION, t_lease - 1e-6)
        finally:
            if frozen:
                self.d.thaw(frozen)
            if cut is not None:  # restored after the Lease's duration (and its successor)
                time.sleep(max(0.0, t0 + TTL - time.monotonic()))
                self.d.reconnect(cut)
            answers = traffic.stop()
            kept_answers = kept.stop()
        if sig == signal.SIGKILL:
            # A container killed again and again is restarted ever later by the kubelet
            # (CrashLoopBackOff): replace the pod, so each trial starts from fresh pods.
            self.d.v1.delete_namespaced_pod(leader, APP_NS)
        add = self.add
        if sig == signal.SIGKILL:
            unready = next((e.seen for e in list(self.rec.endpoints)
                            if e.seen >= t0 and leader not in e.ready), None)
            if unready is not None:
                add(scenario, "last renewal -> endpoint not ready (the kubelet)",
                    unready - renewed)
        add(scenario, "last renewal -> endpoint removed (label off)", t_removed - renewed)
        add(scenario, "last renewal -> Lease has a successor", t_lease - renewed)
        add(scenario, "last renewal -> first answer from the successor", first.done - renewed)
        add(scenario, "answers by the old leader after the successor's term began",
            sum(1 for a in answers if a.body == leader and a.sent >= t_lease))
        add(scenario, "kept-alive client: answers by the old leader after the successor's "
            "term began", sum(1 for a in kept_answers if a.body == leader and a.sent >= t_lease))


def table(results: Results) -> str:
    lines = ["| scenario | measure | trials | p50 | p99 | max |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for scenario, measures in results.values.items():
        for measure, values in measures.items():
            counting = measure.startswith(("answers", "leader changes", "requests",
                                           "EndpointSlice syncs")) or " answers " in measure

            def fmt(v: float, counting: bool = counting) -> str:
                return f"{v:.0f}" if counting else f"{v * 1000:.0f} ms"

            lines.append(f"| {scenario} | {measure} | {len(values)} | "
                         f"{fmt(percentile(values, 0.5))} | {fmt(percentile(values, 0.99))} | "
                         f"{fmt(max(values))} |")
    return "\n".join(lines) + "\n"


def run(scenarios: list[str], trials: dict[str, int], route: str,
        node_config: dict[str, dict[str, Any]]) -> tuple[Results, tuple[int, int]]:
    """Every scenario's trials on one fresh node with the route's example; the results, and
    how many role label and endpoint changes were checked for "never two"."""
    with LocalCluster(node_config=node_config) as cluster:
        cp = cluster.control_plane
        bench = Bench(cluster, route)
        try:
            bench.d.apply()
            bench.d.wait_ready()
            # The first pod deletion after a node starts waits about 2 s longer in the
            # kubelet before the app gets SIGTERM (measured with containerd's task events):
            # one handover first, not counted, so the trials measure the steady state.
            warm = Bench(cluster, route)
            warm.rec.close()
            warm.rec = bench.rec
            warm.handover()
            warm_up = next(iter(warm.results.values.values()))
            for scenario in scenarios:
                for trial in range(trials[scenario]):
                    t = time.monotonic()
                    if scenario == "handover":
                        bench.handover()
                    elif scenario == "rolling":
                        bench.rolling()
                    else:
                        bench.crash(signal.SIGKILL if scenario == "crash" else signal.SIGSTOP,
                                    scenario)  # partition: no signal, a cut
                    key = f"{scenario}, {route} route"
                    values = {m: round(v[-1], 3) for m, v in
                              bench.results.values.get(key, {}).items()}
                    print(f"{key} {trial + 1}/{trials[scenario]}: {time.monotonic() - t:.1f} s "
                          f"{values}", flush=True)
            bench.rec.never_two_leaders()
            bench.rec.never_two_endpoints()
            controller = bench.results.values.setdefault(f"node of the {route} route", {})
            # The EndpointSlice controller re-queues a Service, 1 s later, when its cache of
            # the Service's slices is older than its own last write: two pod updates in a row
            # (the old leader's label off, the new one's on) can meet that.
            controller["EndpointSlice syncs retried 1 s later (informer cache out of date)"] = [
                (cp.logs / "kube-controller-manager.log").read_text(errors="replace").count(
                    "EndpointSlice informer cache is out of date")]
            controller["first handover after the node started: delete -> first answer"] = \
                warm_up["delete -> first answer from the new leader"]
            return bench.results, (len(bench.rec.roles), len(bench.rec.endpoints))
        finally:
            bench.rec.close()


def merge(into: Results, results: Results, suffix: str = "") -> None:
    for key, measures in results.values.items():
        into.values[f"{key}{suffix}"] = measures


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.node", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--crash-trials", type=int, default=None,
                   help="trials of crash, freeze and partition (default: --trials)")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--routes", nargs="+", choices=list(ROUTES), default=list(ROUTES))
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    p.add_argument("--no-peer", action="store_true",
                   help="skip the handover on a second node whose kube-proxy syncs every change "
                        "at once (minSyncPeriod 1 ms)")
    args = p.parse_args()
    load_before = os.getloadavg()
    started = time.monotonic()
    results, checked = Results(), (0, 0)
    configs: list[tuple[str, dict[str, dict[str, Any]], list[str]]] = [
        ("", {}, args.scenarios)]
    if not args.no_peer and "handover" in args.scenarios:
        # The same handover with kube-proxy syncing every change at once: what the last stage
        # costs with kube-proxy's default of at most one sync a second. (0 cannot say so:
        # kube-proxy defaults a zero minSyncPeriod to 1 s; 1 ms is no limit in practice.)
        configs.append((", kube-proxy minSyncPeriod 1 ms",
                        {"kube-proxy": {"nftables": {"minSyncPeriod": "1ms"}}}, ["handover"]))
    for suffix, node_config, scenarios in configs:
        for route in args.routes:
            trials = {s: args.crash_trials if s in ("crash", "freeze", "partition")
                      and args.crash_trials
                      else args.trials for s in scenarios}
            found, counted = run(scenarios, trials, route, node_config)
            merge(results, found, suffix)
            checked = (checked[0] + counted[0], checked[1] + counted[1])
    load_after = os.getloadavg()
    body = table(results)
    print("\n" + body)
    if args.no_write:
        return 0
    versions = build.load_versions()
    pages.write_keeping_analysis(OUT,
        "# Traffic follows the Lease: real pods, stage by stage\n\n"
        f"`make bench-node` (`python -m benchmarks.node {' '.join(sys.argv[1:])}`), run "
        f"{datetime.date.today()} on {os.cpu_count()} cores, {platform.machine()}, Linux "
        f"{platform.release()}; Kubernetes {versions.kubernetes} (kubelet, kube-proxy in "
        "nftables mode, its default minSyncPeriod of 1 s), containerd "
        f"{versions.tools['CONTAINERD_VERSION']}, runc {versions.tools['RUNC_VERSION']}, "
        "etcd, the API server, the node, the operator, the app and this client all on the "
        f"same {os.cpu_count()} cores. Load average before: {load_before[0]:.2f}, after: "
        f"{load_after[0]:.2f}. Took {time.monotonic() - started:.0f} s. "
        f"Checked over the whole run: {checked[0]} role label changes and {checked[1]} changes "
        "of the routes' endpoints, never two pods labelled leader, never two behind either "
        "route.\n\n"
        "The manifests as they are (a 15 s Lease); routes, each on a node of its own: "
        "`label` is manifests/example's web-leader (selects the role label), `endpoint` is "
        "manifests/example-leader-endpoint's web-leader-endpoint (the operator's one-write "
        "EndpointSlice, targeting the sidecar's gate); a client on the node calls the "
        f"route's Service every {INTERVAL * 1000:.0f} ms on a new connection, a second one "
        "on one kept-alive connection; each trial starts once no EndpointSlice of the "
        f"namespace changed for {QUIET} s; the stages are watch events "
        "and answers on one monotonic clock. Percentiles are nearest-rank (with 30 trials "
        "p99 is the largest). The scenarios are described in `benchmarks/node.py`.\n\n"
        + body)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
