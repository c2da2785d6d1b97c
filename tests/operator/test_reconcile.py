"""The reconciler on FakeKube and a manual clock: the order of label writes, what a failed
write leaves, the standby, strays, expiries, resyncs, and what it logs."""

from __future__ import annotations

import asyncio
import logging
import random

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


async def test_a_crashed_leader_is_stale_at_its_renew_deadline_and_events_say_so(
        clock: ManualClock) -> None:
    op = await election(clock)
    await clock.advance(TTL * 2 / 3 - 0.001)
    assert op.role("web-0") == "leader"
    await clock.advance(0.001)  # 10 s without a renewal: it no longer believes it leads
    assert op.role("web-0") == "stale"
    reasons = [w[2] for w in op.kube.writes if w[0] == "event"]
    assert reasons.count("RenewalLate") == 2  # on the Lease and on the pod
    assert "LeaseExpired" not in reasons
    labels = len(op.labels_written())
    await clock.advance(TTL / 3)
    reasons = [w[2] for w in op.kube.writes if w[0] == "event"]
    assert reasons.count("LeaseExpired") == 2 and len(op.labels_written()) == labels
    assert op.metrics.expiries._value.get() == 1
    assert op.metrics.elections.labels("expired")._value.get() == 1
    assert op.metrics.elections.labels("late")._value.get() == 0


async def test_a_drained_leader_that_renews_is_leader_again_at_once(
        clock: ManualClock) -> None:
    op = await election(clock)
    await clock.advance(11)  # late: drained at 10
    assert op.role("web-0") == "stale"
    op.kube.put_lease(NS, "web", "web-0", duration=TTL)  # its renewal, late but in its term
    await op.settle()
    assert op.role("web-0") == "leader" and op.role("web-1") == "follower"
    reasons = [w[2] for w in op.kube.writes if w[0] == "event"]
    assert reasons.count("RenewedAgain") == 1 and "LeaseExpired" not in reasons


async def test_a_declared_renew_deadline_is_the_holders_drain(clock: ManualClock) -> None:
    op = await election(clock)
    pod = op.kube.pods[(NS, "web-0")]
    pod["metadata"].setdefault("annotations", {})[LABELS.renew_deadline] = "12"
    op.pod_event("MODIFIED", pod)
    await op.settle()
    await clock.advance(12 - 0.001)
    assert op.role("web-0") == "leader"  # client-go's holders step down at 10 + 2
    await clock.advance(0.001)
    assert op.role("web-0") == "stale"


async def test_strays_lose_their_role_label_and_a_bad_election_label_is_reported_once(
        clock: ManualClock) -> None:
    op = await election(clock)
    op.kube.put_pod(NS, "left-over", {LABELS.role: "leader"})  # no watch shows it
    await op.operator.resync()  # a listing does
    bad = op.kube.put_pod(NS, "typo", {LABELS.election: "Not_A_Lease"})
    op.pod_event("ADDED", bad)
    await op.settle()
    assert op.role("left-over") is None
    op.pod_event("MODIFIED", bad)  # seen again: no second Event
    await op.operator.resync()  # the stray's label is not written again
    await op.settle()
    reasons = [w[2] for w in op.kube.writes if w[0] == "event"]
    assert reasons.count("BadElectionLabel") == 1
    assert op.labels_written().count(("left-over", None)) == 1
    # Listed no more (it has no role label now): no longer followed; the typo still is.
    assert [m.name for m in op.members.strays()] == ["typo"]


async def test_a_pod_watch_behind_the_server_never_hides_a_leader_label(
        clock: ManualClock) -> None:
    op = await election(clock)
    op.kube.hold_pods()  # from here the cache shows none of the operator's writes
    op.kube.put_lease(NS, "web", "web-1", duration=TTL, transitions=1)
    await op.settle()
    assert op.labels_written()[-2:] == [("web-0", "follower"), ("web-1", "leader")]
    op.kube.writes.clear()
    # The cache still says web-1 is a follower; the operator knows it gave it `leader`.
    op.kube.put_lease(NS, "web", "web-2", duration=TTL, transitions=2)
    await op.settle()
    assert op.labels_written() == [("web-1", "follower"), ("web-2", "leader")]
    op.kube.writes.clear()
    op.reconciler.mark_all()  # nothing is written twice while the watch is behind
    await op.settle()
    assert op.labels_written() == []
    op.kube.release_pods()
    await op.settle()
    assert op.labels_written() == [] and len(op.reconciler.own_writes) == 0
    assert [op.role(p) for p in ("web-0", "web-1", "web-2")] == ["follower", "follower",
                                                                 "leader"]


