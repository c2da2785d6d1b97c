"""`LeaseCache`: every Lease of the operator's scopes, as the library's expiry rule sees it.

The twin of `toolkit.LeaseObserver` for many Leases. The operator follows thousands of
Leases, so it never watches one at a time: per scope (a namespace, or the whole cluster) it
lists them once, in pages, then watches them all from the list's version, with bookmarks.
Each event feeds that Lease's `toolkit.ExpiryTracker` (expiry judged on this process's
monotonic clock, never on a remote timestamp). The cache owns its trackers, versions and
"changed hands at" times; the reconciler only asks (`observation`, `confirmed_at`,
`take_handover_time`) and, before acting on a drain or an expiry, calls `confirm`.

Its rules:

- A watch the server ends is opened again from the last version seen (client-go's
  reflectors do the same); only a 410 (that version is gone) or an error re-lists. Errors
  back off, jittered, on the injected clock.
- `confirm(key)` reads the Lease afresh. If the read shows the version the watch delivered,
  `confirmed_at(key)` is when that read was made: a drain or an expiry due by then stands.
  If it shows a change the watch never delivered, the read is taken in and the watch is
  suspected: it is restarted (a re-list) unless it delivers
  anything, a bookmark will do, within `SUSPECT_GRACE` seconds, because a watch that still
  delivers is merely behind a busy API server, and re-listing thousands of Leases for that
  would only slow it further.
- `silent_scopes()` names the scopes whose watch has heard nothing for a while (the health
  check's question).

Bounded whatever the Leases hold (anyone who may write a Lease, the built-in `edit` role
included, can make them hostile):

- It keeps state only for the Leases `wanted` says are elections (a member pod names them);
  the others' events are decoded and dropped. A Lease that becomes an election later is
  read when asked for (`track`); one that stops being one is forgotten (`forget`).
- It keeps the record, never the object: name, uid, version and the election fields.
- A ``holderIdentity`` no pod can have (longer than `MAX_HOLDER` characters, or with control
  characters) is replaced by a short placeholder, and `malformed(key)` says what was wrong,
  cut to `text.QUOTE` characters, for the Warning `MalformedLease`.

Every wait and timestamp comes from the injected `Clock`, so the whole cache runs on
`leadership.testing.ManualClock` in unit tests.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import leadership
from leadership import Clock, toolkit
from leadership.toolkit import RENEW_DEADLINE_RATIO, ExpiryTracker, Observation

from . import text
from .kube import Kube
from .metrics import OperatorMetrics
from .pods import Key

log = logging.getLogger("leadership.operator")
#: A suspected watch is restarted unless it delivers something within this many seconds.
SUSPECT_GRACE = 5.0
#: Backoff between failed lists or watches (jittered, doubling): from, to.
RETRY = (0.2, 5.0)
#: The longest holderIdentity a pod can have: a pod name (253) and `_<suffix>` (1 + 63).
MAX_HOLDER = 253 + 1 + 63


def _slim(lease: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The parts of a Lease an election needs (and a problem, if its holder cannot be any
    pod's): metadata's name, namespace, uid and resourceVersion, and the spec."""
    meta = lease.get("metadata") or {}
    spec = dict(lease.get("spec") or {})
    problem = None
    holder = spec.get("holderIdentity")
    if isinstance(holder, str) and (len(holder) > MAX_HOLDER or any(
            ord(c) < 32 or ord(c) == 127 for c in holder)):
        problem = (f"holderIdentity is not an identity a pod can have ({len(holder)} "
                   f"characters, at most {MAX_HOLDER}, no control characters): "
                   f"{text.cut(holder, text.QUOTE, escape=True)!r}")
        spec["holderIdentity"] = f"<malformed holderIdentity of {len(holder)} characters>"
    slim_meta = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion")
                 if k in meta}
    return {"metadata": slim_meta, "spec": spec}, problem


def _only_renewed(before: Observation | None, after: Observation, now: float,
                  max_duration: int) -> bool:
    """True for a renewal by the same holder of a claim not yet drained (its earliest renew
    deadline, `RENEW_DEADLINE_RATIO` of the duration, had not passed), the same duration,
    nothing newly malformed: nothing to decide anew. (The reconciler's wake-up at the old
    drain finds the claim renewed and waits for the new one.) A renewal after the deadline
    is decided at once: a drained holder gets its label back. Most Lease events are the
    first kind: at 1,000 elections, hundreds a second. The duration is judged as the
    reconciler judges it: at most `max_duration`."""
    return (before is not None and before.lease is not None and after.lease is not None
            and not after.record.is_free
            and after.record.holder_identity == before.record.holder_identity
            and after.duration == before.duration
            and after.parsed.problems == before.parsed.problems
            and now < before.observed_at + RENEW_DEADLINE_RATIO * min(before.duration,
                                                                      max_duration)
            and after.expires_at >= before.expires_at)


