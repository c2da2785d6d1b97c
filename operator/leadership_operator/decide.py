"""Who is `leader`, `stale` and `follower` in one election: a pure function of its Lease as
observed, its member pods, and the time.

`decide` never reads a clock or the API: the caller passes the Lease's `Observation` (from
the library's `ExpiryTracker`, the same expiry rule the candidates use), the member pods, the
monotonic `now`, and whether an expiry has been confirmed by a fresh read. So every rule below
is unit-tested exactly, and the kopf wiring around it stays thin.

The rules:

- No Lease (never created, or deleted): nobody leads; every member is a follower. A deleted
  Lease takes the leader label away at once, even though candidates wait the holder out.
- A free Lease (empty ``holderIdentity``, a release): every member is a follower, at once.
- A held Lease: the holder is the member pod whose name equals ``holderIdentity``, or whose
  name followed by ``_`` starts it (client-go's ``<hostname>_<uuid>``).
  - Live: that pod is `leader`.
  - Expired (``leaseDurationSeconds`` observed without a renewal) and confirmed by a fresh
    read: that pod is `stale`. An expiry not yet confirmed keeps the label and asks for the
    read (`Verdict.needs_confirmation`): a silent watch is no evidence.
  - No member matches, or two do: nobody is labelled leader, and a problem is reported.
- Every other member is a `follower`.
- A duration beyond `max_duration` is judged as `max_duration` (and reported): a holder that
  stopped renewing is `stale` after that long, whatever its Lease claims.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from leadership.toolkit import Observation

from .contract import Role
from .pods import Member

#: A Lease duration above this (seconds) is reported and judged as this long.
MAX_DURATION = 600


class ElectionState(enum.StrEnum):
    """The state of one election, as the operator, `leadership status` and the metrics name it."""

    #: the Lease names a live holder that matches one member.
    LEADING = "leading"
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
    #: the holder's claim ran out but no fresh read has confirmed it yet.
    needs_confirmation: bool = False
    #: monotonic time at which this verdict next changes by itself (the expiry), if ever.
    expires_at: float | None = None
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


def decide(lease: Observation | None, members: Iterable[Member], now: float, *,
           expiry_confirmed: bool = False, max_duration: int = MAX_DURATION) -> Verdict:
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
    expires_at = lease.observed_at + duration
    roles = dict(followers)
    if now < expires_at:
        roles[pod] = Role.LEADER
        return Verdict(roles, ElectionState.LEADING, holder, pod, problems, expires_at=expires_at)
    if not expiry_confirmed:
        roles[pod] = Role.LEADER  # until a fresh read agrees
        return Verdict(roles, ElectionState.LEADING, holder, pod, problems,
                       needs_confirmation=True, expires_at=expires_at)
    roles[pod] = Role.STALE
    member = next(m for m in members if m.name == pod)
    return Verdict(roles, ElectionState.EXPIRED, holder, pod, problems,
                   delete=[pod] if member.delete_on_expiry else [])
