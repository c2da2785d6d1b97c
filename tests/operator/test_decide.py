"""decide(): every labelling rule, exactly, on real ExpiryTracker observations."""

from __future__ import annotations

from typing import Any

import pytest

from leadership.testing import ManualClock
from leadership.toolkit import ExpiryTracker, Observation
from leadership_operator import Member, Role, decide, pod_of_holder
from leadership_operator.contract import Labels, valid_lease_name

PODS = [Member("web-0"), Member("web-1"), Member("web-2")]


def lease(holder: str | None = "web-0", duration: Any = 15, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"leaseDurationSeconds": duration,
                            "renewTime": "2026-01-01T00:00:00.000000Z", **spec}
    if holder is not None:
        body["holderIdentity"] = holder
    return {"metadata": {"name": "app", "resourceVersion": "1"}, "spec": body}


def observe(clock: ManualClock, *states: dict[str, Any] | None) -> Observation:
    tracker = ExpiryTracker(clock, fallback_ttl=15)
    observation = None
    for state in states:
        observation, _ = tracker.update(state)
    assert observation is not None
    return observation


def roles(verdict: Any) -> dict[str, str]:
    return {name: role.value for name, role in verdict.roles.items()}


def test_a_live_holder_leads_and_the_others_follow(clock: ManualClock) -> None:
    verdict = decide(observe(clock, lease("web-1")), PODS, clock.now())
    assert roles(verdict) == {"web-0": "follower", "web-1": "leader", "web-2": "follower"}
    assert verdict.state == "leading" and verdict.expires_at == 1015 and not verdict.problems


def test_client_go_identities_name_the_pod_before_the_underscore(clock: ManualClock) -> None:
    holder = "web-2_6f1c6c8e-2c5a-4d7e-9d3a-0b7f0e0c1a2b"
    assert decide(observe(clock, lease(holder)), PODS, clock.now()).leader == "web-2"
    assert pod_of_holder("web-2", ["web-2", "web-20"]) == ["web-2"]
    assert pod_of_holder("web-20_x", ["web-2", "web-20"]) == ["web-20"]


def test_an_expiry_keeps_the_label_until_a_fresh_read_confirms_it(clock: ManualClock) -> None:
    seen = observe(clock, lease("web-0"))
    unconfirmed = decide(seen, PODS, 1015)
    assert unconfirmed.leader == "web-0" and unconfirmed.needs_confirmation
    confirmed = decide(seen, PODS, 1015, expiry_confirmed=True)
    assert roles(confirmed)["web-0"] == "stale" and confirmed.leader is None
    assert confirmed.state == "expired" and confirmed.delete == []


def test_a_release_and_a_missing_lease_leave_no_leader_at_once(clock: ManualClock) -> None:
    held = lease("web-0")
    released = lease("", duration=1)
    assert decide(observe(clock, held, released), PODS, clock.now()).state == "free"
    assert set(roles(decide(observe(clock, held, released), PODS, clock.now())).values()) == {
        "follower"}
    deleted = observe(clock, held, None)  # candidates wait the holder out; the label goes now
    assert decide(deleted, PODS, clock.now()).state == "missing"
    assert decide(None, PODS, clock.now()).leader is None


def test_a_holder_matching_no_member_labels_nobody_and_says_so(clock: ManualClock) -> None:
    verdict = decide(observe(clock, lease("other-pod")), PODS, clock.now())
    assert verdict.leader is None and verdict.state == "unmatched"
    assert [p.reason for p in verdict.problems] == ["HolderNotFound"]


def test_a_holder_matching_two_members_labels_nobody_and_says_so(clock: ManualClock) -> None:
    twins = [Member("web-0", uid="a"), Member("web-0", uid="b"), Member("web-1")]
    verdict = decide(observe(clock, lease("web-0")), twins, clock.now())
    assert verdict.leader is None and [p.reason for p in verdict.problems] == ["AmbiguousHolder"]


@pytest.mark.parametrize("duration", [0, -5, "15", None])
def test_a_bad_duration_is_waited_out_for_the_fallback_and_reported(
        clock: ManualClock, duration: Any) -> None:
    verdict = decide(observe(clock, lease("web-0", duration)), PODS, clock.now())
    assert verdict.leader == "web-0" and verdict.expires_at == 1015
    assert [p.reason for p in verdict.problems] == ["MalformedLease"]


def test_an_absurd_duration_is_judged_as_the_maximum_and_reported(clock: ManualClock) -> None:
    seen = observe(clock, lease("web-0", 2**31 - 1))
    verdict = decide(seen, PODS, clock.now())
    assert verdict.expires_at == 1000 + 600
    assert "LeaseDurationTooLong" in [p.reason for p in verdict.problems]
    assert decide(seen, PODS, 1600, expiry_confirmed=True).roles["web-0"] is Role.STALE


@pytest.mark.parametrize("renew_time", ["yesterday", None])
def test_a_garbage_or_missing_renew_time_is_reported_but_expiry_is_unaffected(
        clock: ManualClock, renew_time: Any) -> None:
    verdict = decide(observe(clock, lease("web-0", renewTime=renew_time)), PODS, clock.now())
    assert verdict.leader == "web-0" and verdict.expires_at == 1015
    assert [p.reason for p in verdict.problems] == ["MalformedLease"]


def test_opted_in_holders_are_deleted_when_their_lease_expires(clock: ManualClock) -> None:
    members = [Member("web-0", delete_on_expiry=True), Member("web-1", delete_on_expiry=True)]
    seen = observe(clock, lease("web-0"))
    assert decide(seen, members, 1015, expiry_confirmed=True).delete == ["web-0"]
    assert decide(seen, members, 1014).delete == []


def test_label_keys_follow_the_prefix_and_names_are_checked() -> None:
    labels = Labels("example.com")
    assert (labels.election, labels.role, labels.on_expiry) == (
        "example.com/election", "example.com/role", "example.com/on-expiry")
    with pytest.raises(ValueError, match="prefix"):
        Labels("Not A Prefix")
    assert valid_lease_name("app") and not valid_lease_name("Bad_Name")
    assert not valid_lease_name("")
