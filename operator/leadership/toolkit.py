"""The parts of the library that tools built on it use, beside the face (`leadership`).

An app that elects a leader needs `leadership.Candidate`, `leadership.Follower`, a store and
the errors. A tool that follows many Leases at once (this project's operator, `leadership
status`) needs the pieces those are made of: the expiry rule on its own (`ExpiryTracker`,
`Observation`), the Lease record and its parsing, the single way to the API server
(`KubeApi`), the jittered back-off and the clock's wait. They live here, documented and kept
as stable as the face, so that the face stays small. `tests/unit/test_packaging.py` checks
that the operator package imports the library through these two modules only.

``import leadership.toolkit`` loads no client library either: `KubeApi` is imported when
first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .clock import wait_until
from .observer import ExpiryTracker, LeaseObserver, Observation
from .record import LeaseRecord, format_microtime, parse_lease, parse_microtime
from .stores import WATCH_SECONDS, WatchEvent
from .timing import RENEW_DEADLINE_RATIO, backoff
from .validation import is_dns_label, is_dns_subdomain

if TYPE_CHECKING:
    from .stores.kubeapi import KubeApi


def __getattr__(name: str) -> Any:
    if name == "KubeApi":
        from .stores.kubeapi import KubeApi

        return KubeApi
    raise AttributeError(f"module 'leadership.toolkit' has no attribute {name!r}")


__all__ = [
    "RENEW_DEADLINE_RATIO",
    "WATCH_SECONDS",
    "ExpiryTracker",
    "KubeApi",
    "LeaseObserver",
    "LeaseRecord",
    "Observation",
    "WatchEvent",
    "backoff",
    "format_microtime",
    "is_dns_label",
    "is_dns_subdomain",
    "parse_lease",
    "parse_microtime",
    "wait_until",
]
