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

Elections are marked dirty (`mark`) by the cache and the pod events, and woken by the next
expiry of any Lease; every wait is on the injected clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
from collections.abc import Callable

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

log = logging.getLogger("leadership.operator")
#: elections reconciled at once (each one's writes stay in order).
CONCURRENCY = 32
#: seconds before a failed election is tried again.
RETRY = 1.0
#: the longest wait before a failed election is tried again (RBAC refusing, say).
MAX_RETRY = 60.0
#: the key under which strays (pods in no election) are reported.
STRAYS: Key = ("", "")
#: seconds an election's Lease may be missing before its members are told (a typo in the
#: election label, or a Lease not created yet; a candidate creating it takes less).
LEASE_NOT_FOUND_GRACE = 30.0


def _lease_ref(key: Key, uid: str = "") -> dict[str, str]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "namespace": key[0],
            "name": key[1], "uid": uid}


class Reconciler:
    def __init__(self, leases: LeaseCache, members: Members, kube: Kube, events: Events,
                 labels: Labels, clock: Clock, metrics: OperatorMetrics,
                 is_active: Callable[[], bool], *, max_duration: int = MAX_DURATION) -> None:
        self.leases, self.members, self.kube, self.events = leases, members, kube, events
        self.labels, self.clock, self.metrics = labels, clock, metrics
        self.is_active, self.max_duration = is_active, max_duration
        self.wake = asyncio.Event()
        self._dirty: set[Key] = set()
        self._timers: list[tuple[float, Key]] = []  # (when, election): a heap
        self._scheduled: dict[Key, float] = {}  # the earliest wake-up pending per election
        # Elections are reconciled concurrently (bounded); one election's writes stay in
        # order, because an election is never reconciled twice at once.
        self._gate = asyncio.Semaphore(CONCURRENCY)
        self._running: dict[Key, asyncio.Task[None]] = {}
        self._again: set[Key] = set()
        self._reported: dict[Key, set[tuple[str, str]]] = {}  # problems logged
        self._posted: dict[Key, set[tuple[str, str]]] = {}  # problems posted as Events
        self._last: dict[Key, tuple[ElectionState, str]] = {}  # (state, holder) reported
        self._failures: dict[Key, int] = {}  # failed attempts in a row, for the back-off
        self._missing_since: dict[Key, float] = {}  # when the election's Lease was first missed
        self._missing_told: dict[Key, set[str]] = {}  # member uids told of it
        #: why the operator cannot write (RBAC refused it), until a write succeeds again.
        self.denied: str | None = None
        self._departed_retry: float | None = None  # when to look up departed pods again
        self._strays_retry: float | None = None  # when to clean strays again, after a failure
        self._missing_logged: set[Key] = set()  # elections whose missing Lease was logged
        self._denied_key: Key | None = None  # the election whose write RBAC refused

    # --- what wakes it ---------------------------------------------------------------------

    def mark(self, key: Key) -> None:
        """`key`'s Lease or members changed: look at it again."""
        self._dirty.add(key)
        self.wake.set()

    def mark_all(self) -> None:
        """Everything needs a look (a resync, or this replica just became active)."""
        self._dirty.update(self.leases.keys())
        self._dirty.update(self.members.elections())
        self.wake.set()

    # --- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile dirty elections and due expiries until cancelled. Starts only once the
        Lease cache has listed every scope: deciding before that would label members of
        Leases not yet seen as followers, a flap on every restart."""
        await self.leases.wait_synced()
        while True:
            now = self.clock.now()
            while self._timers and self._timers[0][0] <= now:
                at, key = heapq.heappop(self._timers)
                if self._scheduled.get(key) == at:
                    del self._scheduled[key]
                self._dirty.add(key)
            # Cleared before anything is awaited: a wake-up while the strays are handled is
            # a wake-up for the next turn, not lost.
            self.wake.clear()
            dirty, self._dirty = sorted(self._dirty), set()
            for key in dirty:
                if key in self._running:
                    self._again.add(key)  # after the one in flight
                else:
                    self._running[key] = asyncio.create_task(self._one(key))
            await self._departed()
            await self._strays()
            await self._foreign_writes()
            if self._dirty:
                continue  # marked while the strays were handled
            due = [t for t in (self._timers[0][0] if self._timers else None,
                               self._departed_retry, self._strays_retry) if t is not None]
            await leadership.wait_until(self.clock, min(due, default=None), self.wake)

    def _schedule(self, key: Key, at: float) -> None:
        """Reconcile `key` again at `at`. Only the earliest wake-up per election is kept: the
        reconcile it starts arms the later ones again. So the heap holds about one entry
        per election, not one per renewal."""
        pending = self._scheduled.get(key)
        if pending is not None and pending <= at:
            return
        self._scheduled[key] = at
        heapq.heappush(self._timers, (at, key))
        self.wake.set()  # the loop may be waiting for a later deadline, or none

    async def idle(self) -> None:
        """Until no election is being reconciled (for tests)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _one(self, key: Key) -> None:
        try:
            async with self._gate:
                await self.reconcile(key)
            self._failures.pop(key, None)
            if self._denied_key == key:
                self._writes_work_again()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            delay = min(RETRY * 2 ** (failures - 1), MAX_RETRY)
            if isinstance(exc, leadership.PermissionDeniedError) and (
                    exc.verb, exc.resource) == ("patch", "pods"):
                await self._denied(key, exc, delay)
            elif isinstance(exc, (TimeoutError, OSError, leadership.StoreError)):
                # The API server is slow, unreachable or refusing: expected in operation,
                # and retried; a warning with the reason, not a traceback.
                log.warning("reconciling %s/%s failed: %s; retrying in %gs", *key,
                            text.error(exc), delay)
            else:
                log.exception("reconciling %s/%s failed; retrying in %gs", *key, delay)
            self._schedule(key, self.clock.now() + delay)
        finally:
            self._running.pop(key, None)
            if key in self._again:
                self._again.discard(key)
                self.mark(key)

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
            self._schedule(key, verdict.expires_at)
        # Labels first: a flip is what the Service waits for, and each Event is one more API
        # write; the Events then also describe labels that are already there.
        try:
            if self.is_active():
                await self._apply(key, verdict)
        finally:
            await self._report(key, verdict)

    def _forget(self, key: Key) -> None:
        self.leases.forget(key)
        self._failures.pop(key, None)
        self._lease_found(key)
        before = self._last.pop(key, None)
        if before is not None:
            self.metrics.elections.labels(before[0].value).dec()
        self._reported.pop(key, None)
        self._posted.pop(key, None)

    # --- writing ---------------------------------------------------------------------------

    async def _denied(self, key: Key, exc: leadership.PermissionDeniedError,
                      delay: float) -> None:
        """RBAC refused a write: no retry fixes that soon. Back off; say once what is
        missing (a log line, a Warning Event on the election's Lease), count it, and let
        /healthz fail until a write succeeds."""
        verb, resource = exc.verb or "?", exc.resource or "?"
        self.metrics.permission_denied.labels(verb, resource).inc()
        first = self.denied is None
        self._denied_key = key
        self.denied = (f"forbidden: RBAC does not grant {verb} on {resource} "
                       f"({text.error(exc)})")
        if not first:
            log.debug("reconciling %s/%s: still %s; retrying in %gs", *key, self.denied, delay)
            return
        log.error("reconciling %s/%s: %s; the operator cannot label pods until it is "
                  "granted (manifests/operator); retrying with back-off, /readyz fails",
                  *key, self.denied)
        await self.events.post(_lease_ref(key), "Warning", "PermissionDenied",
                               f"the operator may not {verb} {resource}: it cannot label "
                               f"this election's pods ({text.error(exc)})")

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

    def _lease_found(self, key: Key) -> None:
        """Forget that `key`'s Lease was missing (it exists, or the election is gone)."""
        self._missing_since.pop(key, None)
        self._missing_told.pop(key, None)
        self._missing_logged.discard(key)

    def _writes_work_again(self) -> None:
        log.info("writing labels works again: %s is over", self.denied)
        self.denied = self._denied_key = None

    async def _lease_not_found(self, key: Key, verdict: Verdict) -> None:
        """Members of an election whose Lease does not exist, after a grace: a Warning
        ``LeaseNotFound`` on each (once), and a log line."""
        if verdict.state is not ElectionState.MISSING:
            self._lease_found(key)
            return
        now = self.clock.now()
        due = self._missing_since.setdefault(key, now) + LEASE_NOT_FOUND_GRACE
        if now < due:
            self._schedule(key, due)
            return
        told = self._missing_told.setdefault(key, set())
        members = [m for m in self.members.of(key) if m.uid not in told]
        if not members:
            return
        message = (f"no Lease {key[0]}/{key[1]} exists, {LEASE_NOT_FOUND_GRACE:.0f}s after "
                   f"its members joined: check the {self.labels.election} label for a typo, "
                   "or create the Lease (the pods are followers meanwhile)")
        if key not in self._missing_logged:
            self._missing_logged.add(key)
            log.warning("election %s/%s: %s (%s)", *key, message,
                        text.cut(", ".join(m.name for m in members), text.EVENT))
        if self.is_active():
            for member in members:
                await self.events.post(member.ref, "Warning", "LeaseNotFound", message)
                told.add(member.uid)

    async def _departed(self) -> None:
        """Pods with a role label that left the pod watch: a pod still there (relabelled out
        of its election, not deleted) is taken in again, as a stray."""
        if self._departed_retry is not None:
            if self.clock.now() < self._departed_retry:
                return
            self._departed_retry = None
        while self.members.departed:
            uid, (namespace, name) = next(iter(self.members.departed.items()))
            try:
                pod = await self.kube.find_pod(namespace, name)
            except (TimeoutError, OSError, leadership.StoreError) as exc:
                log.warning("looking up pod %s/%s, which left its election, failed: %s; "
                            "retrying in %gs", namespace, name,
                            text.error(exc), RETRY)
                self._departed_retry = self.clock.now() + RETRY
                return
            self.members.departed.pop(uid, None)
            meta = (pod or {}).get("metadata") or {}
            # Unless the watch has taken it in again meanwhile (it re-joined): then the
            # watch's state is the newer one.
            if pod is not None and str(meta.get("uid") or "") == uid and (
                    not self.members.follows(uid)):
                meta.setdefault("namespace", namespace)
                for key in self.members.pod_event("MODIFIED", pod):
                    self.mark(key)

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
        observation = self.leases.observation(key)
        uid = ""
        if observation is not None and observation.lease:
            uid = str((observation.lease.get("metadata") or {}).get("uid") or "")
        problems = {(p.reason, p.message) for p in verdict.problems}
        for reason, message in sorted(problems - self._reported.get(key, set())):
            log.warning("lease %s/%s: %s: %s", key[0], key[1], reason,
                        text.cut(message, text.EVENT))
        self._reported[key] = problems
        if self.is_active():  # a standby logs; the active replica also posts, once
            for reason, message in sorted(problems - self._posted.get(key, set())):
                await self.events.post(_lease_ref(key, uid), "Warning", reason, message)
            self._posted[key] = problems
        now = (verdict.state, verdict.holder)
        before = self._last.get(key)
        if before == now:
            return
        self._last[key] = now
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

    async def _strays(self) -> None:
        """Report bad election labels (once a pod) and take the role label off strays. A
        stray gone meanwhile is forgotten; another failure is retried a second later, the
        other strays still handled."""
        now = self.clock.now()
        if self._strays_retry is not None and now < self._strays_retry:
            return
        self._strays_retry = None
        strays = self.members.strays()
        logged = self._reported.setdefault(STRAYS, set())
        posted = self._posted.setdefault(STRAYS, set())
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
                        return
                except leadership.NotFoundError:
                    self.members.forget(pod)  # deleted meanwhile: nothing left to clean
                except (TimeoutError, OSError, leadership.StoreError) as exc:
                    log.warning("removing the role label of stray pod %s/%s failed: %s; "
                                "retrying in %gs", pod.namespace, pod.name,
                                text.error(exc), RETRY)
                    self._strays_retry = self.clock.now() + RETRY