async def test_a_write_the_watch_skipped_is_taken_away_before_a_new_leader(
        clock: ManualClock) -> None:
    op = await election(clock)
    op.kube.hold_pods()
    op.kube.put_lease(NS, "web", "web-1", duration=TTL, transitions=1)
    await op.settle()
    # The watch shows web-1 at a later version than the write (a status update, say) with
    # its labels as the cache had them: the leader label written may be there or not.
    pod = op.kube.pods[(NS, "web-1")]
    op.pod_event("MODIFIED", {"metadata": {**pod["metadata"], "resourceVersion": "1000",
                                           "labels": {LABELS.election: "web",
                                                      LABELS.role: "follower"}}})
    op.kube.writes.clear()
    op.kube.put_lease(NS, "web", "web-2", duration=TTL, transitions=2)
    await op.settle()
    assert op.labels_written() == [("web-1", "follower"), ("web-2", "leader")]


def test_the_reconciler_never_writes_the_member_cache() -> None:
    import ast
    import inspect

    from leadership_operator import reconcile
    tree = ast.parse(inspect.getsource(reconcile))
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "members"}
    assert used <= {"of", "has", "elections", "strays", "follows", "member", "field_manager"}


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


async def opted_in(clock: ManualClock) -> Inside:
    kube = FakeKube(clock)
    kube.put_lease(NS, "web", "web-0", duration=TTL)
    op = Inside(clock, kube)
    pod = kube.put_pod(NS, "web-0", {LABELS.election: "web"},
                       annotations={LABELS.on_expiry: "delete-pod"})
    op.pod_event("ADDED", pod)
    op.member("web-1")
    await op.start()
    assert op.role("web-0") == "leader"
    return op


async def test_an_opted_in_stale_pod_is_deleted_at_its_expiry(clock: ManualClock) -> None:
    op = await opted_in(clock)
    await clock.advance(TTL)
    # Labelled stale first (that write moved its resourceVersion on: the deletion carries
    # the new one), then deleted.
    writes = [w for w in op.kube.writes if w[0] in ("label", "delete")]
    assert writes[-2:] == [("label", NS, "web-0", "stale"), ("delete", NS, "web-0")]
    assert (NS, "web-0") not in op.kube.pods


async def test_a_replacement_pod_of_the_same_name_is_never_the_one_deleted(
        clock: ManualClock) -> None:
    op = await opted_in(clock)
    # A StatefulSet replaced the pod (same name, a new uid) before the operator heard of it.
    op.kube.pods[(NS, "web-0")]["metadata"]["uid"] = "uid-of-the-replacement"
    await clock.advance(TTL)
    assert ("delete", NS, "web-0") not in op.kube.writes  # the uid precondition held
    assert (NS, "web-0") in op.kube.pods


async def test_a_pod_that_leaves_its_election_loses_its_role_label_and_is_forgotten(
        clock: ManualClock) -> None:
    op = await election(clock)
    # The pod watch selects election members server-side: a pod whose election label is
    # removed arrives as DELETED, though it still exists, carrying its previous state (the
    # last one that matched). The operator looks it up.
    before = op.kube.pods[(NS, "web-2")]
    before_event = {"metadata": {**before["metadata"],
                                 "labels": dict(before["metadata"]["labels"])}}
    op.kube.put_pod(NS, "web-2", {LABELS.role: "follower"})  # what the server now has
    op.pod_event("DELETED", before_event)
    await op.settle()
    assert op.role("web-2") is None
    assert len(op.members) == 2  # cleaned, then forgotten: nothing more will be heard of it
    # A pod really deleted: looked up, not found, no write to it.
    writes = list(op.kube.writes)
    gone = op.kube.pods.pop((NS, "web-1"))
    op.pod_event("DELETED", gone)
    await op.settle()
    assert not [w for w in op.kube.writes[len(writes):] if w[1:3] == (NS, "web-1")]
    assert len(op.members) == 1


async def test_a_failed_look_up_of_a_departed_pod_is_retried(clock: ManualClock) -> None:
    op = await election(clock)
    before = op.kube.pods[(NS, "web-2")]
    before_event = {"metadata": {**before["metadata"],
                                 "labels": dict(before["metadata"]["labels"])}}
    op.kube.put_pod(NS, "web-2", {LABELS.role: "follower"})
    op.kube.fail_next("find_pod", leadership.TransientStoreError("API server busy"))
    op.pod_event("DELETED", before_event)
    await op.settle()
    assert op.role("web-2") == "follower"
    await clock.advance(1)
    assert op.role("web-2") is None


class TopOfTheJitter(random.Random):
    """The back-off's jitter at its top: each delay (just under) twice the last."""

    def random(self) -> float:
        return 1 - 1e-9


DENIED = leadership.PermissionDeniedError(
    'pods "web-0" is forbidden: User "system:serviceaccount:x:op" cannot patch resource "pods" '
    'in API group "" in the namespace "apps"', verb="patch", resource="pods")


