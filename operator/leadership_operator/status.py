"""`leadership status`: one row per election, and whatever the Lease and the labels disagree on.

An election is a Lease named by some pod's ``<prefix>/election`` label (``--all-leases`` adds
every other Lease in scope). For each row: the namespace and Lease, the holder, the pod(s)
labelled ``leader``, seconds since the last renewal, ``leaseTransitions``, the number of
member pods, and the disagreement, if any:

- two or more pods labelled ``leader``;
- a live holder whose pod is not the one labelled ``leader`` (or no pod is);
- a pod labelled ``leader`` while the Lease is free, missing, past its duration, or late
  (past the holder's renew deadline: the operator drains it then, see `decide`);
- a holder that matches no member pod, or several;
- members of a Lease that does not exist (a typo in the election label, or a Lease not
  created yet).

Time: "renewed" is ``now - renewTime`` where `now` is the *API server's* clock, as the
``Date`` header of its answer tells it (to the second), not this machine's: a machine whose
clock is off shows the same rows. Judged to the second, a Lease is expired only once its
last renewal is a full second older than its duration. A ``renewTime`` ahead of the API
server's clock means the holder's clock is ahead: the row says so, and it is no
disagreement (the operator and the candidates never compare remote times anyway: they
judge expiry by their own monotonic clocks). Only elections can disagree: a Lease with no
member pod (``--all-leases``: the operator's own, kube-apiserver's) is listed, never marked.

Non-guarantees: this is a snapshot taken by two list requests, not an observation over time,
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

from leadership import toolkit

from . import text
from .contract import Labels, Role
from .decide import ElectionState, pod_of_holder, renew_deadline
from .kube import ApiKube, Kube
from .kubeclient import api_client
from .pods import Member


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
    #: leading (a live holder), late (past its renew deadline), expired, free or missing
    #: (no Lease object).
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
    parsed = toolkit.parse_lease(lease)
    record = parsed.record
    age = ((now - record.renew_time).total_seconds() if record.renew_time is not None
           else None)
    duration = record.lease_duration_seconds
    problems = list(parsed.problems)
    if age is not None and age < -SKEW_TOLERANCE:
        problems.append(f"renewTime is {-age:.0f}s ahead of the API server's clock: the "
                        "holder's clock is ahead (harmless: nobody compares remote times)")
    if lease is None:
        state = ElectionState.MISSING
    elif record.is_free:
        state = ElectionState.FREE
    elif age is None or duration is None or age >= duration + SKEW_TOLERANCE:
        state = ElectionState.EXPIRED
    elif age >= _deadline(record.holder_identity, pods, labels, duration) + SKEW_TOLERANCE:
        state = ElectionState.LATE
    else:
        state = ElectionState.LEADING
    row = Row(namespace, name, record.holder_identity, leaders,
              # Within the Date header's second a renewal "after now" is its rounding: 0.
              None if age is None else round(0.0 if -SKEW_TOLERANCE < age < 0 else age, 1),
              record.lease_transitions if lease is not None else None, len(pods), state,
              problems=problems)
    matches = pod_of_holder(record.holder_identity, names)
    wrong: list[str] = []
    if not pods:
        return row  # a Lease that no pod is a member of is no election: it cannot disagree
    if lease is None:
        wrong.append("no such Lease: a typo in the election label, or not created yet")
    if len(leaders) > 1:
        wrong.append(f"{len(leaders)} pods labelled leader")
    if state in (ElectionState.LEADING, ElectionState.LATE):
        if not matches:
            wrong.append("the holder matches no member pod")
        elif len(matches) > 1:
            wrong.append(f"the holder matches {len(matches)} pods")
        elif state is ElectionState.LEADING and leaders != matches:
            wrong.append(f"holder pod {matches[0]} is not the one labelled leader")
    if leaders and state is not ElectionState.LEADING:
        wrong.append(f"labelled leader but the Lease is {state}")
    row.disagreement = "; ".join(wrong)
    return row


def _deadline(holder: str, pods: list[dict[str, Any]], labels: Labels,
              duration: int) -> float:
    """The holder's renew deadline as the operator judges it (its pod's annotation, if one
    member pod is the holder; otherwise the default)."""
    matches = pod_of_holder(holder, [str(p["metadata"]["name"]) for p in pods])
    declared = None
    if len(matches) == 1:
        pod = next(p for p in pods if p["metadata"]["name"] == matches[0])
        value = (pod["metadata"].get("annotations") or {}).get(labels.renew_deadline)
        declared = value if isinstance(value, str) else None
    return renew_deadline(Member(holder, renew_deadline=declared), duration)[0]


async def collect(kube: Kube, namespaces: list[str], labels: Labels, all_leases: bool,
                  now: datetime.datetime | None = None) -> list[Row]:
    """Two lists per scope (Leases, member pods); one row per election, sorted. Times are
    judged against `now`, by default the API server's clock (`Kube.server_now`)."""
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
            if not toolkit.is_dns_subdomain(election):
                continue  # a label that names no possible Lease makes no election
            members.setdefault((meta.get("namespace") or ns or "", election), []).append(pod)
    keys = set(members) | (set(leases) if all_leases else set())
    now = now or kube.server_now() or datetime.datetime.now(datetime.UTC)
    return [election_row(ns, name, leases.get((ns, name)), members.get((ns, name), []),
                         labels, now) for ns, name in sorted(keys)]


#: Remote times are judged to the second: the Date header's resolution.
SKEW_TOLERANCE = 1.0
HEADERS = ("NAMESPACE", "LEASE", "HOLDER", "LEADER POD", "RENEWED", "TRANSITIONS", "MEMBERS",
           "DISAGREEMENT")


def printable(value: str) -> str:
    """`value` fit for a terminal cell: control characters escaped, at most `text.CELL`."""
    return text.cut(value, text.CELL, escape=True)


def table(rows: list[Row], color: bool) -> str:
    """Aligned columns; a disagreement row starts with "!" (and is red on a terminal)."""
    cells = [HEADERS]
    for r in rows:
        ago = r.renewed_seconds_ago
        renewed = ("-" if ago is None else f"in {-ago:.0f}s (holder's clock ahead)"
                   if ago < -SKEW_TOLERANCE else f"{max(ago, 0):.0f}s ago")
        holder = printable(r.holder) or f"<{r.lease_state}>"
        if r.holder and r.lease_state in (ElectionState.EXPIRED, ElectionState.LATE):
            holder += f" ({r.lease_state})"
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


async def run(options: StatusOptions, out: TextIO = sys.stdout,
              err: TextIO = sys.stderr) -> int:
    """Print once; with `watch`, print again whenever a row changes, until interrupted."""
    api = await api_client(options.kubeconfig)
    kube = ApiKube(toolkit.KubeApi(api))
    color = out.isatty() and options.output == "table"
    last: list[tuple[Any, ...]] | None = None
    try:
        for namespace in options.namespaces:
            if await kube.namespace_exists(namespace) is False:
                err.write(f"leadership status: namespace {namespace} does not exist\n")
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
