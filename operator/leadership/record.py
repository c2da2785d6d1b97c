"""The backend-neutral election record, converted to and from a Lease's ``spec``.

Field semantics follow client-go's ``resourcelock.LeaseLock`` so that Go and Python candidates
can share one Lease:

- ``holderIdentity`` (empty or absent: the lease is free and may be taken at once),
  ``leaseDurationSeconds``, ``acquireTime``, ``renewTime``, ``leaseTransitions`` are written;
  ``strategy`` and ``preferredHolder`` are kept as found.
- MicroTime is written in UTC with exactly six fractional digits and a ``Z``
  (``2006-01-02T15:04:05.000000Z07:00``); the API server rejects other shapes.

Reading is forgiving: a malformed Lease never raises here. `parse_lease` returns the record it
could read plus a list of problems, and `effective_duration` decides how long a holder whose
duration cannot be trusted is waited out: our own TTL, never zero (the safe direction).
"""

from __future__ import annotations

import copy
import datetime
import re
from dataclasses import dataclass, field
from typing import Any

JSONDict = dict[str, Any]

#: ``leaseDurationSeconds`` is an int32 in the Lease API.
MAX_TTL = 2**31 - 1

_MICROTIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"([Zz]|[+-]\d{2}:\d{2})$")


def format_microtime(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with exactly six fractional digits, as the API server's MicroTime wants."""
    if moment.tzinfo is None:
        raise ValueError("format_microtime needs an aware datetime (a naive one is ambiguous)")
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_microtime(text: object) -> datetime.datetime | None:
    """Parse an RFC 3339 time with 0 to 9 fractional digits; None if it is not one."""
    if not isinstance(text, str):
        return None
    m = _MICROTIME.match(text.strip())
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micros = int((m.group(7) or "0").ljust(6, "0")[:6])
    zone = m.group(8)
    if zone in ("Z", "z"):
        tz = datetime.UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = datetime.timezone(sign * datetime.timedelta(hours=int(zone[1:3]),
                                                         minutes=int(zone[4:6])))
    try:
        return datetime.datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
    except ValueError:
        return None


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says about its election. Empty `holder_identity` means free."""

    holder_identity: str = ""
    lease_duration_seconds: int | None = None
    acquire_time: datetime.datetime | None = None
    renew_time: datetime.datetime | None = None
    lease_transitions: int = 0
    strategy: str | None = None
    preferred_holder: str | None = None

    @property
    def is_free(self) -> bool:
        return not self.holder_identity


@dataclass(frozen=True)
class ParsedLease:
    """A Lease as read: its record, the raw spec it came from, and what was wrong with it."""

    record: LeaseRecord
    spec: JSONDict
    problems: list[str] = field(default_factory=list)


def resource_version(lease: JSONDict | None) -> str | None:
    if not lease:
        return None
    rv = (lease.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv else None


def parse_lease(lease: JSONDict | None) -> ParsedLease:
    """Read the election record from a Lease object (a JSON dict); never raises."""
    if lease is None:
        return ParsedLease(LeaseRecord(), {})
    problems: list[str] = []
    spec = lease.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        return ParsedLease(LeaseRecord(), {}, [f"spec is not an object: {spec!r:.80}"])

    holder = spec.get("holderIdentity")
    if holder is None:
        holder = ""
    elif not isinstance(holder, str):
        problems.append(f"holderIdentity is not a string: {holder!r:.80}")
        holder = str(holder)

    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int)):
        problems.append(f"leaseDurationSeconds is not an integer: {duration!r:.80}")
        duration = None
    elif duration is not None and not 0 < duration <= MAX_TTL:
        problems.append(f"leaseDurationSeconds is out of range: {duration}")
        duration = None
    elif duration is None and holder:
        problems.append("leaseDurationSeconds is missing")

    times: dict[str, datetime.datetime | None] = {}
    for key in ("acquireTime", "renewTime"):
        raw = spec.get(key)
        times[key] = parse_microtime(raw)
        if raw is not None and times[key] is None:
            problems.append(f"{key} is not an RFC 3339 time: {raw!r:.80}")
    if holder and spec.get("renewTime") is None:
        problems.append("renewTime is missing")

    transitions = spec.get("leaseTransitions", 0)
    if transitions is None:
        transitions = 0
    if isinstance(transitions, bool) or not isinstance(transitions, int) or transitions < 0:
        problems.append(f"leaseTransitions is not a non-negative integer: {transitions!r:.80}")
        transitions = 0

    strategy = spec.get("strategy")
    preferred = spec.get("preferredHolder")
    record = LeaseRecord(
        holder_identity=holder,
        lease_duration_seconds=duration,
        acquire_time=times["acquireTime"],
        renew_time=times["renewTime"],
        lease_transitions=transitions,
        strategy=strategy if isinstance(strategy, str) else None,
        preferred_holder=preferred if isinstance(preferred, str) else None,
    )
    return ParsedLease(record, spec, problems)


def effective_duration(record: LeaseRecord, fallback_ttl: int) -> int:
    """How long to wait out `record`'s holder: its own duration, or ours when unreadable.

    A holder whose duration is missing, zero, negative or not a number is still a holder: it is
    waited out for `fallback_ttl` (never stolen at once). A huge but valid duration is honoured.
    """
    return record.lease_duration_seconds or fallback_ttl


def build_lease(name: str, spec: JSONDict) -> JSONDict:
    """A new Lease object carrying `spec`."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": spec,
    }


def with_spec_changes(lease: JSONDict, **changes: Any) -> JSONDict:
    """A deep copy of `lease` (keeping resourceVersion, labels, annotations and every spec
    field written by others) with the given spec fields set; a value of None removes a field."""
    updated = copy.deepcopy(lease)
    spec = updated.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    updated["spec"] = spec
    updated.setdefault("apiVersion", "coordination.k8s.io/v1")
    updated.setdefault("kind", "Lease")
    return updated


def acquire_changes(previous: LeaseRecord | None, identity: str, ttl: int,
                    now: datetime.datetime, *, first_transition: int = 0,
                    new_term: bool | None = None) -> JSONDict:
    """Spec fields to write when `identity` takes the lease (or re-takes its own).

    `previous` is None when the Lease is being created: it starts at `first_transition`
    (0, as in client-go, unless a higher count was seen before a deletion); every later change
    of holder (including from free) adds one. `new_term` (default: the holder changes) also
    counts a re-take of a record this process did not write as a change of holder."""
    stamp = format_microtime(now)
    if new_term is None:
        new_term = previous is None or previous.holder_identity != identity
    changes: JSONDict = {
        "holderIdentity": identity,
        "leaseDurationSeconds": ttl,
        "renewTime": stamp,
    }
    if previous is None:
        changes["acquireTime"] = stamp
        changes["leaseTransitions"] = first_transition
    elif new_term:
        changes["acquireTime"] = stamp
        changes["leaseTransitions"] = previous.lease_transitions + 1
    else:
        changes["acquireTime"] = (format_microtime(previous.acquire_time)
                                  if previous.acquire_time else stamp)
        changes["leaseTransitions"] = previous.lease_transitions
    return changes


def renew_changes(now: datetime.datetime) -> JSONDict:
    """Spec fields to write on renewal: only renewTime."""
    return {"renewTime": format_microtime(now)}


def release_changes(previous: LeaseRecord, now: datetime.datetime) -> JSONDict:
    """Spec fields to write on release, as client-go's ReleaseOnCancel: free, 1 s, keep count."""
    stamp = format_microtime(now)
    return {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": stamp,
        "renewTime": stamp,
        "leaseTransitions": previous.lease_transitions,
    }
