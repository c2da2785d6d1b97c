"""The rules a chaos run must satisfy, as pure functions of what was recorded.

Inputs, every time on the machine's shared monotonic clock:

- `Term`: one candidate's belief that it leads, from its own events. It starts no later than
  the winning write was sent and ends at the first of: the candidate saying it follows, and
  the end of its belief (`leading_until`, the last renewal's send time + renew deadline),
  which no freeze or crash can extend. Terms of processes that report only "started" and
  "stopped" (the client-go peer, the sidecar as polled) use those times.
- label changes of the member pods, from a watch (`controlplane.recorder.ClusterRecorder`).

Violations (each with its times):

1. two candidates' terms overlap by more than `allowance` seconds;
2. a fencing token that does not grow when the holder changes (or ever shrinks);
3. two pods labelled ``leader`` at once;
4. a pod labelled ``leader`` more than `label_grace` seconds after its Lease ran out (the
   last change of the Lease naming it, as a watch saw it, + the Lease duration);
5. no leader for longer than ``ttl + 1`` seconds after the faults stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    candidate: str
    pod: str
    start: float
    end: float
    token: int | None = None
    #: the latest its Lease can run out (its last renewal + the Lease duration); the end of
    #: the term when unknown.
    lease_end: float | None = None

    @property
    def lease_until(self) -> float:
        return self.end if self.lease_end is None else max(self.end, self.lease_end)


@dataclass(frozen=True)
class Violation:
    rule: str
    at: float
    detail: str
    #: the candidates (or pods) it involves.
    who: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"[{self.at:10.3f}] {self.rule}: {self.detail}"


def overlaps(terms: Iterable[Term], allowance: float) -> list[Violation]:
    """Rule 1: no two candidates believe they lead at once (beyond `allowance`)."""
    ordered = sorted(terms, key=lambda t: t.start)
    found = []
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.start >= a.end:
                break
            if b.candidate != a.candidate and min(a.end, b.end) - b.start > allowance:
                found.append(Violation(
                    "overlap", b.start, f"{a.candidate} [{a.start:.3f}, {a.end:.3f}] and "
                    f"{b.candidate} [{b.start:.3f}, {b.end:.3f}] "
                    f"({1000 * (min(a.end, b.end) - b.start):.0f} ms)",
                    (a.candidate, b.candidate)))
    return found


def fencing(terms: Iterable[Term]) -> list[Violation]:
    """Rule 2: tokens never shrink, and grow whenever the holder changes."""
    found = []
    previous: Term | None = None
    for term in sorted((t for t in terms if t.token is not None), key=lambda t: t.start):
        assert term.token is not None
        if previous is not None and previous.token is not None:
            if term.token < previous.token or (
                    term.candidate != previous.candidate and term.token == previous.token):
                found.append(Violation("fencing", term.start,
                                       f"{term.candidate} leads with token {term.token} after "
                                       f"{previous.candidate}'s {previous.token}",
                                       (previous.candidate, term.candidate)))
        previous = term
    return found


def two_leader_labels(changes: Iterable[tuple[float, str, str | None]]) -> list[Violation]:
    """Rule 3: at no point of the watched sequence are two pods labelled leader."""
    state: dict[str, str | None] = {}
    found = []
    for at, pod, role in changes:
        state[pod] = role
        leaders = sorted(p for p, r in state.items() if r == "leader")
        if len(leaders) > 1:
            found.append(Violation("two-leader-labels", at, ", ".join(leaders),
                                   tuple(leaders)))
    return found


def label_periods(changes: Iterable[tuple[float, str, str | None]],
                  end: float) -> list[tuple[str, float, float]]:
    """(pod, from, to) for every period a pod was labelled leader."""
    periods, since = [], {}
    for at, pod, role in changes:
        if role == "leader" and pod not in since:
            since[pod] = at
        elif role != "leader" and pod in since:
            periods.append((pod, since.pop(pod), at))
    periods += [(pod, start, end) for pod, start in since.items()]
    return periods


def stale_leader_labels(changes: list[tuple[float, str, str | None]], terms: list[Term],
                        label_grace: float, end: float,
                        excused: Sequence[tuple[float, float]] = ()) -> list[Violation]:
    """Rule 4: while a pod is labelled leader, its Lease must be alive: every moment of the
    label lies within `label_grace` of some term of that pod (`Term.start` to
    `Term.lease_until`). Each gap is a violation, or, when its deadline falls in an
    `excused` window (the operator itself, or the API server, under a fault), a
    "late-label-excused" finding."""
    found = []
    for pod, start, stop in label_periods(changes, end):
        covered = start
        gaps: list[tuple[float, float]] = []
        for term in sorted((t for t in terms if t.pod == pod), key=lambda t: t.start):
            if term.start >= stop:
                break
            if term.start > covered + label_grace:
                gaps.append((covered, term.start))
            covered = max(covered, term.lease_until)
        if stop > covered + label_grace:
            gaps.append((covered, stop))
        for since, until in gaps:
            deadline = since + label_grace
            rule = ("late-label-excused" if any(a <= deadline <= b for a, b in excused)
                    else "stale-leader-label")
            found.append(Violation(rule, deadline,
                                   f"{pod} labelled leader at {until:.3f}, its Lease ran "
                                   f"out by {since:.3f} ({until - since:.2f}s)", (pod,)))
    return found


def leaderless(terms: Iterable[Term], faults_end: float, end: float,
               limit: float) -> list[Violation]:
    """Rule 5: after the faults stop, no gap without a leader longer than `limit`."""
    covered = faults_end
    gaps = []
    for term in sorted(terms, key=lambda t: t.start):
        if term.end <= covered:
            continue
        if term.start - covered > limit:
            gaps.append(Violation("no-leader", covered, f"{term.start - covered:.2f}s without "
                                  "a leader after the faults stopped"))
        covered = max(covered, term.end)
    if end - covered > limit:
        gaps.append(Violation("no-leader", covered, f"{end - covered:.2f}s without a leader "
                              "at the end"))
    return gaps
