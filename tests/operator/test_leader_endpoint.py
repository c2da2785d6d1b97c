"""The leader endpoint on FakeKube and a manual clock: one write per handover, a drain before
any successor, never two addresses; what a standby, a resync, a Service that leaves the route
or one with a selector get."""

from __future__ import annotations

import asyncio

import leadership
from leadership.testing import ManualClock
from leadership_operator.routes import RELEASE_GRACE
from leadership_operator.testing import FakeKube

from .inside import LABELS, NS, Inside

TTL = 15
SLICE = "web-leader-leader"
IPS = {"web-0": "10.1.0.10", "web-1": "10.1.0.11", "web-2": "10.1.0.12"}
LEADER = {LABELS.role: "leader"}  # what a pod event of the labelled leader carries


async def election(clock: ManualClock, holder: str = "web-0", *,
                   active: bool = True) -> Inside:
    kube = FakeKube(clock)
    kube.put_lease(NS, "web", holder, duration=TTL)
    op = Inside(clock, kube, active=active)
    for pod, ip in IPS.items():
        op.member(pod, ip=ip)
    op.service("web-leader")
    await op.start()
    return op


def slice_writes(op: Inside) -> list[list[str] | None]:
    return [w[3] for w in op.kube.writes if w[0] == "slice"]


async def test_a_handover_is_one_write_that_replaces_the_address(clock: ManualClock) -> None:
    op = await election(clock)
    assert slice_writes(op) == [[IPS["web-0"]]]
    assert op.metrics.slice_writes._value.get() == 1
    op.kube.writes.clear()
    op.kube.put_lease(NS, "web", "web-2", duration=TTL, transitions=1)
    await op.settle()
    assert slice_writes(op) == [[IPS["web-2"]]]  # one write, never two addresses
    # ...before the labels (whose writes change the slices of Services selecting them).
    kinds = [(w[0], w[2]) for w in op.kube.writes if w[0] in ("label", "slice")]
    assert kinds == [("slice", SLICE), ("label", "web-0"), ("label", "web-2")]
    for _ in range(3):  # renewals change nothing in the slice: no write
        await clock.advance(2)
        op.kube.put_lease(NS, "web", "web-2", duration=TTL, transitions=1)
        await op.settle()
    assert slice_writes(op) == [[IPS["web-2"]]]


async def test_a_late_holder_leaves_the_endpoint_at_its_renew_deadline_and_returns(
        clock: ManualClock) -> None:
    op = await election(clock)
    await clock.advance(TTL * 2 / 3 - 0.001)
    assert op.kube.addresses(NS, SLICE) == [IPS["web-0"]]
    await clock.advance(0.001)  # the holder's own step-down: out before any successor
    assert op.kube.addresses(NS, SLICE) == []
    op.kube.put_lease(NS, "web", "web-0", duration=TTL)  # it renews, late but in its term
    await op.settle()
    assert op.kube.addresses(NS, SLICE) == [IPS["web-0"]]
    assert slice_writes(op) == [[IPS["web-0"]], [], [IPS["web-0"]]]


async def test_a_release_empties_it_and_the_next_holder_fills_it(clock: ManualClock) -> None:
    op = await election(clock)
    op.kube.put_lease(NS, "web", "", duration=TTL)
    await op.settle()
    assert op.kube.addresses(NS, SLICE) == []
    op.kube.put_lease(NS, "web", "web-1", duration=TTL, transitions=1)
    await op.settle()
    assert op.kube.addresses(NS, SLICE) == [IPS["web-1"]]


async def test_the_leader_pods_readiness_and_address_are_followed(clock: ManualClock) -> None:
    op = await election(clock)
    op.member("web-0", ip=IPS["web-0"], ready=False, kind="MODIFIED")
    await op.settle()
    conditions = op.kube.slices[(NS, SLICE)]["endpoints"][0]["conditions"]
    assert conditions == {"ready": False, "serving": False, "terminating": False}
    op.member("web-0", ip="10.1.0.99", kind="MODIFIED")  # restarted elsewhere, say
    await op.settle()
    assert op.kube.addresses(NS, SLICE) == ["10.1.0.99"]


async def test_the_last_member_gone_leaves_an_empty_endpoint(clock: ManualClock) -> None:
    op = await election(clock)
    for pod in IPS:
        op.pod_event("DELETED", op.kube.pods.pop((NS, pod)))
    await op.settle()
    assert op.kube.addresses(NS, SLICE) == []


async def test_a_standby_writes_no_slice_until_it_is_active_and_a_resync_applies_again(
        clock: ManualClock) -> None:
    op = await election(clock, active=False)
    assert op.kube.slices == {}
    op.active = True
    op.reconciler.mark_all()
    await op.settle()
    assert op.kube.addresses(NS, SLICE) == [IPS["web-0"]]
    del op.kube.slices[(NS, SLICE)]  # deleted by hand, say
    await op.operator.resync()
    await op.settle()
    assert op.kube.addresses(NS, SLICE) == [IPS["web-0"]]


