"""Leader election for Python on Kubernetes Leases: a port of docker/leadership.

The public surface is re-exported here; see docs/library.md. The client-library stores are
imported lazily, so ``import leadership`` loads neither ``kubernetes`` nor ``pykube``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import sync
from .candidate import Candidate, Fence, Term
from .clock import Clock, SystemClock, wait_until
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
from .observer import ExpiryTracker, LeaseObserver, Observation
from .record import LeaseRecord, format_microtime, parse_lease, parse_microtime
from .stores import WATCH_SECONDS, LeaseStore, WatchEvent
from .stores.memory import MemoryLeaseStore
from .timing import Timing, backoff
from .validation import default_identity, is_dns_label, is_dns_subdomain, pod_identity

if TYPE_CHECKING:
    from .stores.kubeapi import KubeApi
    from .stores.kubernetes import KubernetesLeaseStore
    from .stores.pykube import PykubeLeaseStore

__version__ = "0.1.0"

_LAZY = {
    "KubeApi": ".stores.kubeapi",
    "KubernetesLeaseStore": ".stores.kubernetes",
    "PykubeLeaseStore": ".stores.pykube",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'leadership' has no attribute {name!r}")


__all__ = [
    "WATCH_SECONDS",
    "Candidate",
    "CandidateMetrics",
    "Clock",
    "ConflictError",
    "DuplicateIdentityError",
    "ExpiryTracker",
    "FatalStoreError",
    "Fence",
    "Follower",
    "KubeApi",
    "KubernetesLeaseStore",
    "LeadershipError",
    "LeaseObserver",
    "LeaseRecord",
    "LeaseStore",
    "MemoryLeaseStore",
    "NotFoundError",
    "Observation",
    "PermissionDeniedError",
    "PykubeLeaseStore",
    "StoreError",
    "SystemClock",
    "Term",
    "Timing",
    "TransientStoreError",
    "WatchEvent",
    "WatchExpiredError",
    "backoff",
    "default_identity",
    "describe_error",
    "format_microtime",
    "is_dns_label",
    "is_dns_subdomain",
    "parse_lease",
    "parse_microtime",
    "pod_identity",
    "sync",
    "wait_until",
]