@dataclass
class _Election:
    """What the cache keeps of one election's Lease: one entry, dropped whole."""

    #: the Lease's expiry, judged on this process's clock; None: known to have no Lease.
    tracker: ExpiryTracker | None = None
    #: the resourceVersion delivered last, and when (clock.now()) a read that agreed with it
    #: was made, if one was.
    version: str | None = None
    confirmed_at: float | None = None
    #: when the Lease last changed hands (clock.now()), until the label latency takes it.
    handed_over_at: float | None = None
    #: what is wrong with its holderIdentity, if anything (bounded).
    malformed: str | None = None


@dataclass
class _Scope:
    namespace: str | None
    #: when the watch last delivered anything (clock.now()), bookmarks included.
    last_activity: float
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    #: the resourceVersion to watch from; "" forces a re-list.
    version: str = ""
    stream: asyncio.Task[None] | None = None
    suspicion: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.namespace or "all namespaces"


class LeaseCache:
    """See the module's doc. `on_change(key)` is called for every Lease whose observation
    changed (or that appeared or went); `max_duration` is the reconciler's (`decide`)."""

    def __init__(self, kube: Kube, scopes: list[str | None], clock: Clock, *,
                 on_change: Callable[[Key], None], metrics: OperatorMetrics,
                 max_duration: int,
                 wanted: Callable[[Key], bool] = lambda key: True,
                 fallback_ttl: int = 15, rng: random.Random | None = None,
                 suspect_grace: float = SUSPECT_GRACE) -> None:
        self.kube, self.clock, self.metrics = kube, clock, metrics
        self.on_change, self.fallback_ttl, self.wanted = on_change, fallback_ttl, wanted
        self.suspect_grace, self.max_duration = suspect_grace, max_duration
        self._rng = rng or random.Random()
        now = clock.now()
        self._scopes = [_Scope(ns, now) for ns in scopes]
        #: one entry per election: with a Lease, or read and found to have none (so not
        #: read again until an event brings one).
        self._elections: dict[Key, _Election] = {}

    # --- what the reconciler asks --------------------------------------------------------

    def observation(self, key: Key) -> Observation | None:
        entry = self._elections.get(key)
        return entry.tracker.current if entry is not None and entry.tracker else None

    def uid(self, key: Key) -> str:
        """The uid of `key`'s Lease as last seen ("" when it is not known): for Events."""
        observation = self.observation(key)
        if observation is None or not observation.lease:
            return ""
        return str((observation.lease.get("metadata") or {}).get("uid") or "")

    def keys(self) -> list[Key]:
        """The elections that have a Lease."""
        return sorted(k for k, e in self._elections.items() if e.tracker is not None)

    def malformed(self, key: Key) -> str | None:
        """What is wrong with the Lease's holderIdentity, if anything (bounded)."""
        entry = self._elections.get(key)
        return entry.malformed if entry is not None else None

    def known(self, key: Key) -> bool:
        """Whether the cache knows this Lease's state (held, or known to be missing)."""
        return key in self._elections

    async def track(self, key: Key) -> None:
        """Read a Lease that just became an election (a pod joined it) and keep it."""
        if self.known(key):
            return
        lease = await self.kube.read_lease(*key)
        if self.known(key):
            return  # an event brought it meanwhile
        if lease is None:
            self._elections[key] = _Election()
        else:
            self._take_in("ADDED", lease)

    def forget(self, key: Key) -> None:
        """An election no pod is a member of any more: drop its entry."""
        self._elections.pop(key, None)

    def confirmed_at(self, key: Key) -> float | None:
        """When the last read that agreed with the version the watch delivered last was
        made (clock.now() as it was sent), if one was: evidence of no change until then."""
        entry = self._elections.get(key)
        return entry.confirmed_at if entry is not None else None

    def take_handover_time(self, key: Key) -> float | None:
        """When the Lease last changed hands (clock.now()), once: for the label latency."""
        entry = self._elections.get(key)
        if entry is None:
            return None
        at, entry.handed_over_at = entry.handed_over_at, None
        return at

    @property
    def synced(self) -> bool:
        return all(scope.synced.is_set() for scope in self._scopes)

    async def wait_synced(self) -> None:
        """Until every scope has been listed once."""
        await asyncio.gather(*(scope.synced.wait() for scope in self._scopes))

    def silent_scopes(self, limit: float) -> list[str]:
        """The scopes whose watch has delivered nothing for `limit` seconds."""
        now = self.clock.now()
        return [s.name for s in self._scopes if now - s.last_activity > limit]

    async def confirm(self, key: Key) -> None:
        """Read the Lease afresh before anyone acts on its drain or expiry (see the
        module's doc)."""
        entry = self._elections.get(key)
        read_from = entry.version if entry is not None else None
        asked = self.clock.now()
        fresh = await self.kube.read_lease(*key)
        if self._elections.get(key) is not entry or entry is None or (
                entry.version != read_from):
            return  # the watch delivered something newer meanwhile: it is alive
        version = (fresh or {}).get("metadata", {}).get("resourceVersion")
        if version == read_from:
            entry.confirmed_at = asked
            return
        log.warning("lease %s/%s: the watch missed an update (delivered %s, a read shows %s)",
                    key[0], key[1], read_from, version)
        self._take_in("DELETED" if fresh is None else "MODIFIED",
                      fresh or {"metadata": {"namespace": key[0], "name": key[1]}})
        for scope in self._scopes:
            if scope.namespace in (None, key[0]):
                self._suspect(scope)

    # --- taking events in ------------------------------------------------------------------

    def _take_in(self, kind: str, lease: dict[str, Any]) -> Key | None:
        meta = lease.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if not isinstance(namespace, str) or not isinstance(name, str):
            return None
        key = (namespace, name)
        if not self.wanted(key):
            self.forget(key)
            return None
        entry = self._elections.get(key)
        if entry is None:  # not setdefault: this runs for every Lease event
            entry = self._elections[key] = _Election()
        if entry.tracker is None:
            if kind == "DELETED":
                return None  # known to have no Lease, as before
            entry.tracker = ExpiryTracker(self.clock, self.fallback_ttl,
                                          f"lease {namespace}/{name}")
        if kind != "DELETED":
            lease, entry.malformed = _slim(lease)
        previous = entry.tracker.current
        before = previous.record.holder_identity if previous else None
        observation, changed = entry.tracker.update(None if kind == "DELETED" else lease)
        if kind == "DELETED":
            # The election stays (its members are followers now), its Lease gone.
            self._elections[key] = _Election(handed_over_at=self.clock.now())
            self.on_change(key)
            return key
        # A new version that leaves the record alone (a label, an annotation) is no
        # renewal: what a read confirmed still stands.
        entry.version = meta.get("resourceVersion")
        if changed:
            entry.confirmed_at = None
        if observation.record.holder_identity != before:
            entry.handed_over_at = self.clock.now()
        if changed and not _only_renewed(previous, observation, self.clock.now(),
                                         self.max_duration):
            self.on_change(key)
        return key

    # --- the watches ---------------------------------------------------------------------

    async def run(self) -> None:
        """List and watch every scope until cancelled."""
        await asyncio.gather(*(self._follow(scope) for scope in self._scopes))

    async def _list(self, scope: _Scope) -> None:
        items, version = await self.kube.list_leases(scope.namespace)
        seen = set()
        for item in items:
            (item.setdefault("metadata", {})).setdefault("namespace", scope.namespace)
            key = self._take_in("ADDED", item)
            if key is not None:
                seen.add(key)
        for key in self.keys():
            if key not in seen and scope.namespace in (None, key[0]):
                self._take_in("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
        scope.version = version
        scope.last_activity = self.clock.now()
        scope.synced.set()

    async def _watch(self, scope: _Scope) -> None:
        self.metrics.watches_opened.inc()
        async for event in self.kube.watch_leases(scope.namespace, scope.version):
            scope.last_activity = self.clock.now()
            version = (event.object.get("metadata") or {}).get("resourceVersion")
            if version:
                scope.version = str(version)
            if event.type != "BOOKMARK":
                event.object.setdefault("metadata", {}).setdefault("namespace", scope.namespace)
                self._take_in(event.type, event.object)

    async def _follow(self, scope: _Scope) -> None:
        attempt = 0
        while True:
            try:
                if not scope.version:
                    await self._list(scope)
                opened = self.clock.now()
                scope.stream = asyncio.ensure_future(self._watch(scope))
                try:
                    await asyncio.wait([scope.stream])
                finally:
                    if not scope.stream.done():
                        scope.stream.cancel()
                        await asyncio.gather(scope.stream, return_exceptions=True)
                if scope.stream.cancelled():
                    self.metrics.watch_restarts.inc()
                    log.warning("lease watch (%s): silent since a read showed a change it had "
                                "not delivered; re-listing", scope.name)
                    scope.version = ""
                    continue
                scope.stream.result()  # raises what ended it
                # The server ended it: watch again from the last version seen. One that ended
                # at once (something between us and the server cuts watches) waits first,
                # backing off, so that it never spins.
                if self.clock.now() - opened < 1.0:
                    delay = toolkit.backoff(self._rng, attempt, *RETRY)
                    attempt += 1
                    await self.clock.sleep_until(self.clock.now() + delay)
                else:
                    attempt = 0
            except asyncio.CancelledError:
                raise
            except leadership.WatchExpiredError:
                self.metrics.watch_restarts.inc()
                log.info("lease watch (%s): its version is gone (410); re-listing", scope.name)
                scope.version = ""
            except Exception as exc:
                self.metrics.watch_restarts.inc()
                delay = toolkit.backoff(self._rng, attempt, *RETRY)
                attempt += 1
                log.warning("lease watch (%s) failed: %s; re-listing in %.1fs", scope.name,
                            text.error(exc), delay)
                scope.version = ""
                await self.clock.sleep_until(self.clock.now() + delay)

    def _suspect(self, scope: _Scope) -> None:
        """Restart `scope`'s watch unless it delivers anything within `suspect_grace`."""
        if scope.suspicion is None or scope.suspicion.done():
            scope.suspicion = asyncio.ensure_future(self._check(scope, self.clock.now()))

    async def _check(self, scope: _Scope, since: float) -> None:
        await self.clock.sleep_until(since + self.suspect_grace)
        if scope.last_activity <= since and scope.stream is not None:
            scope.stream.cancel()