async def test_a_failed_slice_write_is_retried_and_the_labels_still_move(
        clock: ManualClock) -> None:
    op = await election(clock)
    op.kube.fail_next("apply_slice", leadership.TransientStoreError("API server busy"),
                      times=2)  # the first try, and the one the label writes' echo brings
    op.kube.put_lease(NS, "web", "web-1", duration=TTL, transitions=1)
    await op.settle()
    assert op.role("web-1") == "leader"
    assert op.kube.addresses(NS, SLICE) == [IPS["web-0"]]
    await clock.advance(0.999)
    assert op.kube.addresses(NS, SLICE) == [IPS["web-0"]]
    await clock.advance(1.5)  # the back-off, jittered
    assert op.kube.addresses(NS, SLICE) == [IPS["web-1"]]


async def test_a_failed_label_write_does_not_keep_the_endpoint_on_a_drained_holder(
        clock: ManualClock) -> None:
    op = await election(clock)
    op.kube.fail_next("label_pod", leadership.TransientStoreError("API server busy"))
    await clock.advance(TTL * 2 / 3)
    assert op.role("web-0") == "leader"  # the label write failed...
    assert op.kube.addresses(NS, SLICE) == []  # ...the endpoint is drained all the same


async def test_a_service_that_leaves_the_route_loses_its_slice(clock: ManualClock) -> None:
    op = await election(clock)
    op.service("web-leader", None)  # its election label removed
    await op.settle()
    assert (NS, SLICE) not in op.kube.slices
    op.kube.put_lease(NS, "web", "web-1", duration=TTL, transitions=1)
    await op.settle()
    assert (NS, SLICE) not in op.kube.slices  # not written again


async def test_a_service_with_a_selector_gets_nothing_and_is_reported(
        clock: ManualClock) -> None:
    op = await election(clock)
    op.service("selected", selector={"app": "web"})
    await op.settle()
    assert (NS, "selected-leader") not in op.kube.slices
    reasons = [w[2] for w in op.kube.writes if w[0] == "event"]
    assert reasons.count("LeaderServiceHasSelector") == 1


async def test_a_bad_election_label_on_a_service_is_reported(clock: ManualClock) -> None:
    op = await election(clock)
    op.service("odd", "Not A Lease!")
    await op.settle()
    reasons = [w[2] for w in op.kube.writes if w[0] == "event"]
    assert reasons.count("BadElectionLabel") == 1
    assert (NS, "odd-leader") not in op.kube.slices


async def test_the_endpoint_follows_each_holder_in_turn_through_crashes_and_releases(
        clock: ManualClock) -> None:
    op = await election(clock)
    holders = ["web-1", "", "web-2", "web-0", "web-1"]
    for i, holder in enumerate(holders):
        op.kube.put_lease(NS, "web", holder, duration=TTL, transitions=i + 1)
        await op.settle()
        await clock.advance(TTL + 1)  # every holder crashes: drained, then expired
    written = slice_writes(op)
    assert all(addresses is not None and len(addresses) <= 1 for addresses in written)
    assert [a for a in written if a] == [[IPS[h]] for h in ["web-0", *filter(None, holders)]]


async def test_a_leader_being_deleted_stays_until_its_successor_replaces_it_in_one_write(
        clock: ManualClock) -> None:
    op = await election(clock)
    op.member("web-0", ip=IPS["web-0"], ready=False, deleting=True, kind="MODIFIED",
              **LEADER)
    await op.settle()
    assert slice_writes(op) == [[IPS["web-0"]]]  # kept as written: no write at the deletion
    op.kube.put_lease(NS, "web", "", duration=TTL)  # its sidecar releases, last
    await op.settle()
    assert slice_writes(op) == [[IPS["web-0"]]]  # waits for the successor...
    assert op.role("web-0") is None  # ...while the labels move at once
    await clock.advance(0.05)
    op.kube.put_lease(NS, "web", "web-1", duration=TTL, transitions=1)
    await op.settle()
    assert slice_writes(op) == [[IPS["web-0"]], [IPS["web-1"]]]  # one write, web-0 to web-1


async def test_without_a_successor_a_released_leader_being_deleted_leaves_after_the_grace(
        clock: ManualClock) -> None:
    op = await election(clock)
    op.member("web-0", ip=IPS["web-0"], deleting=True, kind="MODIFIED", **LEADER)
    op.kube.put_lease(NS, "web", "", duration=TTL)
    await op.settle()
    await clock.advance(RELEASE_GRACE - 0.001)
    assert op.kube.addresses(NS, SLICE) == [IPS["web-0"]]
    await clock.advance(0.001)
    assert op.kube.addresses(NS, SLICE) == []


