"""Turn verdicts into label writes, Events and deletions, in a safe order.

The reconciler asks the Lease cache and the members, decides (`decide`), and writes:

- The old leader's label goes before the new one is given, each write awaited: at no instant
  does the API server see two `leader` labels in one election. If a write fails, the ones
  after it are not made, and the election is tried again a second later.
- Right before every write it asks `is_active()` (this replica holds the operator's own
  Lease); a standby, or a replica that just lost it, writes nothing.
- An expiry is acted upon only after the Lease cache's fresh read agrees with its watch
  (`LeaseCache.confirm_expiry`).
- Events are posted on transitions (a new holder, an expiry) and once per new problem,
  after the labels (a flip is what a Service waits for); repeats are aggregated (`Events`).

Its work comes from one queue (`workqueue.WorkQueue`): elections marked by the Lease cache
and the pod events, woken at their next expiry, and three chores (strays, departed pods,
foreign role writes) as items like them; one item is never worked on twice at once, and
failed work comes back after one jittered back-off. What was said of an election is one
record (`Said`), dropped with it. Every wait is on the injected clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import leadership
from leadership import Clock

from . import text
from .contract import Labels, Role
from .decide import MAX_DURATION, ElectionState, Problem, Verdict, decide
from .events import Events
from .kube import Kube
from .leases import LeaseCache
from .metrics import OperatorMetrics
from .pods import Key, Member, Members
from .workqueue import WorkQueue

log = logging.getLogger("leadership.operator")
#: elections reconciled at once (each one's writes stay in order).
CONCURRENCY = 32
#: seconds an election's Lease may be missing before its members are told (a typo in the
#: election label, or a Lease not created yet; a candidate creating it takes less).
LEASE_NOT_FOUND_GRACE = 30.0


@dataclass(frozen=True)
class Chore:
    """Work on the pods that is not one election's: an item of the queue like an election."""

    name: str


#: Strays (pods in no election): report a bad election label, take the role label off.
STRAYS = Chore("strays")
#: Pods with a role label that left the pod watch: look them up (a stray, or gone).
DEPARTED = Chore("departed pods")
#: Role labels another field manager wrote: report them.
FOREIGN_WRITES = Chore("foreign role writes")
CHORES = (DEPARTED, STRAYS, FOREIGN_WRITES)
#: What the work queue holds: an election, or a chore.
Item = Key | Chore


def _order(item: Item) -> tuple[int, tuple[str, str]]:
    """The chores first (a departed pod may turn out a stray; a stray's label must go before
    its former election is looked at), then the elections by namespace and name."""
    return (CHORES.index(item), ("", "")) if isinstance(item, Chore) else (len(CHORES), item)


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


def _lease_ref(key: Key, uid: str = "") -> dict[str, str]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "namespace": key[0],
            "name": key[1], "uid": uid}


