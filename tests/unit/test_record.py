"""The election record and MicroTime, in and out."""

from __future__ import annotations

import datetime

import pytest

from leadership.record import (
    LeaseRecord,
    acquire_changes,
    format_microtime,
    parse_lease,
    parse_microtime,
    release_changes,
)

UTC = datetime.UTC


@pytest.mark.parametrize("moment, text", [
    (datetime.datetime(2026, 11, 26, 20, 0, 0, 0, tzinfo=UTC), "2026-11-26T20:00:00.000000Z"),
    (datetime.datetime(2026, 11, 26, 20, 0, 0, 5, tzinfo=UTC), "2026-11-26T20:00:00.000005Z"),
    (datetime.datetime(2026, 11, 26, 21, 0, 0, 123456,
                       tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
     "2026-11-26T20:00:00.123456Z"),
])
def test_microtime_has_six_digits_and_utc(moment: datetime.datetime, text: str) -> None:
    assert format_microtime(moment) == text


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        format_microtime(datetime.datetime(2026, 1, 1))


@pytest.mark.parametrize("text, micros", [
    ("2026-11-26T20:00:00Z", 0), ("2026-11-26T20:00:00.5Z", 500000),
    ("2026-11-26T20:00:00.123Z", 123000), ("2026-11-26T20:00:00.123456789Z", 123456),
    ("2026-11-26T21:00:00.000001+01:00", 1),
])
def test_microtime_parsing_accepts_what_other_clients_write(text: str, micros: int) -> None:
    parsed = parse_microtime(text)
    assert parsed is not None and parsed.microsecond == micros
    assert parsed.astimezone(UTC).hour == 20


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01T00:00:00Z", "", None, 17,
                                  "2026-11-26 20:00:00"])
def test_unparsable_times_are_none(text: object) -> None:
    assert parse_microtime(text) is None


def test_acquire_counts_transitions_like_client_go() -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    assert acquire_changes(None, "a", 15, now)["leaseTransitions"] == 0  # a new Lease
    free = LeaseRecord(holder_identity="", lease_transitions=3)
    assert acquire_changes(free, "a", 15, now)["leaseTransitions"] == 4
    mine = LeaseRecord(holder_identity="a", lease_transitions=3,
                       acquire_time=datetime.datetime(2025, 1, 1, tzinfo=UTC))
    again = acquire_changes(mine, "a", 15, now)
    assert again["leaseTransitions"] == 3
    assert again["acquireTime"] == "2025-01-01T00:00:00.000000Z"


def test_release_frees_for_one_second_and_keeps_the_count() -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    changes = release_changes(LeaseRecord("a", 15, lease_transitions=7), now)
    assert changes["holderIdentity"] == "" and changes["leaseDurationSeconds"] == 1
    assert changes["leaseTransitions"] == 7


def test_parse_reports_problems_without_raising() -> None:
    parsed = parse_lease({"spec": {"holderIdentity": "x", "leaseDurationSeconds": True,
                                   "renewTime": "soon", "leaseTransitions": -1}})
    assert parsed.record.holder_identity == "x"
    assert parsed.record.lease_duration_seconds is None
    assert parsed.record.lease_transitions == 0
    assert len(parsed.problems) == 3


def test_forbidden_is_transient_only_for_a_verb_granted_before() -> None:
    from leadership import FatalStoreError, PermissionDeniedError, TransientStoreError
    from leadership.errors import error_for_status, request_verb

    denied_get = ('leases.coordination.k8s.io "x" is forbidden: User "u" cannot get resource '
                  '"leases" in API group "coordination.k8s.io" in the namespace "n"')
    denied = error_for_status(403, denied_get)
    assert isinstance(denied, PermissionDeniedError) and isinstance(denied, FatalStoreError)
    assert (denied.verb, denied.resource) == ("get", "leases.coordination.k8s.io")
    assert type(error_for_status(401, "unauthorized")) is FatalStoreError
    after = error_for_status(403, denied_get, authorized_verbs={"get", "update"})
    assert type(after) is TransientStoreError and after.status == 403
    assert "after an API server restart" in str(after)
    denied_create = denied_get.replace("cannot get", "cannot create")
    refused = error_for_status(403, denied_create, authorized_verbs={"get", "update"})
    assert type(refused) is PermissionDeniedError  # never granted: create-on-update after a
    assert refused.verb == "create"  # deletion
    unsaid = error_for_status(403, "forbidden")
    assert type(unsaid) is PermissionDeniedError and (unsaid.verb, unsaid.resource) == ("", "")
    assert type(error_for_status(401, "unauthorized", authorized_verbs={"get"})) is (
        TransientStoreError)
    assert [request_verb("GET"), request_verb("GET", watch=True), request_verb("PUT"),
            request_verb("POST")] == ["get", "watch", "update", "create"]
