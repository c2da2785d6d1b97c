"""The operator's inside, assembled once: what `app.operate` runs under kopf and what the
unit tests run on `FakeKube` and a manual clock are the same object.

An `Operator` holds the member pods (written by the pod watch through `pod_event`, and by
the listing of strays no watch shows), the opted-in Services (written by the Service watch
through `service_event`), the Lease cache (written by its own watch), the Events and the
reconciler, wired as data flows: watches and listings -> caches -> work queue ->
reconcile -> writes; the reconciler writes no cache. It knows nothing of kopf, of the
operator's own Lease (`is_active` says whether this replica may write) or of HTTP.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any

import leadership
from leadership import Clock

from . import text
from .contract import Labels
from .decide import MAX_DURATION
from .events import Events
from .kube import Kube
from .leases import LeaseCache
from .metrics import OperatorMetrics
from .pods import Members
from .reconcile import Reconciler
from .services import Services

log = logging.getLogger("leadership.operator")


class Operator:
    """The operator's inside for `scopes` (namespaces; None: all of them)."""

    def __init__(self, kube: Kube, scopes: list[str | None], clock: Clock, *,
                 labels: Labels, identity: str, field_manager: str,
                 is_active: Callable[[], bool], metrics: OperatorMetrics | None = None,
                 max_duration: int = MAX_DURATION, rng: random.Random | None = None) -> None:
        self.kube, self.scopes, self.clock, self.labels = kube, scopes, clock, labels
        self.metrics = metrics or OperatorMetrics()
        self.members = Members(labels, field_manager=field_manager)
        self.services = Services(labels)
        # Only Leases a member pod names are elections: the others are never kept.
        self.leases = LeaseCache(kube, scopes, clock, metrics=self.metrics,
                                 on_change=lambda key: self.reconciler.mark(key),
                                 wanted=self.members.has, max_duration=max_duration)
        self.events = Events(kube, identity, clock, self.metrics)
        self.reconciler = Reconciler(self.leases, self.members, self.services, kube,
                                     self.events, labels, clock, self.metrics, is_active,
                                     scopes=scopes, max_duration=max_duration, rng=rng)

    def pod_event(self, kind: str, pod: dict[str, Any]) -> None:
        """One event of the pod watch (kopf's, or the initial listing's)."""
        self.reconciler.pods_changed(self.members.pod_event(kind, pod))

    def service_event(self, kind: str, service: dict[str, Any]) -> None:
        """One event of the Service watch (kopf's)."""
        self.reconciler.services_changed(self.services.service_event(kind, service))

    async def list_members(self) -> None:
        """The member pods and opted-in Services before the first decision, so that no
        holder briefly matches "no member pod", and no leader endpoint waits, while the
        watches catch up. The unwatched pods come in with the first of `resyncs`: they
        decide nothing, so the start does not wait for them."""
        for namespace in self.scopes:
            for pod in await self.kube.list_pods(namespace, self.labels.election):
                pod.setdefault("metadata", {}).setdefault("namespace", namespace)
                self.reconciler.pods_changed(self.members.pod_event("ADDED", pod))
            services = await self.kube.list_services(namespace, self.labels.election)
            for service in services:
                service.setdefault("metadata", {}).setdefault("namespace", namespace)
            self.reconciler.services_changed(self.services.listed(namespace, services))

    async def list_unwatched(self) -> None:
        """The pods with a role label and no election label: no watch shows them (a pod
        labelled by hand, or one whose election label went while the operator was away)."""
        selector = f"{self.labels.role},!{self.labels.election}"
        for namespace in self.scopes:
            pods = await self.kube.list_pods(namespace, selector)
            for pod in pods:
                pod.setdefault("metadata", {}).setdefault("namespace", namespace)
            self.reconciler.pods_changed(self.members.listed(namespace, pods))

    async def resync(self, *, everything: bool = True) -> None:
        """Look at everything again: the unwatched pods listed anew, and (`everything`)
        every election."""
        try:
            await self.list_unwatched()
        except (TimeoutError, OSError, leadership.StoreError) as exc:
            log.warning("listing the pods with a role label and no election failed: %s; "
                        "trying again at the next resync", text.error(exc))
        if everything:
            self.reconciler.mark_all()

    async def resyncs(self, every: float) -> None:
        """Until cancelled: the unwatched pods at once, then a `resync` every `every` s."""
        await self.resync(everything=False)
        while True:
            await self.clock.sleep_until(self.clock.now() + every)
            await self.resync()

    def runs(self) -> list[Coroutine[Any, Any, None]]:
        """What runs until cancelled: the Lease watches and the reconciler."""
        return [self.leases.run(), self.reconciler.run()]
