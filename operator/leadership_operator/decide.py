"""Who is `leader`, `stale` and `follower` in one election: a pure function of its Lease as
observed, its member pods, and the time.

`decide` never reads a clock or the API: the caller passes the Lease's `Observation` (from
the library's `ExpiryTracker`, the same expiry rule the candidates use), the member pods, the
monotonic `now`, and when a fresh read last agreed with the watch (`confirmed_at`). So every
rule below is unit-tested exactly, and the wiring around it stays thin.

The rules:

- No Lease (never created, or deleted): nobody leads; every member is a follower. A deleted
  Lease takes the leader label away at once, even though candidates wait the holder out.
- A free Lease (empty ``holderIdentity``, a release): every member is a follower, at once.
- A held Lease: the holder is the member pod whose name equals ``holderIdentity``, or whose
  name followed by ``_`` starts it (client-go's ``<hostname>_<uuid>``).
  - Renewed less than its renew deadline ago (`renew_deadline`): that pod is `leader`.
  - Late (its renew deadline passed without a renewal, its ``leaseDurationSeconds`` not
    yet): that pod is `stale`, state `late`. The holder itself stopped believing it leads at
    that deadline, and no successor may lead before the expiry: draining its routes now
    gives them the rest of the duration to follow. A renewal makes it `leader` again.
  - Expired (``leaseDurationSeconds`` observed without a renewal): that pod is `stale`, and
    deleted if it opted in.
  - Each of those two steps is taken only once a fresh read *made at or after its instant*
    agrees with the watch; until then the pod keeps its role and the verdict asks for the
    read (`Verdict.needs_confirmation`): a silent watch is no evidence, and a read made at
    the drain says nothing of a renewal before the expiry.
  - No member matches, or two do: nobody is labelled leader, and a problem is reported.
- Every other member is a `follower`.
- A duration beyond `max_duration` is judged as `max_duration` (and reported): a holder that
  stopped renewing is `stale` after that long, whatever its Lease claims.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from leadership.toolkit import RENEW_DEADLINE_RATIO, Observation

from .contract import Role
from .pods import Member

#: A Lease duration above this (seconds) is reported and judged as this long.
MAX_DURATION = 600


class ElectionState(enum.StrEnum):
    """The state of one election, as the operator, `leadership status` and the metrics name it."""

    #: the Lease names a live holder that matches one member.
    LEADING = "leading"
    #: the holder has not renewed for its renew deadline: it is drained, not yet expired.
    LATE = "late"
    #: the holder stopped renewing: its claim ran out (confirmed by a fresh read).
    EXPIRED = "expired"
    #: the Lease is held by nobody (a release).
    FREE = "free"
    #: there is no Lease (never created, or deleted).
    MISSING = "missing"
    #: the holder matches no member, or several.
    UNMATCHED = "unmatched"


@dataclass(frozen=True)
class Problem:
    """Bad input found while deciding: reported as a Warning Event and a log line."""

    reason: str
    message: str
    #: a member pod the problem is about, besides the Lease.
    pod: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The roles one election's members should have, and why."""

    roles: dict[str, Role]
    state: ElectionState
    holder: str = ""
    holder_pod: str | None = None
    problems: list[Problem] = field(default_factory=list)
    #: the holder's drain or expiry is due but no fresh read made since has confirmed it.
    needs_confirmation: bool = False
    #: monotonic times of the holder's drain (renew deadline) and expiry, if it has a claim.
    drains_at: float | None = None
    expires_at: float | None = None
    #: monotonic time at which this verdict next changes by itself, if ever.
    wakes_at: float | None = None
    #: members to delete (opted in, and their Lease expired under them).
    delete: list[str] = field(default_factory=list)

    @property
    def leader(self) -> str | None:
        return next((n for n, r in self.roles.items() if r is Role.LEADER), None)


def pod_of_holder(holder: str, names: Iterable[str]) -> list[str]:
    """The member names that `holder` designates: equal, or `name_` followed by a suffix."""
    if not holder:
        return []
    return sorted(n for n in names if holder == n or holder.startswith(n + "_"))


