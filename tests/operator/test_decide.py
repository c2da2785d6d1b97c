"""decide(): every labelling rule, exactly, on real ExpiryTracker observations."""

from __future__ import annotations

from typing import Any

import pytest

from leadership.testing import ManualClock
from leadership.toolkit import ExpiryTracker, Observation
from leadership_operator import Member, Role, decide, pod_of_holder
from leadership_operator.contract import Labels, valid_lease_name
from leadership_operator.decide import renew_deadline

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


def test_a_holder_is_drained_at_its_renew_deadline_and_expires_at_its_duration(
        clock: ManualClock) -> None:
    seen = observe(clock, lease("web-0"))  # observed at 1000, 15 s: drained at 1010
    leading = decide(seen, PODS, 1009.999)
    assert leading.leader == "web-0" and (leading.drains_at, leading.wakes_at,
                                          leading.expires_at) == (1010, 1010, 1015)
    late = decide(seen, PODS, 1010, confirmed_at=1010)
    assert roles(late)["web-0"] == "stale" and late.leader is None
    assert (late.state, late.wakes_at, late.needs_confirmation, late.delete) == (
        "late", 1015, False, [])
    expired = decide(seen, PODS, 1015, confirmed_at=1015)
    assert roles(expired)["web-0"] == "stale" and expired.state == "expired"
    assert expired.wakes_at is None


def test_each_step_waits_for_a_read_made_at_or_after_it(clock: ManualClock) -> None:
    seen = observe(clock, lease("web-0"))
    for now, confirmed_at in [(1010, None), (1012, 1009.9), (1016, None), (1016, 1009)]:
        verdict = decide(seen, PODS, now, confirmed_at=confirmed_at)
        assert verdict.leader == "web-0" and verdict.needs_confirmation, (now, confirmed_at)
        assert verdict.wakes_at is None  # the read decides what comes next
    # A read made at the drain says nothing of a renewal before the expiry: the holder
    # stays drained (not deleted, not counted expired) until a read made since agrees.
    drained_only = decide(seen, [Member("web-0", delete_on_expiry=True)], 1016,
                          confirmed_at=1012)
    assert (drained_only.state, drained_only.needs_confirmation, drained_only.delete) == (
        "late", True, [])
    assert roles(drained_only)["web-0"] == "stale"


def test_a_renewal_after_the_drain_gives_the_label_back(clock: ManualClock) -> None:
    tracker = ExpiryTracker(clock, fallback_ttl=15)
    tracker.update(lease("web-0"))
    clock.jump(12)
    assert decide(tracker.current, PODS, clock.now(), confirmed_at=1011).state == "late"
    renewed, _ = tracker.update(lease("web-0", renewTime="2026-01-01T00:00:12.000000Z"))
    # Even a read at this very instant agreeing with the renewal: its drain is 10 s away.
    verdict = decide(renewed, PODS, clock.now(), confirmed_at=clock.now())
    assert verdict.leader == "web-0" and verdict.drains_at == 1022
    assert (verdict.state, verdict.needs_confirmation) == ("leading", False)


@pytest.mark.parametrize("declared, drains_at", [
    ("12", 1012), ("14.5", 1014.5), ("15", 1015),
    ("3", 1010),  # shorter than the default is raised to it: still before any successor
])
def test_a_declared_renew_deadline_moves_the_drain(clock: ManualClock, declared: str,
                                                   drains_at: float) -> None:
    members = [Member("web-0", renew_deadline=declared), Member("web-1")]
    verdict = decide(observe(clock, lease("web-0")), members, clock.now())
    assert verdict.drains_at == drains_at and not verdict.problems
    assert decide(observe(clock, lease("web-0")), members, drains_at - 0.001).leader == "web-0"


@pytest.mark.parametrize("declared", ["16", "0", "-1", "nan", "inf", "ten", "", "1e400"])
def test_a_bad_renew_deadline_drains_at_the_expiry_and_is_reported(
        clock: ManualClock, declared: str) -> None:
    members = [Member("web-0", renew_deadline=declared), Member("web-1")]
    verdict = decide(observe(clock, lease("web-0")), members, clock.now())
    assert verdict.drains_at == verdict.expires_at == 1015 and verdict.leader == "web-0"
    assert [(p.reason, p.pod) for p in verdict.problems] == [("BadRenewDeadline", "web-0")]
    assert decide(observe(clock, lease("web-0")), members, 1015,
                  confirmed_at=1015).state == "expired"


def test_only_the_holders_renew_deadline_counts(clock: ManualClock) -> None:
    members = [Member("web-0"), Member("web-1", renew_deadline="bad")]
    verdict = decide(observe(clock, lease("web-0")), members, clock.now())
    assert verdict.drains_at == 1010 and not verdict.problems
    assert renew_deadline(Member("web-1", renew_deadline="12"), 30) == (20, None)


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
    assert verdict.drains_at == 1000 + 400
    assert decide(seen, PODS, 1400, confirmed_at=1400).roles["web-0"] is Role.STALE


@pytest.mark.parametrize("renew_time", ["yesterday", None])
def test_a_garbage_or_missing_renew_time_is_reported_but_expiry_is_unaffected(
        clock: ManualClock, renew_time: Any) -> None:
    verdict = decide(observe(clock, lease("web-0", renewTime=renew_time)), PODS, clock.now())
    assert verdict.leader == "web-0" and verdict.expires_at == 1015
    assert [p.reason for p in verdict.problems] == ["MalformedLease"]


def test_opted_in_holders_are_deleted_when_their_lease_expires(clock: ManualClock) -> None:
    members = [Member("web-0", delete_on_expiry=True), Member("web-1", delete_on_expiry=True)]
    seen = observe(clock, lease("web-0"))
    assert decide(seen, members, 1015, confirmed_at=1015).delete == ["web-0"]
    assert decide(seen, members, 1014, confirmed_at=1014).delete == []


def test_label_keys_follow_the_prefix_and_names_are_checked() -> None:
    labels = Labels("example.com")
    assert (labels.election, labels.role, labels.on_expiry, labels.renew_deadline) == (
        "example.com/election", "example.com/role", "example.com/on-expiry",
        "example.com/renew-deadline-seconds")
    with pytest.raises(ValueError, match="prefix"):
        Labels("Not A Prefix")
    assert valid_lease_name("app") and not valid_lease_name("Bad_Name")
    assert not valid_lease_name("")