async def test_a_write_rbac_refuses_backs_off_is_said_once_and_fails_health(
        clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    kube = FakeKube(clock)
    kube.put_lease(NS, "web", "web-0", duration=600)
    kube.fail_next("label_pod", DENIED, times=6)
    op = Inside(clock, kube, rng=TopOfTheJitter())
    op.member("web-0")
    await op.start()
    # With the jitter at its top: retried after 1, 2, 4, 8, 16 s (not twice a second
    # forever), said once, counted.
    for delay in (1, 2, 4, 8, 16):
        await clock.advance(delay)
    assert op.reconciler.denied is not None and "patch on pods" in op.reconciler.denied
    assert op.metrics.permission_denied.labels("patch", "pods")._value.get() == 6
    assert op.role("web-0") is None
    said = [r for r in caplog.records if "cannot label pods" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR
    assert [w[2] for w in kube.writes if w[0] == "event"].count("PermissionDenied") == 1
    await clock.advance(32)  # granted at last: the next try labels, and health recovers
    assert op.role("web-0") == "leader" and op.reconciler.denied is None


async def test_a_role_label_written_by_another_manager_is_reported_and_put_right(
        clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    op = await election(clock)
    assert op.metrics.foreign_role_writes._value.get() == 0  # its own writes are no news
    # A second operator (or kubectl) labels web-1 leader.
    pod = op.kube.put_pod(NS, "web-1", {LABELS.election: "web", LABELS.role: "leader"},
                          writer="leadership-operator/default/leadership-operator")
    op.pod_event("MODIFIED", pod)
    await op.settle()
    assert op.metrics.foreign_role_writes._value.get() == 1
    assert ("event", NS, "ForeignRoleWrite") in op.kube.writes
    said = [r.getMessage() for r in caplog.records if "written by" in r.getMessage()]
    assert len(said) == 1 and "leadership-operator/default/leadership-operator" in said[0]
    assert op.role("web-1") == "follower"  # put right


async def test_members_of_a_lease_that_never_appears_are_told_after_the_grace(
        clock: ManualClock) -> None:
    from leadership_operator.report import LEASE_NOT_FOUND_GRACE

    kube = FakeKube(clock)
    op = Inside(clock, kube)
    op.member("web-0", election="wbe")  # a typo
    op.member("web-1", election="wbe")
    await op.start()
    assert op.role("web-0") == "follower"
    await clock.advance(LEASE_NOT_FOUND_GRACE - 0.001)
    assert ("event", NS, "LeaseNotFound") not in kube.writes
    await clock.advance(0.001)
    assert [w for w in kube.writes if w[0] == "event"] == [("event", NS, "LeaseNotFound")] * 2
    await clock.advance(600)  # once per pod, not at every look
    assert len([w for w in kube.writes if w[0] == "event"]) == 2


async def test_a_stray_deleted_meanwhile_is_forgotten_and_the_others_still_cleaned(
        clock: ManualClock) -> None:
    op = await election(clock, active=False)  # a standby: it sees strays but cleans none
    for name in ("ghost", "left-over"):
        op.pod_event("ADDED", op.kube.put_pod(NS, name, {LABELS.role: "leader"}))
    await op.settle()
    del op.kube.pods[(NS, "ghost")]  # deleted while this replica was a standby: no event
    op.kube.fail_next("label_pod", leadership.NotFoundError('pods "ghost" not found',
                                                             status=404))
    op.active = True
    op.reconciler.mark_all()
    await op.settle()
    assert op.role("left-over") is None
    before = len(op.kube.writes)
    for _ in range(5):  # later looks write nothing more
        op.reconciler.mark_all()
        await op.settle()
    assert len(op.kube.writes) == before


async def test_a_refused_deletion_is_said_and_leaves_health_alone(clock: ManualClock) -> None:
    op = await opted_in(clock)
    op.kube.fail_next("delete_pod", leadership.PermissionDeniedError(
        'pods "web-0" is forbidden: cannot delete resource "pods"', verb="delete",
        resource="pods"), times=100)  # refused each time it is tried
    await clock.advance(TTL)
    assert op.role("web-0") == "stale" and (NS, "web-0") in op.kube.pods
    assert ("event", NS, "CannotDeletePod") in op.kube.writes
    assert op.reconciler.denied is None


async def test_labels_found_at_start_are_no_foreign_write(clock: ManualClock) -> None:
    kube = FakeKube(clock)
    kube.put_lease(NS, "web", "web-0", duration=TTL)
    op = Inside(clock, kube)
    # Labelled by an earlier version of the operator, under another manager name.
    op.pod_event("ADDED", kube.put_pod(NS, "web-0", {LABELS.election: "web",
                                                     LABELS.role: "leader"},
                                       writer="OpenAPI-Generator/37.0.2/python"))
    await op.start()
    assert op.metrics.foreign_role_writes._value.get() == 0


async def test_resyncs_list_the_unwatched_pods_at_once_then_every_period(
        clock: ManualClock) -> None:
    op = await election(clock)
    op.kube.put_pod(NS, "left-over", {LABELS.role: "leader"})
    resyncs = asyncio.ensure_future(op.operator.resyncs(60))
    try:
        await op.settle()
        assert op.role("left-over") is None  # at once, not a period later
        op.kube.put_pod(NS, "later", {LABELS.role: "follower"})
        await clock.advance(59.999)
        assert op.role("later") == "follower"
        await clock.advance(0.001)
        await op.settle()
        assert op.role("later") is None
    finally:
        resyncs.cancel()