def renew_deadline(member: Member, duration: int) -> tuple[float, Problem | None]:
    """Seconds after its last renewal at which holder `member` is drained, and a problem.

    `RENEW_DEADLINE_RATIO` of `duration` unless the member declares a longer deadline (its
    ``renew-deadline-seconds`` annotation, at most `duration`). A shorter one is raised to
    the ratio: draining later than the holder's step-down is still before any successor.
    One that is not a number of seconds in (0, duration] is a problem, and the holder is
    drained at its expiry (never earlier than it may step down)."""
    default = duration * RENEW_DEADLINE_RATIO
    if member.renew_deadline is None:
        return default, None
    try:
        declared = float(member.renew_deadline)
    except ValueError:
        declared = math.nan
    if not 0 < declared <= duration:  # NaN fails too
        return float(duration), Problem(
            "BadRenewDeadline", f"renew-deadline-seconds annotation "
            f"{member.renew_deadline!r} is not a number of seconds in (0, {duration}]; "
            f"{member.name} leaves its routes at its Lease's expiry", pod=member.name)
    return max(declared, default), None


def decide(lease: Observation | None, members: Iterable[Member], now: float, *,
           confirmed_at: float | None = None, max_duration: int = MAX_DURATION) -> Verdict:
    members = list(members)
    names = [m.name for m in members]
    followers = {n: Role.FOLLOWER for n in names}
    if lease is None or lease.lease is None:
        return Verdict(followers, ElectionState.MISSING)
    problems = [Problem("MalformedLease", problem) for problem in lease.parsed.problems]
    record = lease.record
    if record.is_free:
        return Verdict(followers, ElectionState.FREE, problems=problems)
    holder = record.holder_identity
    duration = lease.duration
    if duration > max_duration:
        problems.append(Problem(
            "LeaseDurationTooLong", f"leaseDurationSeconds {duration} is longer than "
            f"{max_duration}s; its holder is judged stale {max_duration}s after its last "
            "renewal"))
        duration = max_duration
    matches = pod_of_holder(holder, names)
    if not matches:
        problems.append(Problem("HolderNotFound", f"holder {holder!r} matches no member pod "
                                "of this election"))
        return Verdict(followers, ElectionState.UNMATCHED, holder, problems=problems)
    if len(matches) > 1:
        problems.append(Problem("AmbiguousHolder", f"holder {holder!r} matches several member "
                                f"pods: {', '.join(matches)}; none is labelled leader"))
        return Verdict(followers, ElectionState.UNMATCHED, holder, problems=problems)
    pod = matches[0]
    member = next(m for m in members if m.name == pod)
    deadline, problem = renew_deadline(member, duration)
    if problem is not None:
        problems.append(problem)
    drains_at, expires_at = lease.observed_at + deadline, lease.observed_at + duration

    def verdict(role: Role, state: ElectionState, *, wakes_at: float | None = None,
                needs_confirmation: bool = False, delete: bool = False) -> Verdict:
        return Verdict({**followers, pod: role}, state, holder, pod, problems,
                       needs_confirmation, drains_at, expires_at, wakes_at,
                       [pod] if delete else [])

    def confirmed(instant: float) -> bool:
        return confirmed_at is not None and confirmed_at >= instant

    if now < drains_at:
        return verdict(Role.LEADER, ElectionState.LEADING, wakes_at=drains_at)
    if now >= expires_at and confirmed(expires_at):
        return verdict(Role.STALE, ElectionState.EXPIRED, delete=member.delete_on_expiry)
    if confirmed(drains_at):
        return verdict(Role.STALE, ElectionState.LATE, wakes_at=expires_at,
                       needs_confirmation=now >= expires_at)
    # Due, but no fresh read has agreed yet: keep the label until one does.
    return verdict(Role.LEADER, ElectionState.LEADING, needs_confirmation=True)
