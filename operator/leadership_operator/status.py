"""`leadership status`: one row per election, and whatever the Lease and the labels disagree on.

An election is a Lease named by some pod's ``<prefix>/election`` label (``--all-leases`` adds
every other Lease in scope). For each row: the namespace and Lease, the holder, the pod(s)
labelled ``leader``, seconds since the last renewal, ``leaseTransitions``, the number of
member pods, and the disagreement, if any:

- two or more pods labelled ``leader``;
- a live holder whose pod is not the one labelled ``leader`` (or no pod is);
- a pod labelled ``leader`` while the Lease is free, missing, or past its duration;
- a holder that matches no member pod, or several.

Non-guarantees: this is a snapshot taken by two list requests, not an observation over time.
"Renewed" is ``now - renewTime`` by *this machine's* wall clock (a display only: the operator
and the candidates judge expiry by their own monotonic clocks), so a skewed clock shifts it,
and a disagreement may be the operator's normal sub-second delay; one that persists is real.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import leadership

from .contract import Labels, Role
from .decide import ElectionState, pod_of_holder
from .kube import ApiKube, Kube
from .kubeclient import api_client


@dataclass
class Row:
    namespace: str
    lease: str
    holder: str
    #: pods labelled leader (normally one, or none).
    labelled_leader: list[str]
    #: seconds since renewTime by this machine's clock; None without a renewTime.
    renewed_seconds_ago: float | None
    transitions: int | None
    members: int
    #: leading (a live holder), expired, free or missing (no Lease object).
    lease_state: ElectionState
    disagreement: str = ""
    problems: list[str] = field(default_factory=list)


def election_row(namespace: str, name: str, lease: dict[str, Any] | None,
                 pods: Iterable[dict[str, Any]], labels: Labels,
                 now: datetime.datetime) -> Row:
    """The row of one election: a pure function of its Lease, its member pods and `now`."""
    pods = list(pods)
    names = [str(p["metadata"]["name"]) for p in pods]
    leaders = sorted(str(p["metadata"]["name"]) for p in pods
                     if (p["metadata"].get("labels") or {}).get(labels.role) == Role.LEADER)
    parsed = leadership.parse_lease(lease)
    record = parsed.record
    age = ((now - record.renew_time).total_seconds() if record.renew_time is not None
           else None)
    duration = record.lease_duration_seconds
    if lease is None:
        state = ElectionState.MISSING
    elif record.is_free:
        state = ElectionState.FREE
    elif age is None or duration is None or age >= duration:
        state = ElectionState.EXPIRED
    else:
        state = ElectionState.LEADING
    row = Row(namespace, name, record.holder_identity, leaders,
              None if age is None else round(age, 1),
              record.lease_transitions if lease is not None else None, len(pods), state,
              problems=list(parsed.problems))
    matches = pod_of_holder(record.holder_identity, names)
    wrong: list[str] = []
    if len(leaders) > 1:
        wrong.append(f"{len(leaders)} pods labelled leader")
    if state is ElectionState.LEADING:
        if not matches:
            wrong.append("the holder matches no member pod")
        elif len(matches) > 1:
            wrong.append(f"the holder matches {len(matches)} pods")
        elif leaders != matches:
            wrong.append(f"holder pod {matches[0]} is not the one labelled leader")
    elif leaders:
        wrong.append(f"labelled leader but the Lease is {state}")
    row.disagreement = "; ".join(wrong)
    return row


async def collect(kube: Kube, namespaces: list[str], labels: Labels, all_leases: bool,
                  now: datetime.datetime | None = None) -> list[Row]:
    """Two lists per scope (Leases, member pods); one row per election, sorted."""
    scopes: list[str | None] = [*namespaces] or [None]
    leases: dict[tuple[str, str], dict[str, Any]] = {}
    members: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for ns in scopes:
        items, _ = await kube.list_leases(ns)
        for lease in items:
            meta = lease["metadata"]
            leases[(meta["namespace"], meta["name"])] = lease
        for pod in await kube.list_pods(ns, labels.election):
            meta = pod["metadata"]
            election = (meta.get("labels") or {}).get(labels.election, "")
            members.setdefault((meta.get("namespace") or ns or "", election), []).append(pod)
    keys = set(members) | (set(leases) if all_leases else set())
    now = now or datetime.datetime.now(datetime.UTC)
    return [election_row(ns, name, leases.get((ns, name)), members.get((ns, name), []),
                         labels, now) for ns, name in sorted(keys)]


HEADERS = ("NAMESPACE", "LEASE", "HOLDER", "LEADER POD", "RENEWED", "TRANSITIONS", "MEMBERS",
           "DISAGREEMENT")


def table(rows: list[Row], color: bool) -> str:
    """Aligned columns; a disagreement row starts with "!" (and is red on a terminal)."""
    cells = [HEADERS]
    for r in rows:
        renewed = "-" if r.renewed_seconds_ago is None else f"{r.renewed_seconds_ago:.0f}s ago"
        holder = r.holder or f"<{r.lease_state}>"
        if r.holder and r.lease_state is ElectionState.EXPIRED:
            holder += " (expired)"
        cells.append((r.namespace, r.lease, holder, ",".join(r.labelled_leader) or "<none>",
                      renewed, "-" if r.transitions is None else str(r.transitions),
                      str(r.members), ("! " + r.disagreement) if r.disagreement else ""))
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADERS))]
    lines = []
    for i, row in enumerate(cells):
        line = "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        if i and rows[i - 1].disagreement:
            line = f"\033[1;31m{line}\033[0m" if color else line
        lines.append(line)
    return "\n".join(lines)


def render(rows: list[Row], output: str, color: bool) -> str:
    if output == "json":
        return json.dumps({"elections": [asdict(r) for r in rows]}, indent=2)
    if not rows:
        return "No elections found (pods join one with an election label; --all-leases " \
               "lists every Lease)."
    return table(rows, color)


@dataclass
class StatusOptions:
    kubeconfig: Path | None
    namespaces: list[str]
    labels: Labels
    output: str = "table"
    watch: bool = False
    interval: float = 1.0
    all_leases: bool = False


async def run(options: StatusOptions, out: TextIO = sys.stdout) -> int:
    """Print once; with `watch`, print again whenever a row changes, until interrupted."""
    api = await api_client(options.kubeconfig)
    kube = ApiKube(leadership.KubeApi(api))
    color = out.isatty() and options.output == "table"
    last: list[tuple[Any, ...]] | None = None
    try:
        while True:
            rows = await collect(kube, options.namespaces, options.labels, options.all_leases)
            # What changes, besides the renewal age (which changes every second).
            key = [(r.namespace, r.lease, r.holder, r.labelled_leader, r.transitions,
                    r.members, r.lease_state, r.disagreement) for r in rows]
            if key != last:
                if options.watch and last is not None:
                    out.write("\n")
                if options.watch and options.output == "table":
                    out.write(datetime.datetime.now().strftime("%H:%M:%S") + "\n")
                out.write(render(rows, options.output, color) + "\n")
                out.flush()
                last = key
            if not options.watch:
                return 0
            await asyncio.sleep(options.interval)
    finally:
        await api.close()
