"""What the operator knows: every Lease in scope (through one `ExpiryTracker` each, the
library's expiry rule) and every pod that is, or was, a member of an election.

It is fed by the shared Lease watch (`lease_event`) and the pod events (`pod_event`), keeps
no per-Lease watch and makes no request. Each change marks the elections it touches as
dirty; the reconciler takes them with `take_dirty()` and asks for a `verdict`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from leadership import Clock, ExpiryTracker

from .contract import Labels, valid_lease_name
from .decide import MAX_DURATION, Member, Verdict, decide

log = logging.getLogger("leadership.operator")

#: (namespace, Lease name): one election.
Key = tuple[str, str]


@dataclass
class PodInfo:
    namespace: str
    name: str
    uid: str
    election: str | None  # a valid election label value, or None
    raw_election: str | None  # the label as found (for reporting a bad one)
    role: str | None
    delete_on_expiry: bool


class State:
    def __init__(self, clock: Clock, labels: Labels, *, fallback_ttl: int = 15,
                 max_duration: int = MAX_DURATION) -> None:
        self.clock, self.labels = clock, labels
        self.fallback_ttl, self.max_duration = fallback_ttl, max_duration
        self.trackers: dict[Key, ExpiryTracker] = {}
        self.versions: dict[Key, str | None] = {}  # resourceVersion last taken in, per Lease
        self.changed_at: dict[Key, float] = {}  # when a Lease last changed hands (monotonic)
        self.pods: dict[str, PodInfo] = {}  # by uid
        self._members: dict[Key, dict[str, PodInfo]] = {}  # by election, then uid
        self._strays: dict[str, PodInfo] = {}  # in no election, by uid
        self.confirmed: dict[Key, str | None] = {}  # expiry confirmed at this version
        self._dirty: set[Key] = set()

    # --- input --------------------------------------------------------------------------

    def lease_event(self, kind: str, lease: dict[str, Any]) -> Key | None:
        meta = lease.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if not isinstance(namespace, str) or not isinstance(name, str):
            return None
        key = (namespace, name)
        tracker = self.trackers.get(key)
        if tracker is None:
            tracker = self.trackers[key] = ExpiryTracker(self.clock, self.fallback_ttl,
                                                          f"lease {namespace}/{name}")
        before = tracker.current.record.holder_identity if tracker.current else None
        observation, changed = tracker.update(None if kind == "DELETED" else lease)
        self.versions[key] = None if kind == "DELETED" else meta.get("resourceVersion")
        if observation.record.holder_identity != before or kind == "DELETED":
            self.changed_at[key] = self.clock.now()
        if changed or kind == "DELETED":
            self._dirty.add(key)
        return key

    def forget_lease(self, key: Key) -> None:
        """A Lease absent from a fresh list: as if deleted."""
        if key in self.trackers:
            self.lease_event("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})

    def pod_event(self, kind: str, pod: dict[str, Any]) -> list[Key]:
        """Take in a pod; return the elections it touches (now or before)."""
        meta = pod.get("metadata") or {}
        uid = meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"
        old = self.pods.pop(uid, None)
        self._strays.pop(uid, None)
        touched = []
        if old is not None and old.election:
            key = (old.namespace, old.election)
            touched.append(key)
            members = self._members.get(key, {})
            members.pop(uid, None)
            if not members:
                self._members.pop(key, None)
        if kind != "DELETED":
            labels = meta.get("labels") or {}
            annotations = meta.get("annotations") or {}
            raw = labels.get(self.labels.election)
            info = PodInfo(
                namespace=str(meta.get("namespace")), name=str(meta.get("name")), uid=uid,
                election=raw if valid_lease_name(raw) else None, raw_election=raw,
                role=labels.get(self.labels.role),
                delete_on_expiry=annotations.get(self.labels.on_expiry) == "delete-pod")
            if info.election is not None or info.role is not None or raw is not None:
                self.pods[uid] = info
                if info.election is None:
                    self._strays[uid] = info
            if info.election:
                key = (info.namespace, info.election)
                touched.append(key)
                self._members.setdefault(key, {})[uid] = info
        self._dirty.update(touched)
        return touched

    def mark_all(self) -> None:
        """Everything needs a look (a resync, or this replica just became active)."""
        self._dirty.update(self.trackers)
        self._dirty.update(self._members)

    def mark(self, key: Key) -> None:
        self._dirty.add(key)

    def take_dirty(self) -> list[Key]:
        dirty, self._dirty = sorted(self._dirty), set()
        return dirty

    # --- output -------------------------------------------------------------------------

    def members(self, key: Key) -> list[PodInfo]:
        return sorted(self._members.get(key, {}).values(), key=lambda p: p.name)

    def strays(self) -> Iterable[PodInfo]:
        """Pods in no election (no valid election label) that carry a role label or a bad
        election label: the role label must go, a bad label be reported."""
        return list(self._strays.values())

    def verdict(self, key: Key, now: float) -> Verdict:
        tracker = self.trackers.get(key)
        observation = tracker.current if tracker else None
        confirmed = (observation is not None and key in self.confirmed
                     and self.confirmed[key] == self.versions.get(key))
        members = [Member(p.name, p.uid, p.role, p.delete_on_expiry) for p in self.members(key)]
        return decide(observation, members, now, expiry_confirmed=confirmed,
                      max_duration=self.max_duration)

    def confirm(self, key: Key, fresh: dict[str, Any] | None, read_from: str | None) -> bool:
        """Take in a fresh read of an expired-looking Lease, sent when the watch had delivered
        version `read_from`. True if the read agrees with the watch (the expiry stands);
        False if the watch had missed a change (the read is taken in), or delivered one while
        the read was in flight (the read, maybe older, is dropped)."""
        if self.versions.get(key) != read_from:
            return True  # the watch is alive and newer: nothing to confirm or correct
        version = (fresh or {}).get("metadata", {}).get("resourceVersion")
        if version == self.versions.get(key):
            self.confirmed[key] = version
            return True
        log.warning("lease %s/%s: the watch missed an update (delivered %s, a read shows %s)",
                    key[0], key[1], self.versions.get(key), version)
        if fresh is None:
            self.lease_event("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
        else:
            self.lease_event("MODIFIED", fresh)
        return False
