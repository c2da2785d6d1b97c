"""What the two HTTP stores share: the Leases path, namespaces, error bodies, watch lines."""

from __future__ import annotations

import json
import re

from ..errors import TransientStoreError, error_for_status
from . import WatchEvent

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LEASES_PATH = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


def check_client(client: object, expected: type, argument: str) -> None:
    if not isinstance(client, expected):
        raise TypeError(f"{argument} must be a {expected.__module__}.{expected.__qualname__}, "
                        f"got {type(client).__name__}")


def validate_timeout(seconds: object, argument: str = "request_timeout") -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"{argument} must be a positive number of seconds, got {seconds!r}")
    return float(seconds)


def validate_namespace(namespace: object) -> str:
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, got {type(namespace).__name__}")
    if not _DNS_LABEL.match(namespace):
        raise ValueError(f"namespace must be a valid DNS label, got {namespace!r}")
    return namespace


def status_message(status: int, body: bytes) -> str:
    try:
        payload = json.loads(body)
        if isinstance(payload, dict) and payload.get("message"):
            return f"HTTP {status}: {payload['message']}"
    except ValueError:
        pass
    return f"HTTP {status}: {body[:200].decode(errors='replace')}"


def decode_watch_line(line: bytes) -> WatchEvent | None:
    """One line of a watch stream; raises the matching StoreError for an ERROR event."""
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise TransientStoreError(f"undecodable watch event: {line[:200]!r}") from exc
    kind, obj = event.get("type"), event.get("object") or {}
    if kind == "ERROR":
        code = int(obj.get("code") or 500)
        raise error_for_status(code, f"watch error {code}: {obj.get('message', '')}")
    if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
        raise TransientStoreError(f"unknown watch event type {kind!r}")
    return WatchEvent(kind, obj)
