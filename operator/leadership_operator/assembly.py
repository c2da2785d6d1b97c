"""The operator's inside, assembled once: what `app.operate` runs under kopf and what the
unit tests run on `FakeKube` and a manual clock are the same object.

An `Operator` holds the member pods (written by the pod watch through `pod_event`), the
Lease cache (written by its own watch), the Events and the reconciler, wired as data flows:
watches -> caches -> work queue -> reconcile -> writes. It knows nothing of kopf, of the
operator's own Lease (`is_active` says whether this replica may write) or of HTTP.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from typing import Any

from leadership import Clock

from .contract import Labels
from .decide import MAX_DURATION
from .events import Events
from .kube import Kube
from .leases import LeaseCache
from .metrics import OperatorMetrics
from .pods import Members
from .reconcile import Reconciler


class Operator:
    """The operator's inside for `scopes` (namespaces; None: all of them)."""

    def __init__(self, kube: Kube, scopes: list[str | None], clock: Clock, *,
                 labels: Labels, identity: str, field_manager: str,
                 is_active: Callable[[], bool], metrics: OperatorMetrics | None = None,
                 max_duration: int = MAX_DURATION, rng: random.Random | None = None) -> None:
        self.kube, self.scopes, self.clock, self.labels = kube, scopes, clock, labels
        self.metrics = metrics or OperatorMetrics()
        self.members = Members(labels, field_manager=field_manager)
        # Only Leases a member pod names are elections: the others are never kept.
        self.leases = LeaseCache(kube, scopes, clock, metrics=self.metrics,
                                 on_change=lambda key: self.reconciler.mark(key),
                                 wanted=self.members.has)
        self.events = Events(kube, identity, clock, self.metrics)
        self.reconciler = Reconciler(self.leases, self.members, kube, self.events, labels,
                                     clock, self.metrics, is_active,
                                     max_duration=max_duration, rng=rng)

    def pod_event(self, kind: str, pod: dict[str, Any]) -> None:
        """One event of the pod watch (kopf's, or the initial listing's)."""
        self.reconciler.pods_changed(self.members.pod_event(kind, pod))

    async def list_members(self) -> None:
        """The member pods (and the strays) before the first decision, so that no holder
        briefly matches "no member pod" while the pod watch catches up."""
        for namespace in self.scopes:
            for selector in (self.labels.election, self.labels.role):
                for pod in await self.kube.list_pods(namespace, selector):
                    pod.setdefault("metadata", {}).setdefault("namespace", namespace)
                    self.members.pod_event("ADDED", pod)

    def runs(self) -> list[Coroutine[Any, Any, None]]:
        """What runs until cancelled: the Lease watches and the reconciler."""
        return [self.leases.run(), self.reconciler.run()]