class Reconciler:
    def __init__(self, leases: LeaseCache, members: Members, kube: Kube, events: Events,
                 labels: Labels, clock: Clock, metrics: OperatorMetrics,
                 is_active: Callable[[], bool], *, max_duration: int = MAX_DURATION,
                 rng: random.Random | None = None) -> None:
        self.leases, self.members, self.kube, self.events = leases, members, kube, events
        self.labels, self.clock, self.metrics = labels, clock, metrics
        self.is_active, self.max_duration = is_active, max_duration
        self.queue: WorkQueue[Item] = WorkQueue(clock, order=_order, rng=rng)
        # Items are worked on concurrently (bounded); one election's writes stay in order,
        # because the queue never hands out an item that is in flight.
        self._gate = asyncio.Semaphore(CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()
        self._said: dict[Item, Said] = {}
        #: why the operator cannot write (RBAC refused it), until a write succeeds again.
        self.denied: str | None = None
        self._denied_key: Item | None = None  # the item whose write RBAC refused

    # --- what wakes it ---------------------------------------------------------------------

    def mark(self, key: Key) -> None:
        """`key`'s Lease or members changed: look at it again."""
        self.queue.add(key)

    def pods_changed(self, touched: Iterable[Key]) -> None:
        """After a pod event: the elections it touched, and the chores it may have made."""
        for key in touched:
            self.queue.add(key)
        if self.members.departed:
            self.queue.add(DEPARTED)
        if self.members.foreign_writes:
            self.queue.add(FOREIGN_WRITES)
        if self.members.has_strays():
            self.queue.add(STRAYS)

    def mark_all(self) -> None:
        """Everything needs a look (a resync, or this replica just became active)."""
        for key in {*self.leases.keys(), *self.members.elections()}:
            self.queue.add(key)
        for chore in CHORES:
            self.queue.add(chore)

    # --- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Work on what the queue hands out until cancelled. Starts only once the Lease
        cache has listed every scope: deciding before that would label members of Leases
        not yet seen as followers, a flap on every restart."""
        await self.leases.wait_synced()
        for chore in CHORES:  # what the pods listed before the start may need
            self.queue.add(chore)
        while True:
            for item in self.queue.take():
                task = asyncio.create_task(self._work(item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await self.queue.wait()

    async def idle(self) -> None:
        """Until nothing is being worked on (for tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _work(self, item: Item) -> None:
        try:
            async with self._gate:
                if isinstance(item, Chore):
                    finished = await self._chore(item)
                else:
                    await self.reconcile(item)
                    finished = True
            if finished:
                self.queue.succeeded(item)
            if self._denied_key == item:
                self._writes_work_again()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = self.queue.failed(item)
            what = item.name if isinstance(item, Chore) else f"{item[0]}/{item[1]}"
            if isinstance(exc, leadership.PermissionDeniedError) and (
                    exc.verb, exc.resource) == ("patch", "pods"):
                await self._denied(item, what, exc, delay)
            elif isinstance(exc, (TimeoutError, OSError, leadership.StoreError)):
                # The API server is slow, unreachable or refusing: expected in operation,
                # and retried; a warning with the reason, not a traceback.
                log.warning("reconciling %s failed: %s; retrying in %.1fs", what,
                            text.error(exc), delay)
            else:
                log.exception("reconciling %s failed; retrying in %.1fs", what, delay)
        finally:
            self.queue.done(item)

    async def _chore(self, chore: Chore) -> bool:
        """Do one chore; False when part of it failed (it is then retried with back-off)."""
        if chore == DEPARTED:
            return await self._departed()
        if chore == STRAYS:
            return await self._strays()
        await self._foreign_writes()
        return True

    def verdict(self, key: Key) -> Verdict:
        verdict = decide(self.leases.observation(key), self.members.of(key),
                         self.clock.now(), expiry_confirmed=self.leases.expiry_confirmed(key),
                         max_duration=self.max_duration)
        malformed = self.leases.malformed(key)
        if malformed is not None:
            verdict = dataclasses.replace(verdict, problems=[
                *verdict.problems, Problem("MalformedLease", malformed)])
        return verdict

    async def reconcile(self, key: Key) -> None:
        """Decide one election and write what the verdict needs."""
        if not self.members.of(key):
            self._forget(key)  # a Lease no pod is a member of is no election of ours
            return
        if not self.leases.known(key):
            await self.leases.track(key)  # a pod has just joined this election
        verdict = self.verdict(key)
        if verdict.needs_confirmation:
            await self.leases.confirm_expiry(key)
            verdict = self.verdict(key)
        if verdict.expires_at is not None and verdict.expires_at > self.clock.now():
            self.queue.add_at(key, verdict.expires_at)
        # Labels first: a flip is what the Service waits for, and each Event is one more API
        # write; the Events then also describe labels that are already there.
        try:
            if self.is_active():
                await self._apply(key, verdict)
        finally:
            await self._report(key, verdict)

    def _forget(self, key: Key) -> None:
        """`key` is no election of ours any more: drop what is kept of it."""
        self.leases.forget(key)
        self.queue.forget(key)
        said = self._said.pop(key, None)
        if said is not None and said.last is not None:
            self.metrics.elections.labels(said.last[0].value).dec()

    def _record(self, item: Item) -> Said:
        said = self._said.get(item)
        if said is None:
            said = self._said[item] = Said()
        return said

    # --- writing ---------------------------------------------------------------------------

    async def _denied(self, item: Item, what: str, exc: leadership.PermissionDeniedError,
                      delay: float) -> None:
        """RBAC refused a write: no retry fixes that soon. Back off; say once what is
        missing (a log line, a Warning Event on the election's Lease), count it, and let
        /healthz fail until a write succeeds."""
        verb, resource = exc.verb or "?", exc.resource or "?"
        self.metrics.permission_denied.labels(verb, resource).inc()
        first = self.denied is None
        self._denied_key = item
        self.denied = (f"forbidden: RBAC does not grant {verb} on {resource} "
                       f"({text.error(exc)})")
        if not first:
            log.debug("reconciling %s: still %s; retrying in %.1fs", what, self.denied, delay)
            return
        log.error("reconciling %s: %s; the operator cannot label pods until it is "
                  "granted (manifests/operator); retrying with back-off, /readyz fails",
                  what, self.denied)
        if not isinstance(item, Chore):
            await self.events.post(_lease_ref(item), "Warning", "PermissionDenied",
                                   f"the operator may not {verb} {resource}: it cannot "
                                   f"label this election's pods ({text.error(exc)})")

    async def _write(self, member: Member, role: Role | None, why: str) -> bool:
        if not self.is_active():
            return False
        value = role.value if role else None
        version = await self.kube.label_pod(member.namespace, member.name, self.labels.role,
                                            value)
        if self.denied is not None:
            self._writes_work_again()
        log.info("pod %s/%s: role %s -> %s (%s)", member.namespace, member.name,
                 member.role or "(none)", value or "(none)", why)
        self.members.wrote_role(member, value, version)
        self.metrics.label_writes.inc()
        return True

    async def _apply(self, key: Key, verdict: Verdict) -> None:
        members = {m.name: m for m in self.members.of(key)}
        wrong = [(members[n], r) for n, r in verdict.roles.items()
                 if n in members and members[n].role != r.value]
        # Take `leader` away first, awaited, then every other change, the new leader last.
        first = [(m, r) for m, r in wrong if m.role == Role.LEADER.value]
        last = [(m, r) for m, r in wrong if r is Role.LEADER]
        middle = [(m, r) for m, r in wrong if (m, r) not in first and (m, r) not in last]
        why = f"lease {key[0]}/{key[1]} {verdict.state.value}" + (
            f", holder {verdict.holder}" if verdict.holder else "")
        for member, role in [*first, *middle, *last]:
            if not await self._write(member, role, why):
                return
            if role is Role.LEADER:
                handed_over = self.leases.take_handover_time(key)
                if handed_over is not None:
                    self.metrics.label_latency.observe(self.clock.now() - handed_over)
        for name in verdict.delete:
            doomed = members.get(name)
            if doomed is not None and self.is_active():
                log.warning("deleting %s/%s: its lease expired under it (opted in)",
                            doomed.namespace, doomed.name)
                await self.events.post(doomed.ref, "Warning", "DeletingStalePod",
                                       f"{name} held {key[1]} when it expired; deleting "
                                       f"it as its {self.labels.on_expiry} annotation asks")
                try:
                    await self.kube.delete_pod(doomed.namespace, doomed.name, doomed.uid,
                                               doomed.resource_version)
                except leadership.PermissionDeniedError as exc:
                    # Opting in takes only an annotation; deleting takes the delete-pods
                    # overlay. Said, not retried: the label already says stale.
                    message = (f"{name} opted into deletion at expiry, but the operator may "
                               f"not delete pods (manifests/operator/overlays/delete-pods): "
                               f"{text.error(exc)}")
                    log.warning("pod %s/%s: %s", doomed.namespace, doomed.name, message)
                    await self.events.post(doomed.ref, "Warning", "CannotDeletePod", message)
                except (leadership.NotFoundError, leadership.ConflictError):
                    pass  # gone already, or replaced since: never delete the replacement

    # --- reporting -------------------------------------------------------------------------

    def _writes_work_again(self) -> None:
        log.info("writing labels works again: %s is over", self.denied)
        self.denied = self._denied_key = None

    async def _lease_not_found(self, key: Key, verdict: Verdict) -> None:
        """Members of an election whose Lease does not exist, after a grace: a Warning
        ``LeaseNotFound`` on each (once), and a log line."""
        said = self._record(key)
        if verdict.state is not ElectionState.MISSING:
            said.lease_found()
            return
        now = self.clock.now()
        if said.missing_since is None:
            said.missing_since = now
        due = said.missing_since + LEASE_NOT_FOUND_GRACE
        if now < due:
            self.queue.add_at(key, due)
            return
        told = said.missing_told
        members = [m for m in self.members.of(key) if m.uid not in told]
        if not members:
            return
        message = (f"no Lease {key[0]}/{key[1]} exists, {LEASE_NOT_FOUND_GRACE:.0f}s after "
                   f"its members joined: check the {self.labels.election} label for a typo, "
                   "or create the Lease (the pods are followers meanwhile)")
        if not said.missing_logged:
            said.missing_logged = True
            log.warning("election %s/%s: %s (%s)", *key, message,
                        text.cut(", ".join(m.name for m in members), text.EVENT))
        if self.is_active():
            for member in members:
                await self.events.post(member.ref, "Warning", "LeaseNotFound", message)
                told.add(member.uid)

    async def _departed(self) -> bool:
        """Pods with a role label that left the pod watch: a pod still there (relabelled out
        of its election, not deleted) is taken in again, as a stray. False when a look-up
        failed (the rest wait for the retry)."""
        while self.members.departed:
            uid, (namespace, name) = next(iter(self.members.departed.items()))
            try:
                pod = await self.kube.find_pod(namespace, name)
            except (TimeoutError, OSError, leadership.StoreError) as exc:
                log.warning("looking up pod %s/%s, which left its election, failed: %s; "
                            "retrying in %.1fs", namespace, name, text.error(exc),
                            self.queue.failed(DEPARTED))
                return False
            self.members.departed.pop(uid, None)
            meta = (pod or {}).get("metadata") or {}
            # Unless the watch has taken it in again meanwhile (it re-joined): then the
            # watch's state is the newer one.
            if pod is not None and str(meta.get("uid") or "") == uid and (
                    not self.members.follows(uid)):
                meta.setdefault("namespace", namespace)
                self.pods_changed(self.members.pod_event("MODIFIED", pod))
        return True

    async def _foreign_writes(self) -> None:
        """Role labels another field manager wrote: another operator, or a hand edit. Said in
        the log and in a Warning Event on the pod, counted; the pod's election is
        reconciled anyway (and the label put right)."""
        while self.members.foreign_writes:
            member, writer = self.members.foreign_writes.popleft()
            self.metrics.foreign_role_writes.inc()
            message = text.cut(
                f"role label {self.labels.role}={member.role} was written by {writer!r}, not "
                f"by this operator ({self.members.field_manager}): another operator "
                "labelling these pods, or a hand edit; the operator puts it right", text.EVENT)
            log.warning("pod %s/%s: %s", member.namespace, member.name, message)
            if self.is_active():
                await self.events.post(member.ref, "Warning", "ForeignRoleWrite", message)

    async def _report(self, key: Key, verdict: Verdict) -> None:
        await self._lease_not_found(key, verdict)
        said = self._record(key)
        observation = self.leases.observation(key)
        uid = ""
        if observation is not None and observation.lease:
            uid = str((observation.lease.get("metadata") or {}).get("uid") or "")
        problems = {(p.reason, p.message) for p in verdict.problems}
        for reason, message in sorted(problems - said.logged):
            log.warning("lease %s/%s: %s: %s", key[0], key[1], reason,
                        text.cut(message, text.EVENT))
        said.logged = problems
        if self.is_active():  # a standby logs; the active replica also posts, once
            for reason, message in sorted(problems - said.posted):
                await self.events.post(_lease_ref(key, uid), "Warning", reason, message)
            said.posted = problems
        now = (verdict.state, verdict.holder)
        before = said.last
        if before == now:
            return
        said.last = now
        if before is None or before[0] != verdict.state:
            if before is not None:
                self.metrics.elections.labels(before[0].value).dec()
            self.metrics.elections.labels(verdict.state.value).inc()
        self.metrics.transitions.labels(verdict.state.value).inc()
        if not self.is_active():
            return
        if verdict.state is ElectionState.LEADING and verdict.holder_pod:
            await self.events.post(_lease_ref(key, uid), "Normal", "LeaderElected",
                                   f"{verdict.holder_pod} leads (holder {verdict.holder})")
        elif verdict.state is ElectionState.EXPIRED and verdict.holder_pod:
            self.metrics.expiries.inc()
            message = (f"the lease held by {verdict.holder} expired: no renewal seen for its "
                       f"duration; {verdict.holder_pod} is stale")
            log.warning("lease %s/%s: %s", key[0], key[1], message)
            await self.events.post(_lease_ref(key, uid), "Warning", "LeaseExpired", message)
            pod = next((m for m in self.members.of(key) if m.name == verdict.holder_pod),
                       None)
            if pod is not None:
                await self.events.post(pod.ref, "Warning", "LeaseExpired", message)

    async def _strays(self) -> bool:
        """Report bad election labels (once a pod) and take the role label off strays. A
        stray gone meanwhile is forgotten; another failure is retried with back-off, the
        other strays still handled (then False)."""
        strays = self.members.strays()
        said = self._record(STRAYS)
        logged, posted = said.logged, said.posted
        finished = True
        # Only pods still strays are remembered: these sets stay as small as the strays.
        current = {("BadElectionLabel", p.uid) for p in strays}
        logged &= current
        posted &= current
        for pod in strays:
            if pod.raw_election is not None:
                problem = ("BadElectionLabel", pod.uid)
                reason = (f"election label {pod.raw_election!r} is not a valid Lease name; "
                          "the pod is in no election")
                if problem not in logged:
                    logged.add(problem)
                    log.warning("pod %s/%s: %s", pod.namespace, pod.name, reason)
                if problem not in posted and self.is_active():
                    posted.add(problem)
                    await self.events.post(pod.ref, "Warning", "BadElectionLabel", reason)
            if pod.role is not None:
                try:
                    if not await self._write(pod, None, "in no election"):
                        return finished  # a standby: becoming active marks every chore
                except leadership.NotFoundError:
                    self.members.forget(pod)  # deleted meanwhile: nothing left to clean
                except (TimeoutError, OSError, leadership.StoreError) as exc:
                    if finished:  # one retry for the pass, however many strays failed
                        finished = False
                        delay = self.queue.failed(STRAYS)
                    log.warning("removing the role label of stray pod %s/%s failed: %s; "
                                "retrying in %.1fs", pod.namespace, pod.name,
                                text.error(exc), delay)
        return finished
