"""Turn verdicts into label writes, leader endpoints, Events and deletions, in a safe order.

The reconciler reads the Lease cache, the members and the opted-in Services (caches it never
writes), decides (`decide`), and writes:

- The old leader's label goes before the new one is given, each write awaited: at no instant
  does the API server see two `leader` labels in one election. If a write fails, the ones
  after it are not made, and the election is tried again a second later.
- Right before every write it asks `is_active()` (this replica holds the operator's own
  Lease); a standby, or a replica that just lost it, writes nothing.
- A drain (the holder late past its renew deadline) or an expiry is acted upon only after a
  fresh read made since it fell due agrees with the Lease cache's watch
  (`LeaseCache.confirm`).
- What it wrote counts until the pod watch shows it (`OwnWrites`): a cache behind the
  server never hides a `leader` label it gave.
- Before the labels, each opted-in Service's leader EndpointSlice (`routes.leader_slice`):
  one write whenever what it should list changes, a handover included. First, because
  kube-proxy applies at once only a change that comes a sync period (1 s by default) after
  its last one, and a label write changes the EndpointSlices of every Service selecting the
  label. The labels are written even when a slice write failed. What was applied is
  remembered, and every slice applied again after a full resync (a no-op on the server when
  nothing changed). A Service that leaves the route loses its slice.
- What is said (log lines, Events, metrics) comes after the labels (a flip is what a
  Service waits for) and once per thing (`report.Reporter`).

Its work comes from one queue (`workqueue.WorkQueue`): elections marked by the Lease cache
and the pod events, woken when their verdict next changes by itself (a drain, an expiry),
and four chores (strays, departed pods, foreign role writes, retired Services) as items
like them; one item is never worked on twice at once, and failed work comes back after one
jittered back-off.
Every wait is on the injected clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import leadership
from leadership import Clock

from . import text
from .contract import Labels, Role
from .decide import MAX_DURATION, Problem, Verdict, decide
from .events import Events
from .kube import JSONDict, Kube
from .leases import LeaseCache
from .metrics import OperatorMetrics
from .ownwrites import OwnWrites
from .pods import Departed, Key, Member, Members, PodChange
from .report import Reporter, lease_ref
from .routes import leader_slice, release_grace_ends, releasing, selector_problem, slice_name
from .services import LeaderService, ServiceChange, Services
from .workqueue import WorkQueue

log = logging.getLogger("leadership.operator")
#: elections reconciled at once (each one's writes stay in order).
CONCURRENCY = 32
#: foreign role writes kept to report, at most (the oldest go first).
MAX_FOREIGN = 100
#: seconds before an election is looked at again when a confirming read did not settle its
#: drain or expiry (the read was sent before it fell due, or the watch moved meanwhile).
RECONFIRM = 0.5


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
#: Services that left the route: delete their leader EndpointSlice; report bad labels.
RETIRED = Chore("retired services")
CHORES = (DEPARTED, STRAYS, FOREIGN_WRITES, RETIRED)
#: What the work queue holds: an election, or a chore.
Item = Key | Chore


def _order(item: Item) -> tuple[int, tuple[str, str]]:
    """The chores first (a departed pod may turn out a stray; a stray's label must go before
    its former election is looked at), then the elections by namespace and name."""
    return (CHORES.index(item), ("", "")) if isinstance(item, Chore) else (len(CHORES), item)


class Reconciler:
    def __init__(self, leases: LeaseCache, members: Members, services: Services, kube: Kube,
                 events: Events, labels: Labels, clock: Clock, metrics: OperatorMetrics,
                 is_active: Callable[[], bool], *, scopes: list[str | None] | None = None,
                 max_duration: int = MAX_DURATION, rng: random.Random | None = None) -> None:
        self.leases, self.members, self.kube, self.events = leases, members, kube, events
        self.services = services
        #: the namespaces watched (None: all of them): where slices of ours are swept.
        self.scopes = scopes if scopes is not None else [None]
        self.labels, self.clock, self.metrics = labels, clock, metrics
        self.is_active, self.max_duration = is_active, max_duration
        self.queue: WorkQueue[Item] = WorkQueue(clock, order=_order, rng=rng)
        # Items are worked on concurrently (bounded); one election's writes stay in order,
        # because the queue never hands out an item that is in flight.
        self._gate = asyncio.Semaphore(CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()
        self.reporter = Reporter(events, labels, clock, metrics, is_active,
                                 members.field_manager)
        #: the role labels written that the pod watch has not shown yet.
        self.own_writes = OwnWrites()
        #: pods that left the pod watch with a role label, by uid: to look up.
        self._departures: dict[str, Departed] = {}
        #: role labels another field manager wrote: to report, oldest first.
        self._foreign: deque[tuple[Member, str]] = deque(maxlen=MAX_FOREIGN)
        #: the leader EndpointSlices applied, by (namespace, Service name), until a resync.
        self._slices: dict[tuple[str, str], JSONDict] = {}
        #: slices to apply again even if unchanged (after a resync, or becoming active).
        self._reapply: set[tuple[str, str]] = set()
        #: Services that left the route, by (namespace, name): their slice is to delete.
        self._retired: dict[tuple[str, str], LeaderService] = {}
        #: Services whose election label names no possible Lease: to report.
        self._bad_services: deque[LeaderService] = deque(maxlen=MAX_FOREIGN)
        #: whether to look for slices of ours whose Service is no route (after a resync).
        self._sweep = True
        #: why the operator cannot write (RBAC refused it), until a write succeeds again.
        self.denied: str | None = None
        self._denied_key: Item | None = None  # the item whose write RBAC refused

    # --- what wakes it ---------------------------------------------------------------------

    def mark(self, key: Key) -> None:
        """`key`'s Lease or members changed: look at it again."""
        self.queue.add(key)

    def pods_changed(self, change: PodChange) -> None:
        """After a pod event or listing: the elections it touched, and the chores it made."""
        for uid in change.gone:
            self.own_writes.forget(uid)
        for key in change.touched:
            self.queue.add(key)
        if change.departed is not None:
            self._departures[change.departed.uid] = change.departed
            self.queue.add(DEPARTED)
        if change.foreign_write is not None:
            self._foreign.append(change.foreign_write)
            self.queue.add(FOREIGN_WRITES)
        if change.strays:
            self.queue.add(STRAYS)

    def services_changed(self, change: ServiceChange) -> None:
        """After a Service event or listing: the elections whose route it touched."""
        for key in change.touched:
            self.queue.add(key)
        for service in change.retired:
            self._retired[(service.namespace, service.name)] = service
        self._bad_services.extend(change.bad)
        if change.retired or change.bad:
            self.queue.add(RETIRED)

    def mark_all(self) -> None:
        """Everything needs a look (a resync, or this replica just became active): every
        leader EndpointSlice is applied again, too."""
        self._reapply.update(self._slices)
        self._sweep = True
        for key in {*self.leases.keys(), *self.members.elections(),
                    *self.services.elections()}:
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
            if isinstance(exc, leadership.PermissionDeniedError) and exc.resource in (
                    "pods", "endpointslices"):
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
        if chore == RETIRED:
            return await self._retire()
        while self._foreign:
            await self.reporter.foreign_write(*self._foreign.popleft())
        return True

    def verdict(self, key: Key) -> Verdict:
        verdict = decide(self.leases.observation(key), self.members.of(key),
                         self.clock.now(), confirmed_at=self.leases.confirmed_at(key),
                         max_duration=self.max_duration)
        malformed = self.leases.malformed(key)
        if malformed is not None:
            verdict = dataclasses.replace(verdict, problems=[
                *verdict.problems, Problem("MalformedLease", malformed)])
        return verdict

    async def reconcile(self, key: Key) -> None:
        """Decide one election and write what the verdict needs."""
        if not self.members.of(key):
            try:
                await self._route(key, None)  # no pod: its leader endpoints list nobody
            finally:
                self._forget(key)  # a Lease no pod is a member of is no election of ours
            return
        if not self.leases.known(key):
            await self.leases.track(key)  # a pod has just joined this election
        verdict = self.verdict(key)
        if verdict.needs_confirmation:
            await self.leases.confirm(key)
            verdict = self.verdict(key)
            if verdict.needs_confirmation:
                self.queue.add_at(key, self.clock.now() + RECONFIRM)
        if verdict.wakes_at is not None and verdict.wakes_at > self.clock.now():
            self.queue.add_at(key, verdict.wakes_at)
        # The leader endpoints, then the labels (each route written even when the other
        # failed): a flip is what the Services wait for, and each Event is one more API
        # write; the Events then also describe routes that are already there.
        route_problems: list[Problem] = []
        try:
            try:
                route_problems = await self._route(key, verdict)
            finally:
                if self.is_active():
                    await self._apply(key, verdict)
        finally:
            if route_problems:
                verdict = dataclasses.replace(verdict,
                                              problems=[*verdict.problems, *route_problems])
            again = await self.reporter.election(key, verdict, self.members.of(key),
                                                 self.leases.uid(key))
            if again is not None:
                self.queue.add_at(key, again)

    def _forget(self, key: Key) -> None:
        """`key` is no election of ours any more: drop what is kept of it."""
        self.leases.forget(key)
        self.queue.forget(key)
        self.reporter.forget(key)

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
            await self.events.post(lease_ref(item), "Warning", "PermissionDenied",
                                   f"the operator may not {verb} {resource}: it cannot "
                                   f"label this election's pods ({text.error(exc)})")

    async def _write(self, member: Member, role: Role | None, why: str) -> bool:
        if not self.is_active():
            return False
        value = role.value if role else None
        before = " or ".join(sorted(r or "(none)" for r in self.own_writes.roles(member)))
        try:
            version = await self.kube.label_pod(member.namespace, member.name,
                                                self.labels.role, value)
        except leadership.NotFoundError:
            if self.members.follows(member.uid):
                self.own_writes.wrote(member, None, "")  # gone: no label left on it
            raise
        if self.denied is not None:
            self._writes_work_again()
        log.info("pod %s/%s: role %s -> %s (%s)", member.namespace, member.name, before,
                 value or "(none)", why)
        if self.members.follows(member.uid):  # until the pod watch shows it
            self.own_writes.wrote(member, value, version)
        self.metrics.label_writes.inc()
        return True

    async def _apply(self, key: Key, verdict: Verdict) -> None:
        members = {m.name: m for m in self.members.of(key)}
        roles = {m.name: self.own_writes.roles(m) for m in members.values()}
        wanted: dict[str, Role | None] = {}
        for name, decided in verdict.roles.items():
            if name not in members:
                continue
            if members[name].address.terminating and decided is not Role.LEADER:
                # A pod being deleted is given no new role but leader: only a `leader` it
                # no longer is goes (so that it joins no Service on its way out, which
                # would change that Service's endpoints, and spend kube-proxy's sync
                # period, for nothing).
                if Role.LEADER.value in roles[name]:
                    wanted[name] = None
            else:
                wanted[name] = decided
        wrong = [(members[n], r) for n, r in wanted.items()
                 if roles[n] != {r.value if r else None}]
        # Take `leader` away first (from every pod that may have it), awaited, then every
        # other change, the new leader last.
        first = [(m, r) for m, r in wrong if Role.LEADER.value in roles[m.name]]
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
                                               self.own_writes.version(doomed))
                except leadership.PermissionDeniedError as exc:
                    # Opting in takes only an annotation; deleting takes the delete-pods
                    # overlay. Said at each try (Events aggregates repeats); the label
                    # already says stale.
                    message = (f"{name} opted into deletion at expiry, but the operator may "
                               f"not delete pods (manifests/operator/overlays/delete-pods): "
                               f"{text.error(exc)}")
                    log.warning("pod %s/%s: %s", doomed.namespace, doomed.name, message)
                    await self.events.post(doomed.ref, "Warning", "CannotDeletePod", message)
                except (leadership.NotFoundError, leadership.ConflictError):
                    pass  # gone already, or replaced since: never delete the replacement

    async def _route(self, key: Key, verdict: Verdict | None) -> list[Problem]:
        """Each of the election's opted-in Services gets the EndpointSlice that lists the
        verdict's leader (None: no verdict, nobody), in one write when it changed; the
        problems found. Every Service is tried; the first failure is raised at the end."""
        problems: list[Problem] = []
        members = self.members.of(key)
        name = verdict.leader if verdict is not None else None
        leader = next((m for m in members if m.name == name), None)
        observed = self.leases.observation(key)
        grace_ends = release_grace_ends(
            verdict.state if verdict is not None else None,
            observed.observed_at if observed is not None else None, self.clock.now())
        failed: BaseException | None = None
        for service in self.services.of(key):
            where = (service.namespace, service.name)
            if service.has_selector:
                problems.append(selector_problem(service))
                if where in self._slices:  # it had one: the controller's slices now serve it
                    self._retire_later(service)
                continue
            previous = self._slices.get(where)
            if grace_ends is not None and releasing(previous, members) is not None:
                self.queue.add_at(key, grace_ends)
                continue
            body, found = leader_slice(service, leader, self.labels, previous)
            problems += found
            if (previous == body and where not in self._reapply) or not self.is_active():
                continue
            try:
                await self.kube.apply_slice(service.namespace, body)
            except Exception as exc:
                failed = failed or exc
                continue
            self._slices[where] = body
            self._reapply.discard(where)
            self.metrics.slice_writes.inc()
            listed = [a for e in body["endpoints"] for a in e["addresses"]]
            log.info("service %s/%s: leader endpoint %s (lease %s/%s)", *where,
                     f"{leader.name} {listed[0]}" if leader and listed else "empty", *key)
            current = self.services.get(*where)
            if current is None or current.key != key:  # it left while the write was out
                self._retire_later(service)
        if failed is not None:
            raise failed
        return problems

    def _retire_later(self, service: LeaderService) -> None:
        self._retired[(service.namespace, service.name)] = service
        self.queue.add(RETIRED)

    # --- reporting -------------------------------------------------------------------------

    def _writes_work_again(self) -> None:
        log.info("writing labels works again: %s is over", self.denied)
        self.denied = self._denied_key = None

    async def _departed(self) -> bool:
        """Pods with a role label that left the pod watch: one still there (its election
        label removed, not deleted) loses its role label. False when a look-up or a write
        failed (the rest wait for the retry)."""
        while self._departures:
            departed = next(iter(self._departures.values()))
            what = f"pod {departed.namespace}/{departed.name}, which left its election"
            try:
                pod = await self.kube.find_pod(departed.namespace, departed.name)
                if pod is not None:
                    pod.setdefault("metadata", {}).setdefault("namespace", departed.namespace)
                    member = self.members.member(pod)
                    # The same pod, still in no election (one the watch has taken in again
                    # is its election's), with a role label.
                    if (member.uid == departed.uid and member.raw_election is None
                            and member.role is not None and not self.members.follows(
                                member.uid)):
                        if not await self._write(member, None, "it left its election"):
                            return True  # a standby: becoming active marks every chore
            except leadership.NotFoundError:
                pass  # deleted meanwhile: nothing left to clean
            except (TimeoutError, OSError, leadership.StoreError) as exc:
                log.warning("cleaning %s failed: %s; retrying in %.1fs", what, text.error(exc),
                            self.queue.failed(DEPARTED))
                return False
            self._departures.pop(departed.uid, None)
        return True

    async def _retire(self) -> bool:
        """Delete the leader EndpointSlice of each Service that left the route or gained a
        selector (unless it came back meanwhile), after a resync every slice of ours whose
        Service is no such route (one left while no replica was active), and report
        Services whose election label is no Lease name. False when a deletion failed (the
        rest wait for the retry)."""
        while self._bad_services:
            service = self._bad_services.popleft()
            message = (f"election label {service.raw_election!r} is not a valid Lease name; "
                       "the Service gets no leader endpoint")
            log.warning("service %s/%s: %s", service.namespace, service.name, message)
            if self.is_active():
                await self.events.post(service.ref, "Warning", "BadElectionLabel", message)
        if not self.is_active():
            return True  # a standby: becoming active marks every chore, and sweeps
        try:
            if self._sweep:
                for scope in self.scopes:
                    for namespace, name, service_name in await self.kube.list_slices(scope):
                        where = (namespace, service_name)
                        ours = LeaderService(namespace, service_name, "", None)
                        if name == slice_name(ours) and not self._routed(where):
                            self._retired.setdefault(where, ours)
                self._sweep = False
            while self._retired:
                where, service = next(iter(self._retired.items()))
                if not self._routed(where):
                    self._slices.pop(where, None)  # before the await: a return rewrites it
                    self._reapply.discard(where)
                    await self.kube.delete_slice(service.namespace, slice_name(service))
                    log.info("service %s/%s is no leader route (any more): its leader "
                             "endpoint is deleted", *where)
                    current = self.services.get(*where)
                    if current is not None and current.key is not None:
                        self.queue.add(current.key)  # it came back during the delete
                self._retired.pop(where, None)
        except (TimeoutError, OSError, leadership.StoreError) as exc:
            log.warning("deleting leader endpoints failed: %s; retrying in %.1fs",
                        text.error(exc), self.queue.failed(RETIRED))
            return False
        return True

    def _routed(self, where: tuple[str, str]) -> bool:
        """Whether the Service `where` is a leader route now (opted in, no selector)."""
        current = self.services.get(*where)
        return current is not None and not current.has_selector

    async def _strays(self) -> bool:
        """Report bad election labels and take the role label off strays. A stray gone
        meanwhile has nothing left to clean; another failure is retried with back-off, the
        other strays still handled (then False)."""
        strays = self.members.strays()
        await self.reporter.bad_election_labels(strays)
        finished = True
        for pod in strays:
            if self.own_writes.roles(pod) != {None}:
                try:
                    if not await self._write(pod, None, "in no election"):
                        return finished  # a standby: becoming active marks every chore
                except leadership.NotFoundError:
                    pass  # deleted meanwhile: nothing left to clean
                except (TimeoutError, OSError, leadership.StoreError) as exc:
                    if finished:  # one retry for the pass, however many strays failed
                        finished = False
                        delay = self.queue.failed(STRAYS)
                    log.warning("removing the role label of stray pod %s/%s failed: %s; "
                                "retrying in %.1fs", pod.namespace, pod.name,
                                text.error(exc), delay)
        return finished