async def test_a_pod_being_deleted_only_loses_a_leader_label_and_gains_none(
        clock: ManualClock) -> None:
    op = await election(clock)
    op.member("web-0", ip=IPS["web-0"], deleting=True, kind="MODIFIED", **LEADER)
    op.member("web-2", ip=IPS["web-2"], deleting=True, kind="MODIFIED",
              **{LABELS.role: "follower"})
    op.kube.writes.clear()
    op.kube.put_lease(NS, "web", "", duration=TTL)  # web-0 releases on its way out
    await op.settle()
    assert op.labels_written() == [("web-0", None)]  # joins no Service, not even followers
    assert op.role("web-2") == "follower"  # a follower on its way out: left alone
    op.kube.put_lease(NS, "web", "web-1", duration=TTL, transitions=1)
    await op.settle()
    assert op.labels_written() == [("web-0", None), ("web-1", "leader")]


async def test_a_service_that_leaves_while_its_slice_is_written_loses_it_after(
        clock: ManualClock) -> None:
    op = await election(clock)
    apply_slice = op.kube.apply_slice

    async def apply_while_the_label_goes(namespace: str, body: dict[str, object]) -> None:
        if op.kube.services[(NS, "web-leader")]["metadata"]["labels"]:
            op.service("web-leader", None)  # its label removed while the write is out...
            for _ in range(10):  # ...and its slice deleted before the write lands
                await asyncio.sleep(0)
        await apply_slice(namespace, body)

    op.kube.apply_slice = apply_while_the_label_goes  # type: ignore[method-assign]
    op.kube.put_lease(NS, "web", "web-1", duration=TTL, transitions=1)
    await op.settle()
    assert (NS, SLICE) not in op.kube.slices


async def test_a_service_that_gains_a_selector_loses_its_slice(clock: ManualClock) -> None:
    op = await election(clock)
    op.service("web-leader", selector={"app": "web"}, kind="MODIFIED")
    await op.settle()
    assert (NS, SLICE) not in op.kube.slices  # the EndpointSlice controller serves it now


async def test_a_service_back_while_its_slice_is_deleted_gets_it_again(
        clock: ManualClock) -> None:
    op = await election(clock)
    delete_slice = op.kube.delete_slice

    async def delete_while_it_comes_back(namespace: str, name: str) -> None:
        await delete_slice(namespace, name)
        op.service("web-leader")  # labelled again while the delete was out

    op.kube.delete_slice = delete_while_it_comes_back  # type: ignore[method-assign]
    op.service("web-leader", None)
    await op.settle()
    assert op.kube.addresses(NS, SLICE) == [IPS["web-0"]]


async def test_slices_of_ours_whose_service_is_no_route_are_swept_at_start_and_resync(
        clock: ManualClock) -> None:
    kube = FakeKube(clock)
    kube.put_lease(NS, "web", "web-0", duration=TTL)
    # Left by a replica that was not active when its Service lost the label.
    kube.slices[(NS, "gone-leader")] = {"metadata": {"name": "gone-leader", "labels": {
        "kubernetes.io/service-name": "gone",
        "endpointslice.kubernetes.io/managed-by": "leadership-operator"}}}
    kube.slices[(NS, "theirs-abcde")] = {"metadata": {"name": "theirs-abcde", "labels": {
        "kubernetes.io/service-name": "theirs",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}}}
    op = Inside(clock, kube)
    op.member("web-0", ip=IPS["web-0"])
    op.service("web-leader")
    await op.start()
    assert set(kube.slices) == {(NS, SLICE), (NS, "theirs-abcde")}  # ours alone, swept
    kube.slices[(NS, "later-leader")] = {"metadata": {"name": "later-leader", "labels": {
        "kubernetes.io/service-name": "later",
        "endpointslice.kubernetes.io/managed-by": "leadership-operator"}}}
    await op.operator.resync()
    await op.settle()
    assert (NS, "later-leader") not in kube.slices


async def test_one_failing_slice_write_does_not_stop_the_others(clock: ManualClock) -> None:
    op = await election(clock)
    op.service("web-leader-b")
    await op.settle()
    op.kube.fail_next("apply_slice", leadership.TransientStoreError("API server busy"))
    op.kube.put_lease(NS, "web", "web-2", duration=TTL, transitions=1)
    await op.settle()
    assert op.kube.addresses(NS, "web-leader-b-leader") == [IPS["web-2"]]
    await clock.advance(2.5)  # the back-off: the first one too
    assert op.kube.addresses(NS, SLICE) == [IPS["web-2"]]
