"""What the operator says of its elections: log lines, Events and metrics, each thing once.

The reconciler decides and writes labels; then it hands each verdict here (`Reporter`): the
problems of a Lease (logged once, posted once by the active replica), transitions (a new
holder, a drain, an expiry: counted, and posted), members of a Lease that does not exist
(told after a grace), role labels another field manager wrote, bad election labels. What
was said of an election is one record (`Said`), dropped with the election (`forget`). A
standby logs and counts; only the active replica posts Events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from leadership import Clock

from . import text
from .contract import Labels
from .decide import ElectionState, Verdict
from .events import Events
from .metrics import OperatorMetrics
from .pods import Key, Member

log = logging.getLogger("leadership.operator")
#: seconds an election's Lease may be missing before its members are told (a typo in the
#: election label, or a Lease not created yet; a candidate creating it takes less).
LEASE_NOT_FOUND_GRACE = 30.0


@dataclass
class Said:
    """What was said of one election (or of the strays), so that each thing is said once:
    one record per election, dropped with it."""

    #: problems logged, and posted as Events (by the active replica).
    logged: set[tuple[str, str]] = field(default_factory=set)
    posted: set[tuple[str, str]] = field(default_factory=set)
    #: (state, holder) reported last: transitions are counted and posted once.
    last: tuple[ElectionState, str] | None = None
    #: when its Lease was first found missing; the member uids told; whether it was logged.
    missing_since: float | None = None
    missing_told: set[str] = field(default_factory=set)
    missing_logged: bool = False

    def lease_found(self) -> None:
        self.missing_since, self.missing_told, self.missing_logged = None, set(), False


def lease_ref(key: Key, uid: str = "") -> dict[str, str]:
    """The Lease of election `key` as an Event's involvedObject."""
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "namespace": key[0],
            "name": key[1], "uid": uid}


#: the record of the strays' problems (bad election labels), beside the elections'.
STRAYS_RECORD = "strays"


