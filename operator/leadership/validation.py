"""Every check of a caller's argument, in one place.

Each validator returns the value it accepts (normalised where that is harmless) and raises
`TypeError` for a value of the wrong type or `ValueError` for a wrong value, with a message
that names the argument, so a misconfiguration fails at construction and says where.
"""

from __future__ import annotations

import math
import os
import re
import socket
import uuid

from .clock import Clock
from .record import MAX_TTL
from .stores import LeaseStore

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def is_dns_subdomain(value: object) -> bool:
    """Whether `value` can name a Lease, a namespace's object or a label prefix (RFC 1123
    subdomain: lowercase letters, digits, '-' and '.', at most 253 characters)."""
    return isinstance(value, str) and 0 < len(value) <= 253 and bool(_DNS_SUBDOMAIN.match(value))


def is_dns_label(value: object) -> bool:
    """Whether `value` can name a namespace (RFC 1123 label, at most 63 characters)."""
    return isinstance(value, str) and bool(_DNS_LABEL.match(value))


def pod_identity() -> str:
    """This pod's name: ``POD_NAME`` (the downward API), else the host name (which is the pod's
    name in a pod). The identity of one candidate per pod, such as the sidecar's."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def default_identity() -> str:
    """``<pod>_<random uuid>``, client-go's convention: unique per process, not per pod.

    The pod name is `pod_identity()`. The suffix keeps several processes in one pod (uvicorn
    or gunicorn workers) from sharing one identity, and therefore one leadership; the
    operator still finds the pod from the prefix.
    """
    return f"{pod_identity()}_{uuid.uuid4()}"


def validate_key(key: object, argument: str = "key") -> str:
    """A Lease name: a DNS subdomain."""
    if not isinstance(key, str):
        raise TypeError(f"{argument} must be a str (the Lease name), got {type(key).__name__}")
    if not is_dns_subdomain(key):
        raise ValueError(f"{argument} must be a valid DNS subdomain name (lowercase letters, "
                         f"digits, '-' and '.', at most 253 characters), got {key!r}")
    return key


def validate_identity(node: object, argument: str = "node") -> str:
    """A holder identity; None means `default_identity()`."""
    if node is None:
        node = default_identity()
    if not isinstance(node, str):
        raise TypeError(f"{argument} must be a str identity, got {type(node).__name__}")
    if not node.strip():
        raise ValueError(f"{argument} must be a non-empty identity, got {node!r}")
    return node


def validate_namespace(namespace: object, argument: str = "namespace") -> str:
    if not isinstance(namespace, str):
        raise TypeError(f"{argument} must be a str, got {type(namespace).__name__}")
    if not is_dns_label(namespace):
        raise ValueError(f"{argument} must be a valid DNS label, got {namespace!r}")
    return namespace


def validate_ttl(ttl: object, argument: str = "ttl") -> int:
    """A positive whole number of seconds (an int, or an integral float), at most int32."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"{argument} must be a whole number of seconds, got {type(ttl).__name__}")
    if isinstance(ttl, float) and not (math.isfinite(ttl) and ttl.is_integer()):
        raise ValueError(f"{argument} must be a whole number of seconds, got {ttl!r}")
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"{argument} must be between 1 and {MAX_TTL} seconds, got {ttl!r}")
    return int(ttl)


def validate_seconds(value: object, argument: str, *, allow_zero: bool = False) -> float:
    """A finite, positive (or, with `allow_zero`, non-negative) number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{argument} must be a {kind} number of seconds, got {value!r}")
    return float(value)


def check_clock(clock: object, argument: str = "clock") -> Clock | None:
    """None (the system clock) or a `Clock`."""
    if clock is not None and not isinstance(clock, Clock):
        raise TypeError(f"{argument} must be a Clock (now, wall, sleep_until), "
                        f"got {type(clock).__name__}")
    return clock


def check_store(store: object, argument: str = "store") -> LeaseStore:
    """Raise `TypeError` naming `argument` unless `store` implements `LeaseStore`."""
    if not isinstance(store, LeaseStore):
        raise TypeError(
            f"{argument} must be a LeaseStore (KubernetesLeaseStore, PykubeLeaseStore, "
            f"MemoryLeaseStore, or any object with namespace, get, create, replace and watch), "
            f"got {type(store).__name__}")
    return store


def check_client(client: object, expected: type, argument: str) -> None:
    """`client` must be an instance of the client library's class `expected`."""
    if not isinstance(client, expected):
        raise TypeError(f"{argument} must be a {expected.__module__}.{expected.__qualname__}, "
                        f"got {type(client).__name__}")
