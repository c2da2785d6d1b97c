"""`make bench-operator`: the operator at scale, on the local control plane.

    python -m benchmarks.operator_scale [--elections 1000] [--seconds 120] [--pods 5000]
                                        [--baseline DIR] [--no-write]
    python -m benchmarks.operator_scale --labelling-only [--runs 10] [--elections 1000]

Sets up `--elections` elections of 3 member pods each (pods stay Pending: no kubelet), starts
the operator (one process, all namespaces), waits until every pod is labelled, then for
`--seconds`:

- every holder renews its Lease every 2 s (one Go load-generator process, `leaseload`, on
  client-go: PUTs of the cached Lease, staggered; renewals also run from before the operator
  starts, so no election expires while it labels every pod);
- four times a second a random election changes hands (a PUT of a new holder), and the time
  until the operator's new `leader` label is seen through a pod watch is recorded (flip).

Then `--pods` pods that are in no election are created and deleted (churn): what the
operator pays for pods that are none of its business.

It reports the operator's CPU (from /proc, user + system) as cores and as milliseconds per
Lease event, its RSS (and peak), the flip latency p50/p99/max, the Lease watches and lists
(from the audit log), its event loop's lag, and its CPU and memory during the pod churn. On 2
cores the load generator, etcd and the API server compete with the operator, so the
per-event figures are the ones that carry over to a bigger machine.

`--labelling-only` measures the initial labelling alone, `--runs` times on fresh control
planes, and prints a row per run: its time, the operator's own Lease lost or not, its event
loop's lag, and its own renewals as the API server's audit log saw them (the longest time
one took to answer, the longest gap between two).

`--baseline DIR` runs everything twice, on fresh control planes: first the operator from
another checkout of this repository (its ``operator/`` source; `git worktree add DIR REV`),
then this one, and reports both side by side with their ratio. Prints a table and writes it
to docs/operator-scale.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import leadership
from benchmarks import pages
from controlplane import build
from controlplane.clients import new_aio_client
from controlplane.launcher import ControlPlane
from leadership import toolkit

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "operator-scale.md"
NAMESPACE = "scale"
CHURN_NAMESPACE = "churn"
RENEW_EVERY = 2.0
FLIPS_PER_SECOND = 4
ROLE = "leadership.dev/role"


def stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def latency_buckets(port: int, metric: str = "leadership_operator_label_latency_seconds"
                    ) -> dict[float, float]:
    """One of the operator's own histograms (cumulative counts by upper bound)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    buckets = {}
    for line in text.splitlines():
        if line.startswith(f"{metric}_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.split()[-1])
    return buckets


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, number = line.split()[:2]
            values[key] = int(number) / 1024
    return values["VmRSS:"], values["VmHWM:"]


class Api:
    """Raw JSON requests through the project's one way to the API server
    (`toolkit.KubeApi` over one kubernetes.aio ApiClient); an error status raises."""

    def __init__(self, client: Any) -> None:
        self.kube = toolkit.KubeApi(client, request_timeout=30)

    async def __call__(self, method: str, path: str, body: Any = None,
                       query: list[tuple[str, str]] | None = None) -> Any:
        return await self.kube.request(method, path, body=body, query=query)


async def gather_limited(n: int, coros: list[Any]) -> None:
    gate = asyncio.Semaphore(n)

    async def one(coro: Any) -> None:
        async with gate:
            await coro

    await asyncio.gather(*(one(c) for c in coros))


async def set_up(api: Api, elections: int) -> None:
    await api("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    pods = f"/api/v1/namespaces/{NAMESPACE}/pods"
    leases_path = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"

    async def election(i: int) -> None:
        name = f"e{i:04d}"
        for k in range(3):
            await api("POST", pods, {"metadata": {
                "name": f"{name}-{k}", "labels": {"leadership.dev/election": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/a:1"}]}})
        now = stamp()
        # 600 s, the longest the operator takes as it is: when the renewals stop, before the
        # pod churn, no election expires during it (1,000 expiries would be its cost).
        await api("POST", leases_path, {"metadata": {"name": name}, "spec": {
            "holderIdentity": f"{name}-0", "leaseDurationSeconds": 600, "acquireTime": now,
            "renewTime": now, "leaseTransitions": 0}})

    await gather_limited(32, [election(i) for i in range(elections)])


async def count_leaders(api: Api) -> int:
    """Pods labelled leader; 0 when the API server is too busy to say (a progress poll,
    while the operator labels 3,000 pods beside 500 renewals a second)."""
    try:
        result = await api("GET", f"/api/v1/namespaces/{NAMESPACE}/pods",
                           query=[("labelSelector", f"{ROLE}=leader")])
    except TimeoutError:
        return 0
    return len(result["items"])


async def renewals(kubeconfig: Path, elections: int, seconds: float) -> Any:
    """The Go load generator, renewing every Lease every RENEW_EVERY s for `seconds`."""
    return await asyncio.create_subprocess_exec(
        str(build.ensure(["leaseload"])["leaseload"]), f"-kubeconfig={kubeconfig}",
        f"-namespace={NAMESPACE}", "-prefix=e", "-width=4", f"-count={elections}",
        f"-period={RENEW_EVERY}s", f"-duration={seconds}s", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)  # requests cut by its own deadline, at the end


async def run_one(args: argparse.Namespace, source: Path | None) -> tuple[dict[str, Any], float]:
    """One full run on a fresh control plane, with the operator from `source` (another
    checkout) or from this one (None); the figures and the set-up time."""
    logs = Path(tempfile.mkdtemp(prefix="leadership-scale-"))
    env = {**os.environ, "PYTHONPATH": str(source / "operator")} if source else None
    with ControlPlane() as cp:
        client = await new_aio_client(cp.kubeconfig)
        api = Api(client)
        started = time.monotonic()
        await set_up(api, args.elections)
        setup_s = time.monotonic() - started
        print(f"set up {args.elections} elections ({3 * args.elections} pods) in "
              f"{setup_s:.0f}s", flush=True)
        # The elections are live before the operator starts, as in a cluster: without
        # renewals while it labels 3,000 pods, Leases created at set-up would really expire.
        warm_up = await renewals(cp.kubeconfig, args.elections, 600)
        op_log = logs / "operator.log"
        with op_log.open("wb") as log_file:
            operator = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "leadership_operator.cli", "operator",
                f"--kubeconfig={cp.kubeconfig}", "--all-namespaces", "--identity=op-scale",
                "--lease-namespace=default", "--http-port=18181", "--log-format=text",
                cwd=ROOT, stderr=log_file, stdout=asyncio.subprocess.DEVNULL, env=env)
        try:
            t0 = time.monotonic()
            while await count_leaders(api) < args.elections:
                if time.monotonic() - t0 > 300:
                    raise RuntimeError(f"not every election labelled in 300s; see {op_log}")
                await asyncio.sleep(0.5)
            labelled_s = time.monotonic() - t0
            print(f"operator labelled every election in {labelled_s:.1f}s", flush=True)
            # Its event loop's lag so far: the initial lists and labels, where a replica
            # may lose its own Lease (the step-downs counted below).
            setup_lag = histogram_summary(
                latency_buckets(18181, "leadership_operator_event_loop_lag_seconds"))
            warm_up.kill()
            await warm_up.wait()
            result = {} if args.labelling_only else await measure(
                api, client, cp.kubeconfig, args.elections, operator.pid, args.seconds)
            if not args.labelling_only:
                result.update(await pod_churn(api, operator.pid, args.pods))
            result.update(labelled_s=labelled_s, setup_lag=setup_lag)
        finally:
            if warm_up.returncode is None:
                warm_up.kill()
                await warm_up.wait()
            operator.terminate()
            await asyncio.wait_for(operator.wait(), 30)
            await client.close()
        # The operator's shared Lease watch is the only cluster-wide one (its own Candidate
        # watches one Lease in its namespace; the generator watches no Lease).
        cluster_wide = [e for e in audit_events_all(cp.audit_log)
                        if not e["objectRef"].get("namespace")]
        result["lease_watches_cluster_wide"] = sum(
            e["verb"] == "watch" and e["stage"] == "ResponseStarted" for e in cluster_wide)
        # A list is read in pages (limit + continue): count the lists, and their pages.
        pages = [e for e in cluster_wide
                 if e["verb"] == "list" and e["stage"] == "ResponseComplete"]
        result["lease_lists_cluster_wide"] = sum(
            "continue=" not in e["requestURI"] for e in pages)
        result["lease_list_pages_cluster_wide"] = len(pages)
        # The operator's own election: a replica that steps down stops labelling until it
        # leads again, and every flip meanwhile waits.
        result["step_downs"] = op_log.read_text(errors="replace").count("stepped down (lost)")
        result.update(own_lease_renewals(audit_events_all(cp.audit_log)))
    return result, setup_s


def own_lease_renewals(events: list[dict[str, Any]]) -> dict[str, float]:
    """The operator's renewals of its own Lease (``default/leadership-operator``), from the
    audit log: the API server's time to answer each (received -> response complete), and
    the longest gap between two renewals received (the operator renews every 5 s of 15)."""
    def at(stamp: str) -> float:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    updates = [e for e in events if e["verb"] == "update" and e["stage"] == "ResponseComplete"
               and e["objectRef"].get("namespace") == "default"
               and e["objectRef"].get("name") == "leadership-operator"]
    received = sorted(at(e["requestReceivedTimestamp"]) for e in updates)
    answered = sorted(at(e["stageTimestamp"]) - at(e["requestReceivedTimestamp"])
                      for e in updates)
    return {"own_renewals": len(updates),
            "own_renewal_server_max_s": max(answered, default=math.nan),
            "own_renewal_gap_max_s": max((b - a for a, b in itertools.pairwise(received)),
                                         default=math.nan)}


async def pod_churn(api: Api, pid: int, pods: int) -> dict[str, Any]:
    """Create, then delete, `pods` pods in no election; the operator's CPU and RSS meanwhile."""
    await api("POST", "/api/v1/namespaces", {"metadata": {"name": CHURN_NAMESPACE}})
    path = f"/api/v1/namespaces/{CHURN_NAMESPACE}/pods"
    rss0 = proc_rss_mib(pid)[0]
    cpu0, wall0 = proc_cpu_seconds(pid), time.monotonic()
    await gather_limited(16, [api("POST", path, {
        "metadata": {"name": f"p{i:05d}", "labels": {"app": "unrelated"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/a:1"}]}})
        for i in range(pods)])
    await gather_limited(16, [api("DELETE", f"{path}/p{i:05d}") for i in range(pods)])
    cpu1, wall1 = proc_cpu_seconds(pid), time.monotonic()
    return {"churn_cpu_s": cpu1 - cpu0, "churn_s": wall1 - wall0,
            "churn_rss_growth": proc_rss_mib(pid)[0] - rss0, "churn_pods": pods}


async def labelling_runs(args: argparse.Namespace) -> str:
    """`--runs` runs of the initial labelling alone, each on a fresh control plane: how long
    it took, whether the operator lost its own Lease, its loop lag, its own renewals."""
    lines = ["| run | initial labelling, s | own Lease lost (step-downs) | event loop lag p99 / "
             "max, ms | own renewals | API server's answer to a renewal, max, ms | longest "
             "gap between renewals, s |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    losses = 0
    for run in range(1, args.runs + 1):
        result, _ = await run_one(args, None)
        losses += result["step_downs"]
        lines.append(f"| {run} | {result['labelled_s']:.1f} | {result['step_downs']} | "
                     f"{result['setup_lag']} | {result['own_renewals']} | "
                     f"{result['own_renewal_server_max_s'] * 1000:.0f} | "
                     f"{result['own_renewal_gap_max_s']:.1f} |")
        print(lines[-1], flush=True)
    return (f"`python -m benchmarks.operator_scale --labelling-only --runs {args.runs} "
            f"--elections {args.elections}`, {datetime.date.today()}, {os.cpu_count()} cores: "
            f"{losses} losses of the operator's own Lease in {args.runs} runs.\n\n"
            + "\n".join(lines) + "\n")


async def run(args: argparse.Namespace) -> str:
    if args.labelling_only:
        return await labelling_runs(args)
    results: list[tuple[str, dict[str, Any], float]] = []
    if args.baseline is not None:
        print(f"baseline: the operator from {args.baseline}", flush=True)
        results.append(("before", *await run_one(args, args.baseline)))
        print("this checkout", flush=True)
    results.append(("after" if args.baseline else "measured", *await run_one(args, None)))
    return report(args, results)


def audit_events_all(audit_log: Path) -> list[dict[str, Any]]:
    events = []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        if (event.get("objectRef") or {}).get("resource") == "leases":
            events.append(event)
    return events


async def measure(api: Api, client: Any, kubeconfig: Path, elections: int, pid: int,
                  seconds: float) -> dict[str, Any]:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"
    rng = random.Random(7)
    names = [f"e{i:04d}" for i in range(elections)]
    flips: list[float] = []
    pending: dict[str, tuple[str, float]] = {}  # election -> (new leader pod, flip written at)
    stop, stop_watching, none_pending = asyncio.Event(), asyncio.Event(), asyncio.Event()
    watches = [0]  # the bench's own label watch, ended early and resumed

    async def flipper() -> None:
        while not stop.is_set():
            await asyncio.sleep(1 / FLIPS_PER_SECOND)
            name = rng.choice(names)
            if name in pending:
                continue
            lease = await api("GET", f"{path}/{name}")
            current = lease["spec"]["holderIdentity"]
            new = f"{name}-{(int(current[-1]) + 1) % 3}"
            lease["spec"]["holderIdentity"] = new
            lease["spec"]["renewTime"] = stamp()
            lease["spec"]["leaseTransitions"] += 1
            try:
                await api("PUT", f"{path}/{name}", lease)
            except leadership.ConflictError:  # a renewal raced it: try another
                continue
            pending[name] = (new, time.monotonic())

    async def label_watch() -> None:
        path = f"/api/v1/namespaces/{NAMESPACE}/pods"
        # One page of one pod, for the list's version (list_all would page through all).
        version = (await api("GET", path, query=[("limit", "1")]))["metadata"]["resourceVersion"]
        while not stop_watching.is_set():
            # The API server may end a watch before its timeout (a slow consumer, say):
            # resume from the last version seen, so that no label is missed.
            events = api.kube.watch(path, version,
                                    seconds=(int(seconds) + 60, int(seconds) + 60))
            async for event in events:
                if stop_watching.is_set():
                    return
                pod = event.object
                version = str(pod["metadata"].get("resourceVersion") or version)
                if event.type == "BOOKMARK":
                    continue
                name = pod["metadata"]["name"]
                election = name.rsplit("-", 1)[0]
                if (pod["metadata"].get("labels") or {}).get(ROLE) == "leader" and (
                        pending.get(election, ("", 0))[0] == name):
                    flips.append(time.monotonic() - pending.pop(election)[1])
                    if stop.is_set() and not pending:
                        none_pending.set()
            watches[0] += 1

    inside0 = latency_buckets(18181)
    lag0 = latency_buckets(18181, "leadership_operator_event_loop_lag_seconds")
    cpu0, wall0 = proc_cpu_seconds(pid), time.monotonic()
    # The renewals come from a Go process (client-go, JSON, HTTP/2): a Python generator cost
    # most of a core here and, sharing its event loop with the label watch, delayed the very
    # flips it timed.
    generator = await renewals(kubeconfig, elections, seconds)
    tasks = [asyncio.create_task(flipper()), asyncio.create_task(label_watch())]
    out, _ = await generator.communicate()
    stop.set()
    cpu1, wall1 = proc_cpu_seconds(pid), time.monotonic()
    rss, peak = proc_rss_mib(pid)
    inside1 = latency_buckets(18181)
    inside = {b: inside1[b] - inside0.get(b, 0) for b in inside1}
    lag1 = latency_buckets(18181, "leadership_operator_event_loop_lag_seconds")
    lag = {b: lag1[b] - lag0.get(b, 0) for b in lag1}
    if pending:  # the last flips' labels, still watched
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(none_pending.wait(), 5)
    stop_watching.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    load = json.loads(out)
    events = load["renewals"] + len(flips)
    return {"cpu_cores": (cpu1 - cpu0) / (wall1 - wall0), "cpu_ms_per_event":
            1000 * (cpu1 - cpu0) / max(1, events), "rss": rss, "rss_peak": peak,
            "renewals_per_s": load["renewals"] / (wall1 - wall0), "flips": flips,
            "unfinished_flips": len(pending), "conflicts": load["conflicts"],
            "generator_errors": load["errors"], "inside": inside, "put_ms": load["put_ms"],
            "generator_cores": load["cpu_s"] / (wall1 - wall0), "load": os.getloadavg(),
            "label_watch_resumed": watches[0],
            "loop_lag": histogram_summary(lag)}


def histogram_summary(buckets: dict[float, float]) -> str:
    """"p99 / max" of a cumulative histogram, each as the upper bound of its bucket, in ms."""
    total = buckets.get(float("inf"), 0)
    if not total:
        return "-"
    bounds = sorted(buckets)
    p99 = next(b for b in bounds if buckets[b] >= 0.99 * total)
    top = next(b for b in bounds if buckets[b] >= total)

    def ms(b: float) -> str:
        return "> 2500" if b == float("inf") else f"<= {1000 * b:.0f}"

    return f"{ms(p99)} / {ms(top)}"


def rows_of(r: dict[str, Any]) -> list[tuple[str, str, float | None, str]]:
    """(figure, shown value, the number compared between runs or None, target)."""
    flips = sorted(r["flips"])

    def pct(q: float) -> float:
        return 1000 * flips[min(len(flips) - 1, int(q * len(flips)))] if flips else float("nan")

    churn_ms = 1000 * r["churn_cpu_s"] / max(1, 2 * r["churn_pods"])
    return [
        ("Lease renewals per second (achieved; target 500)", f"{r['renewals_per_s']:.0f}",
         r["renewals_per_s"], ""),
        ("operator CPU, cores", f"{r['cpu_cores']:.3f}", r["cpu_cores"], "≤ 0.5"),
        ("operator CPU per Lease event, ms", f"{r['cpu_ms_per_event']:.3f}",
         r["cpu_ms_per_event"], ""),
        ("operator RSS / peak, MiB", f"{r['rss']:.0f} / {r['rss_peak']:.0f}", r["rss"],
         "≤ 192 (its request)"),
        (f"label flip p50 / p99 / max, ms ({len(flips)} flips)",
         f"{pct(0.5):.0f} / {pct(0.99):.0f} / {1000 * max(flips, default=0):.0f}",
         pct(0.99), "p99 < 250"),
        ("flips not labelled by the end", str(r["unfinished_flips"]), None, "0"),
        ("the benchmark's label watch, ended by the API server and resumed",
         str(r.get("label_watch_resumed", 0)), None, ""),
        ("inside the operator: Lease change seen to label written, share under 25 / 100 / "
         "250 ms", " / ".join(
             f"{100 * r['inside'].get(b, 0) / max(1, r['inside'].get(float('inf'), 0)):.0f}%"
             for b in (0.025, 0.1, 0.25)), None, ""),
        ("API server write latency under this load (the generator's PUTs), p50 / p99 / max, "
         "ms", " / ".join(f"{v:.0f}" for v in r["put_ms"]), None, ""),
        ("load generator (Go, client-go) CPU, cores", f"{r['generator_cores']:.2f}", None, ""),
        ("Lease watches opened by the operator (audit log)",
         str(r["lease_watches_cluster_wide"]), r["lease_watches_cluster_wide"], "1 per scope"),
        ("Lease lists by the operator, each of every Lease (audit log; pages)",
         f"{r['lease_lists_cluster_wide']} ({r.get('lease_list_pages_cluster_wide', '-')})",
         r["lease_lists_cluster_wide"], "1 per scope"),
        ("operator event loop lag p99 / max, ms (its own metric)", r["loop_lag"], None, ""),
        ("initial labelling (operator started to every election's leader labelled), s",
         f"{r['labelled_s']:.1f}", r["labelled_s"], ""),
        ("... operator event loop lag meanwhile, p99 / max, ms", r["setup_lag"], None, ""),
        ("the operator lost its own Lease (no renewal answered within the renew deadline), "
         "times, set-up included", str(r["step_downs"]), None, "0"),
        (f"{r['churn_pods']:,} pods in no election created and deleted: operator CPU, s "
         f"(per pod event, ms)", f"{r['churn_cpu_s']:.2f} ({churn_ms:.3f})",
         r["churn_cpu_s"], "independent of them"),
        ("... operator RSS growth meanwhile, MiB", f"{r['churn_rss_growth']:+.0f}", None, ""),
    ]


def report(args: argparse.Namespace,
           results: list[tuple[str, dict[str, Any], float]]) -> str:
    tables = [(name, rows_of(r)) for name, r, _ in results]
    if len(tables) == 1:
        table = "| figure | measured | target |\n| --- | ---: | ---: |\n" + "\n".join(
            f"| {a} | {b} | {t} |" for a, b, _, t in tables[0][1])
    else:
        (_, before), (_, after) = tables

        def ratio(x: float | None, y: float | None) -> str:
            return f"{y / x:.2f}" if x and y is not None else ""

        table = ("| figure | before | after | after / before | target |\n"
                 "| --- | ---: | ---: | ---: | ---: |\n" + "\n".join(
                     f"| {a} | {b} | {b2} | {ratio(x, y)} | {t} |"
                     for (a, b, x, t), (_, b2, y, _) in zip(before, after, strict=True)))
    baseline = (f" --baseline {args.baseline}" if args.baseline else "")
    runs = "; ".join(f"{name}: setting up took {setup:.0f} s, load average at the end "
                     f"{r['load'][0]:.2f}" for name, r, setup in results)
    compared = ("\n\n\"Before\" is the operator from the checkout given as `--baseline`, "
                "\"after\" this one; each on its own fresh control plane, one after the other."
                if args.baseline else "")
    return (f"# The operator at scale\n\n`python -m benchmarks.operator_scale --elections "
            f"{args.elections} --seconds {args.seconds:.0f} --pods {args.pods}{baseline}` "
            f"(`make bench-operator`), run {datetime.date.today()} on {os.cpu_count()} cores "
            f"with the load generator, etcd and kube-apiserver on the same machine ({runs})."
            f"{compared}\n\n"
            f"{args.elections} elections of 3 pods each; every holder renews every "
            f"{RENEW_EVERY:.0f} s (a Go process, client-go); {FLIPS_PER_SECOND} times a second "
            "one election changes hands, and the flip is timed from the PUT's answer to the new "
            "`leader` label seen through a pod watch. Then pods in no election are created and "
            "deleted, 16 requests at a time.\n\n"
            + table + "\n")


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.operator_scale",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--elections", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--pods", type=int, default=5000,
                   help="pods in no election to create and delete at the end")
    p.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                   help="also run the operator of another checkout first, and compare")
    p.add_argument("--labelling-only", action="store_true",
                   help="measure the initial labelling alone, --runs times; print only")
    p.add_argument("--runs", type=int, default=10, help="with --labelling-only")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = p.parse_args()
    body = asyncio.run(run(args))
    print("\n" + body)
    if not args.no_write and not args.labelling_only:
        pages.write_keeping_analysis(OUT, body)
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
