"""Kubernetes Events from the operator: aggregated, bounded, and never a reason to fail.

- The same (object, reason, message) posted again within `TTL` patches the first Event's
  ``count`` and ``lastTimestamp`` instead of creating another, as the kubelet's recorder does.
- The API server drops Events after its ``--event-ttl`` (1 h by default): the cache forgets
  an Event after `TTL` (less than that), and a patch answered 404 posts it anew, so a repeat
  is never lost.
- The cache holds at most `MAX_KEYS` entries (least recently used go first): hostile input
  that makes a new message every time cannot grow it.
- A message is at most `text.EVENT` characters; failing to post is a log line, never an
  exception for the caller.

Timestamps come from the injected clock's `wall()`.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass

import leadership
from leadership import Clock

from . import text
from .kube import Kube
from .metrics import OperatorMetrics

log = logging.getLogger("leadership.operator")
COMPONENT = "leadership-operator"
#: How long a posted Event is aggregated into (seconds); below the API server's 1 h TTL.
TTL = 55 * 60
MAX_KEYS = 4096


@dataclass
class _Posted:
    name: str
    count: int
    at: float  # clock.now() of the creation


class Events:
    """Posts Events for the operator; see the module's doc."""

    def __init__(self, kube: Kube, identity: str, clock: Clock,
                 metrics: OperatorMetrics | None = None, *, ttl: float = TTL,
                 max_keys: int = MAX_KEYS) -> None:
        self.kube, self.identity, self.clock, self.metrics = kube, identity, clock, metrics
        self.ttl, self.max_keys = ttl, max_keys
        self._posted: collections.OrderedDict[tuple[str, str, str, str], _Posted] = (
            collections.OrderedDict())

    def __len__(self) -> int:
        return len(self._posted)

    def _stamp(self) -> str:
        return self.clock.wall().strftime("%Y-%m-%dT%H:%M:%SZ")

    async def post(self, obj: dict[str, str], kind: str, reason: str, message: str) -> None:
        """A `kind` ("Normal" or "Warning") Event about `obj` (an involvedObject)."""
        namespace, message = obj["namespace"], text.cut(message, text.EVENT)
        key = (namespace, obj.get("uid") or obj["name"], reason, message)
        try:
            posted = self._posted.get(key)
            if posted is not None and self.clock.now() - posted.at >= self.ttl:
                del self._posted[key]  # the API server has dropped it, or is about to
                posted = None
            if posted is not None:
                self._posted.move_to_end(key)
                try:
                    await self.kube.patch_event(namespace, posted.name, {
                        "count": posted.count + 1, "lastTimestamp": self._stamp()})
                    posted.count += 1
                    self._count(reason)
                    return
                except leadership.NotFoundError:
                    del self._posted[key]  # dropped early (a shorter --event-ttl): post anew
            created = await self.kube.create_event(namespace, {
                "metadata": {"generateName": f"{obj['name']}.", "namespace": namespace},
                "involvedObject": obj, "reason": reason, "message": message, "type": kind,
                "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
                "reportingInstance": self.identity, "count": 1,
                "firstTimestamp": self._stamp(), "lastTimestamp": self._stamp()})
            self._posted[key] = _Posted(str(created["metadata"]["name"]), 1, self.clock.now())
            while len(self._posted) > self.max_keys:
                self._posted.popitem(last=False)
            self._count(reason)
        except Exception as exc:  # an Event is worth a log line, never a crash
            log.warning("could not post event %s on %s/%s: %s", reason, namespace,
                        obj["name"], text.error(exc))

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.events_posted.labels(reason).inc()
