"""The operator's inside, the very `Operator` that `app.operate` builds, on `FakeKube` and a
manual clock: for the unit tests of the Lease cache, the reconciler and the Events."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from leadership.testing import ManualClock
from leadership_operator.assembly import Operator
from leadership_operator.contract import Labels, field_manager
from leadership_operator.metrics import OperatorMetrics
from leadership_operator.testing import FakeKube

NS = "apps"
LABELS = Labels()
MANAGER = field_manager("leadership-system", "leadership-operator")


@dataclass
class Inside:
    clock: ManualClock
    kube: FakeKube
    active: bool = True
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: the work queue's jitter (None: a seeded one, so a run replays exactly).
    rng: random.Random | None = None

    def __post_init__(self) -> None:
        self.kube.field_manager = MANAGER
        self.kube.election_key = LABELS.election  # the pod watch shows election members only
        self.operator = Operator(self.kube, [None], self.clock, labels=LABELS,
                                 identity="operator-0", field_manager=MANAGER,
                                 is_active=lambda: self.active, metrics=self.metrics,
                                 rng=self.rng or random.Random(0))
        self.members, self.leases = self.operator.members, self.operator.leases
        self.events, self.reconciler = self.operator.events, self.operator.reconciler
        self.kube.watch_pods(self.pod_event)

    def member(self, name: str, election: str = "web", *, ip: str | None = None,
               ready: bool = True, deleting: bool = False, kind: str = "ADDED",
               **labels: str) -> None:
        """A pod in the election `election`, and the pod event kopf would deliver; with
        `ip`, running there with a container port ``http`` 8080 (Ready or not, being
        deleted or not)."""
        spec = status = None
        if ip is not None:
            spec = {"nodeName": "node-1", "containers": [
                {"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]}
            status = {"podIP": ip, "podIPs": [{"ip": ip}], "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}
        pod = self.kube.put_pod(NS, name, {LABELS.election: election, **labels},
                                spec=spec, status=status)
        if deleting:
            pod["metadata"]["deletionTimestamp"] = "2026-12-04T00:00:00Z"
            self.kube.pods[(NS, name)]["metadata"]["deletionTimestamp"] = "2026-12-04T00:00:00Z"
        self.pod_event(kind, pod)

    def service(self, name: str, election: str | None = "web", *, kind: str = "ADDED",
                **spec: object) -> None:
        """A Service opted into `election`'s leader endpoint (None: its label removed), and
        the event the Service watch would deliver."""
        labels = {LABELS.election: election} if election is not None else {}
        body = self.kube.put_service(NS, name, labels, **spec)  # type: ignore[arg-type]
        self.operator.service_event(kind if election is not None else "DELETED", body)

    def pod_event(self, kind: str, pod: dict[str, object]) -> None:
        self.operator.pod_event(kind, pod)

    def role(self, name: str) -> str | None:
        return self.kube.role(NS, name, LABELS.role)

    def labels_written(self) -> list[tuple[str, str | None]]:
        return [(w[2], w[3]) for w in self.kube.writes if w[0] == "label"]

    async def start(self) -> None:
        self.tasks = [asyncio.ensure_future(run) for run in self.operator.runs()]
        await self.settle()

    async def settle(self) -> None:
        await self.clock.settle()
        await self.reconciler.idle()
        await self.clock.settle()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
