"""What the two HTTP stores share: the Leases path, namespaces, error bodies, watch lines."""

from __future__ import annotations

import json

from ..errors import TransientStoreError, error_for_status
from . import WatchEvent

LEASES_PATH = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


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
