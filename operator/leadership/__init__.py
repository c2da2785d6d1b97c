"""Leader election for Python on Kubernetes Leases: a port of docker/leadership.

The public surface is re-exported here; see docs/library.md. What tools built on the library
(the operator, `leadership status`) use beside it is in `leadership.toolkit`. The
client-library stores are imported lazily, so ``import leadership`` loads neither
``kubernetes`` nor ``pykube``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import sync
from .candidate import Candidate, Fence, Term
from .clock import Clock, SystemClock
from .errors import (
    ConflictError,
    DuplicateIdentityError,
    FatalStoreError,
    LeadershipError,
    NotFoundError,
    PermissionDeniedError,
    StoreError,
    TransientStoreError,
    WatchExpiredError,
    describe_error,
)
from .follower import Follower
from .metrics import CandidateMetrics
from .stores import LeaseStore
from .stores.memory import MemoryLeaseStore
from .timing import Timing
from .validation import default_identity, pod_identity

if TYPE_CHECKING:
    from .stores.kubernetes import KubernetesLeaseStore
    from .stores.pykube import PykubeLeaseStore

__version__ = "0.1.0"

_LAZY = {
    "KubernetesLeaseStore": ".stores.kubernetes",
    "PykubeLeaseStore": ".stores.pykube",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'leadership' has no attribute {name!r}")


__all__ = [
    "Candidate",
    "CandidateMetrics",
    "Clock",
    "ConflictError",
    "DuplicateIdentityError",
    "FatalStoreError",
    "Fence",
    "Follower",
    "KubernetesLeaseStore",
    "LeadershipError",
    "LeaseStore",
    "MemoryLeaseStore",
    "NotFoundError",
    "PermissionDeniedError",
    "PykubeLeaseStore",
    "StoreError",
    "SystemClock",
    "Term",
    "Timing",
    "TransientStoreError",
    "WatchExpiredError",
    "default_identity",
    "describe_error",
    "pod_identity",
    "sync",
]