class Reporter:
    """Says what the verdicts and the pods show; see the module's doc."""

    def __init__(self, events: Events, labels: Labels, clock: Clock,
                 metrics: OperatorMetrics, is_active: Callable[[], bool],
                 field_manager: str) -> None:
        self.events, self.labels, self.clock, self.metrics = events, labels, clock, metrics
        self.is_active, self.field_manager = is_active, field_manager
        self._said: dict[Hashable, Said] = {}

    def _record(self, item: Hashable) -> Said:
        said = self._said.get(item)
        if said is None:
            said = self._said[item] = Said()
        return said

    def forget(self, key: Key) -> None:
        """`key` is no election any more: what was said of it goes, and its state's count."""
        said = self._said.pop(key, None)
        if said is not None and said.last is not None:
            self.metrics.elections.labels(said.last[0].value).dec()

    async def election(self, key: Key, verdict: Verdict, members: list[Member],
                       lease_uid: str) -> float | None:
        """Say what is new in `key`'s verdict; answer when to look again (a grace ends)."""
        again = await self._lease_not_found(key, verdict, members)
        said = self._record(key)
        problems = {(p.reason, p.message) for p in verdict.problems}
        for reason, message in sorted(problems - said.logged):
            log.warning("lease %s/%s: %s: %s", key[0], key[1], reason,
                        text.cut(message, text.EVENT))
        said.logged = problems
        if self.is_active():  # a standby logs; the active replica also posts, once
            for reason, message in sorted(problems - said.posted):
                await self.events.post(lease_ref(key, lease_uid), "Warning", reason, message)
            said.posted = problems
        now = (verdict.state, verdict.holder)
        before = said.last
        if before == now:
            return again
        said.last = now
        if before is None or before[0] != verdict.state:
            if before is not None:
                self.metrics.elections.labels(before[0].value).dec()
            self.metrics.elections.labels(verdict.state.value).inc()
        self.metrics.transitions.labels(verdict.state.value).inc()
        if self.is_active():
            await self._transition(key, verdict, before, members, lease_uid)
        return again

    async def _transition(self, key: Key, verdict: Verdict,
                          before: tuple[ElectionState, str] | None, members: list[Member],
                          lease_uid: str) -> None:
        if not verdict.holder_pod:
            return
        pod = next((m for m in members if m.name == verdict.holder_pod), None)
        refs = [lease_ref(key, lease_uid), *([pod.ref] if pod is not None else [])]
        if verdict.state is ElectionState.LEADING:
            if before == (ElectionState.LATE, verdict.holder):
                await self.events.post(refs[0], "Normal", "RenewedAgain",
                                       f"{verdict.holder_pod} renewed after its renew "
                                       f"deadline: it leads again, and is back in its routes")
            else:
                await self.events.post(refs[0], "Normal", "LeaderElected",
                                       f"{verdict.holder_pod} leads (holder {verdict.holder})")
            return
        if verdict.state is ElectionState.LATE:
            self.metrics.drains.inc()
            reason = "RenewalLate"
            message = (f"{verdict.holder} has not renewed for its renew deadline: "
                       f"{verdict.holder_pod} is stale and out of its routes; its Lease "
                       "expires at the end of its duration unless it renews")
        elif verdict.state is ElectionState.EXPIRED:
            self.metrics.expiries.inc()
            reason = "LeaseExpired"
            message = (f"the lease held by {verdict.holder} expired: no renewal seen for its "
                       f"duration; {verdict.holder_pod} is stale")
        else:
            return
        log.warning("lease %s/%s: %s", key[0], key[1], message)
        for ref in refs:
            await self.events.post(ref, "Warning", reason, message)

    async def _lease_not_found(self, key: Key, verdict: Verdict,
                               members: list[Member]) -> float | None:
        """Members of an election whose Lease does not exist, after a grace: a Warning
        ``LeaseNotFound`` on each (once), and a log line. Answers when the grace ends."""
        said = self._record(key)
        if verdict.state is not ElectionState.MISSING:
            said.lease_found()
            return None
        now = self.clock.now()
        if said.missing_since is None:
            said.missing_since = now
        due = said.missing_since + LEASE_NOT_FOUND_GRACE
        if now < due:
            return due
        told = said.missing_told
        untold = [m for m in members if m.uid not in told]
        if not untold:
            return None
        message = (f"no Lease {key[0]}/{key[1]} exists, {LEASE_NOT_FOUND_GRACE:.0f}s after "
                   f"its members joined: check the {self.labels.election} label for a typo, "
                   "or create the Lease (the pods are followers meanwhile)")
        if not said.missing_logged:
            said.missing_logged = True
            log.warning("election %s/%s: %s (%s)", *key, message,
                        text.cut(", ".join(m.name for m in untold), text.EVENT))
        if self.is_active():
            for member in untold:
                await self.events.post(member.ref, "Warning", "LeaseNotFound", message)
                told.add(member.uid)
        return None

    async def foreign_write(self, member: Member, writer: str) -> None:
        """A role label another field manager wrote: another operator, or a hand edit. Said
        in the log and in a Warning Event on the pod, counted (the reconciler puts the label
        right)."""
        self.metrics.foreign_role_writes.inc()
        message = text.cut(
            f"role label {self.labels.role}={member.role} was written by {writer!r}, not "
            f"by this operator ({self.field_manager}): another operator labelling these "
            "pods, or a hand edit; the operator puts it right", text.EVENT)
        log.warning("pod %s/%s: %s", member.namespace, member.name, message)
        if self.is_active():
            await self.events.post(member.ref, "Warning", "ForeignRoleWrite", message)

    async def bad_election_labels(self, strays: list[Member]) -> None:
        """Report each stray's election label that names no possible Lease, once a pod; only
        the pods still strays are remembered (the record stays as small as the strays)."""
        said = self._record(STRAYS_RECORD)
        current = {("BadElectionLabel", p.uid) for p in strays}
        said.logged &= current
        said.posted &= current
        for pod in strays:
            if pod.raw_election is None:
                continue
            problem = ("BadElectionLabel", pod.uid)
            reason = (f"election label {pod.raw_election!r} is not a valid Lease name; "
                      "the pod is in no election")
            if problem not in said.logged:
                said.logged.add(problem)
                log.warning("pod %s/%s: %s", pod.namespace, pod.name, reason)
            if problem not in said.posted and self.is_active():
                said.posted.add(problem)
                await self.events.post(pod.ref, "Warning", "BadElectionLabel", reason)
