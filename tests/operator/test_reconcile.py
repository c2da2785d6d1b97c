"""The reconciler on FakeKube and a manual clock: the order of label writes, what a failed
write leaves, the standby, strays, expiries, resyncs, and what it logs."""

from __future__ import annotations

import logging

import pytest

import leadership
from leadership.testing import ManualClock
from leadership_operator.testing import FakeKube

from .inside import LABELS, NS, Inside

TTL = 15


async def election(clock: ManualClock, holder: str = "web-0", *, active: bool = True,
                   pods: tuple[str, ...] = ("web-0", "web-1", "web-2")) -> Inside:
    kube = FakeKube(clock)
    kube.put_lease(NS, "web", holder, duration=TTL)
    op = Inside(clock, kube, active=active)
    for pod in pods:
        op.member(pod)
    await op.start()
    return op


async def test_first_labels_then_the_old_leader_off_before_the_new_one_on(
        clock: ManualClock) -> None:
    op = await election(clock)
    assert op.labels_written()[-1] == ("web-0", "leader")  # the leader last, after followers
    assert {op.role(p) for p in ("web-1", "web-2")} == {"follower"}
    op.kube.writes.clear()
    op.kube.put_lease(NS, "web", "web-2", duration=TTL, transitions=1)
    await op.settle()
    assert op.labels_written() == [("web-0", "follower"), ("web-2", "leader")]


async def test_a_failed_write_stops_the_rest_and_is_retried_a_second_later(
        clock: ManualClock) -> None:
    op = await election(clock)
    op.kube.writes.clear()
    op.kube.fail_next("label_pod", leadership.TransientStoreError("API server busy"))
    op.kube.put_lease(NS, "web", "web-2", duration=TTL, transitions=1)
    await op.settle()
    # The old leader's label could not come off: the new one is not given either.
    assert op.labels_written() == []
    assert (op.role("web-0"), op.role("web-2")) == ("leader", "follower")
    await clock.advance(0.999)
    assert op.labels_written() == []
    await clock.advance(0.001)
    assert op.labels_written() == [("web-0", "follower"), ("web-2", "leader")]


async def test_a_standby_writes_nothing_until_it_is_active(clock: ManualClock) -> None:
    op = await election(clock, active=False)
    assert op.kube.writes == []
    op.active = True
    op.reconciler.mark_all()  # what the operator does when its replica becomes active
    await op.settle()
    assert op.role("web-0") == "leader"
    # The election's LeaderElected Event is the active replica's when it happens; one that
    # takes over later does not post it again.
    assert [w for w in op.kube.writes if w[0] == "event"] == []


async def test_a_crashed_leader_is_stale_at_its_expiry_and_events_say_so(
        clock: ManualClock) -> None:
    op = await election(clock)
    await clock.advance(TTL - 0.001)
    assert op.role("web-0") == "leader"
    await clock.advance(0.001)
    assert op.role("web-0") == "stale"
    reasons = [w[2] for w in op.kube.writes if w[0] == "event"]
    assert reasons.count("LeaseExpired") == 2  # on the Lease and on the pod
    assert op.metrics.expiries._value.get() == 1


async def test_strays_lose_their_role_label_and_a_bad_election_label_is_reported_once(
        clock: ManualClock) -> None:
    op = await election(clock)
    stray = op.kube.put_pod(NS, "left-over", {LABELS.role: "leader"})
    op.pod_event("ADDED", stray)
    bad = op.kube.put_pod(NS, "typo", {LABELS.election: "Not_A_Lease"})
    op.pod_event("ADDED", bad)
    await op.settle()
    assert op.role("left-over") is None
    op.pod_event("MODIFIED", bad)  # seen again: no second Event
    await op.settle()
    reasons = [w[2] for w in op.kube.writes if w[0] == "event"]
    assert reasons.count("BadElectionLabel") == 1


async def test_a_resync_puts_back_a_label_someone_changed(clock: ManualClock) -> None:
    op = await election(clock)
    changed = op.kube.put_pod(NS, "web-1", {LABELS.election: "web", LABELS.role: "leader"})
    op.kube.writes.clear()
    op.members.pod_event("MODIFIED", changed)  # seen, but not marked: only a resync looks
    op.reconciler.mark_all()
    await op.settle()
    assert op.labels_written() == [("web-1", "follower")]
    assert op.role("web-0") == "leader"


async def test_every_label_change_is_a_log_line_with_the_reason(
        clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leadership.operator")
    op = await election(clock)
    op.kube.put_lease(NS, "web", "web-1", duration=TTL, transitions=1)
    await op.settle()
    lines = [r.getMessage() for r in caplog.records if "role" in r.getMessage()]
    assert "pod apps/web-0: role leader -> follower (lease apps/web leading, holder web-1)" \
        in lines
    assert "pod apps/web-1: role follower -> leader (lease apps/web leading, holder web-1)" \
        in lines
