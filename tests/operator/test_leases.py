"""The Lease cache on FakeKube and a manual clock: how it lists, watches, re-watches,
re-lists, backs off, and confirms a drain or an expiry, at exact times."""

from __future__ import annotations

import leadership
from leadership.testing import ManualClock
from leadership_operator.leases import SUSPECT_GRACE
from leadership_operator.reconcile import RECONFIRM
from leadership_operator.testing import FakeKube

from .inside import NS, Inside

TTL = 15
#: the default renew deadline of a TTL-second Lease: the holder is drained then.
DRAIN = 10


async def inside_with_election(clock: ManualClock) -> Inside:
    kube = FakeKube(clock)
    kube.put_lease(NS, "web", "web-0", duration=TTL)
    op = Inside(clock, kube)
    op.member("web-0")
    op.member("web-1")
    await op.start()
    return op


async def test_a_watch_the_server_ends_is_opened_again_from_where_it_was_without_a_list(
        clock: ManualClock) -> None:
    op = await inside_with_election(clock)
    assert (op.kube.lists, op.metrics.watches_opened._value.get()) == (1, 1)
    op.kube.end_watches()
    await clock.advance(1)
    op.kube.put_lease(NS, "web", "web-1", duration=TTL, transitions=1)  # while re-watching
    await op.settle()
    assert op.kube.lists == 1  # no re-list: the thousands of Leases are not fetched again
    assert op.metrics.watches_opened._value.get() == 2
    assert op.leases.observation((NS, "web")).record.holder_identity == "web-1"  # type: ignore[union-attr]
    assert op.role("web-1") == "leader"
    await op.stop()


async def test_a_410_re_lists(clock: ManualClock) -> None:
    op = await inside_with_election(clock)
    op.kube.silence()
    await clock.advance(2)
    op.kube.put_lease(NS, "web", "web-1", duration=TTL, transitions=1)  # unseen
    op.kube.compact()  # the version the watch was at is gone
    op.kube.end_watches()
    await clock.advance(2)
    assert op.kube.lists == 2
    assert op.metrics.watch_restarts._value.get() == 1
    assert op.role("web-1") == "leader"  # the re-list brought the change the watch missed
    await op.stop()


async def test_a_failed_list_is_retried_after_a_backoff_on_the_clock(clock: ManualClock) -> None:
    kube = FakeKube(clock)
    kube.fail_next("list_leases", leadership.TransientStoreError("API server down"))
    op = Inside(clock, kube)
    await op.start()
    assert kube.lists == 0 and not op.leases.synced
    await clock.advance(0.19)  # the first backoff is 0.2 s
    assert kube.lists == 0
    await clock.advance(0.02)
    assert kube.lists == 1 and op.leases.synced
    await op.stop()


async def test_a_drain_and_an_expiry_are_each_acted_on_when_a_fresh_read_agrees(
        clock: ManualClock) -> None:
    op = await inside_with_election(clock)
    reads = op.kube.reads
    await clock.advance(DRAIN - 0.001)
    assert op.role("web-0") == "leader" and op.kube.reads == reads
    await clock.advance(0.001)
    assert op.kube.reads == reads + 1  # the confirming read, at the renew deadline
    assert op.role("web-0") == "stale" and op.role("web-1") == "follower"
    assert op.metrics.drains._value.get() == 1 and op.metrics.expiries._value.get() == 0
    await clock.advance(TTL - DRAIN - 0.001)
    assert op.kube.reads == reads + 1 and op.metrics.expiries._value.get() == 0
    await clock.advance(0.001)
    assert op.kube.reads == reads + 2  # a read of its own at the expiry: the first is old
    assert op.role("web-0") == "stale" and op.metrics.expiries._value.get() == 1
    await op.stop()


async def test_a_write_that_leaves_the_record_alone_does_not_undo_a_drain(
        clock: ManualClock) -> None:
    op = await inside_with_election(clock)
    await clock.advance(DRAIN)
    assert op.role("web-0") == "stale"
    op.kube.silence()
    op.kube.touch_lease(NS, "web")  # someone labels the Lease: a new version, no renewal
    await clock.advance(TTL - DRAIN)  # the expiry's read finds the version the watch missed
    assert op.role("web-0") == "stale"  # taken in; the drain still stands: no renewal since
    assert op.metrics.expiries._value.get() == 0  # that read disagreed with the watch
    await clock.advance(RECONFIRM)  # the next one agrees with what was taken in
    assert op.role("web-0") == "stale" and op.metrics.expiries._value.get() == 1
    assert op.labels_written().count(("web-0", "leader")) == 1  # never given back
    await op.stop()


async def test_a_read_sent_before_the_expiry_is_sent_again_after_it(clock: ManualClock) -> None:
    op = await inside_with_election(clock)
    op.kube.read_seconds = 5.5  # a slow API server: the drain's read comes back after 15 s
    op.kube.hold_pods()  # no pod event of the label writes looks at the election again
    reads = op.kube.reads
    await clock.advance(DRAIN + 5.5)
    assert op.kube.reads == reads + 1 and op.role("web-0") == "stale"
    assert op.metrics.expiries._value.get() == 0  # that read was sent before the expiry
    await clock.advance(RECONFIRM)  # one more, sent after it
    assert op.kube.reads == reads + 2 and op.metrics.expiries._value.get() == 0
    await clock.advance(5.5)
    assert op.metrics.expiries._value.get() == 1
    op.kube.release_pods()
    await op.stop()


async def test_an_expiry_a_fresh_read_contradicts_is_not_acted_on_and_a_silent_watch_restarts(
        clock: ManualClock) -> None:
    op = await inside_with_election(clock)  # the cache saw web-0's Lease at T
    op.kube.silence()  # a half-open watch: the holder's renewals no longer arrive
    await clock.advance(4)
    op.kube.put_lease(NS, "web", "web-0", duration=TTL)  # renewed at T+4, unseen
    await clock.advance(DRAIN - 4 + 0.001)  # T+10: late, as far as the watch tells
    assert op.role("web-0") == "leader"  # the confirming read showed the renewal: no stale
    lists = op.kube.lists
    await clock.advance(SUSPECT_GRACE - 0.002)
    assert op.kube.lists == lists  # suspected at T+10, given its grace
    await clock.advance(0.002)
    assert op.kube.lists == lists + 1  # silent throughout: restarted, re-listed at T+15
    assert op.role("web-0") == "leader"
    await op.stop()


async def test_a_suspected_watch_that_delivers_anything_is_left_alone(
        clock: ManualClock) -> None:
    op = await inside_with_election(clock)
    op.kube.silence()
    await clock.advance(4)
    op.kube.put_lease(NS, "web", "web-0", duration=TTL)  # unseen by the watch
    await clock.advance(DRAIN - 4 + 0.001)  # the read contradicts the watch: suspected
    lists, opened = op.kube.lists, op.metrics.watches_opened._value.get()
    # The server ends the silent watch; the next one, from its version, delivers: it was
    # behind, not dead.
    op.kube.end_watches()
    await clock.advance(1)
    op.kube.bookmark()
    await clock.advance(SUSPECT_GRACE)
    assert op.kube.lists == lists  # re-watched from its version, never re-listed
    assert op.metrics.watches_opened._value.get() == opened + 1
    assert op.metrics.watch_restarts._value.get() == 0
    await op.stop()


async def test_silent_scopes_name_a_watch_that_heard_nothing_for_the_limit(
        clock: ManualClock) -> None:
    op = await inside_with_election(clock)
    op.kube.silence()
    await clock.advance(179)
    assert op.leases.silent_scopes(180) == []
    await clock.advance(2)
    assert op.leases.silent_scopes(180) == ["all namespaces"]
    await op.stop()


async def test_a_lease_no_pod_is_a_member_of_is_never_kept_however_big(
        clock: ManualClock) -> None:
    op = await inside_with_election(clock)
    writes = list(op.kube.writes)
    for i in range(20):
        op.kube.put_lease(NS, f"hostile-{i}", "x" * 1_000_000, duration=TTL)
    await op.settle()
    assert op.leases.keys() == [(NS, "web")]  # decoded and dropped
    assert op.kube.writes == writes  # nothing written about them either
    await op.stop()


async def test_a_holder_no_pod_can_have_is_kept_short_and_reported_bounded(
        clock: ManualClock) -> None:
    kube = FakeKube(clock)
    kube.put_lease(NS, "web", "\x1b[31m" + "y" * 1_000_000, duration=TTL)
    op = Inside(clock, kube)
    op.member("web-0")
    await op.start()
    observation = op.leases.observation((NS, "web"))
    assert observation is not None
    assert observation.record.holder_identity == "<malformed holderIdentity of 1000005 characters>"
    events = [e for e in kube.events.values() if e["reason"] == "MalformedLease"]
    assert len(events) == 1 and len(events[0]["message"]) < 300
    assert "1000005 characters" in events[0]["message"]
    assert op.role("web-0") == "follower"  # matches no member: nobody leads
    await op.stop()


async def test_a_lease_is_read_when_a_pod_joins_its_election_and_forgotten_when_none_is_left(
        clock: ManualClock) -> None:
    kube = FakeKube(clock)
    kube.put_lease(NS, "later", "later-0", duration=TTL)
    op = Inside(clock, kube)
    await op.start()
    assert op.leases.keys() == []
    reads = kube.reads
    op.member("later-0", election="later")
    await op.settle()
    assert kube.reads == reads + 1 and op.role("later-0") == "leader"
    op.pod_event("DELETED", kube.pods.pop((NS, "later-0")))
    await op.settle()
    assert op.leases.keys() == []
    await op.stop()


async def test_a_renewal_by_the_holder_is_nothing_to_reconcile_and_its_drain_still_counts(
        clock: ManualClock) -> None:
    op = await inside_with_election(clock)
    changes: list[tuple[str, str]] = []
    mark = op.reconciler.mark
    op.leases.on_change = lambda key: (changes.append(key), mark(key))  # type: ignore[method-assign]
    for _ in range(20):  # renewals every 2 s, past the first term's end (t = 15)
        await clock.advance(2)
        op.kube.put_lease(NS, "web", "web-0", duration=TTL)
        await op.settle()
    assert changes == []  # 20 renewals: not one reconcile of their own
    # One wake-up pending for the election, not one per renewal (the heap stays small).
    assert op.reconciler.queue.timers() == 1
    await clock.advance(DRAIN - 0.001)  # the last renewal (t = 40) counts: drained at 50
    assert op.role("web-0") == "leader"
    await clock.advance(0.001)
    assert op.role("web-0") == "stale"
    op.kube.put_lease(NS, "web", "web-0", duration=TTL)  # a renewal after the drain
    await op.settle()
    assert changes == [(NS, "web")] and op.role("web-0") == "leader"  # back at once
    op.kube.put_lease(NS, "web", "web-0", duration=2 * TTL)  # a longer term: decided anew
    await op.settle()
    op.kube.put_lease(NS, "web", "web-1", duration=2 * TTL, transitions=1)  # a new holder
    await op.settle()
    assert len(changes) == 3
    assert op.role("web-1") == "leader" and op.role("web-0") == "follower"
    await op.stop()


async def test_a_renewal_after_the_drain_of_a_clamped_duration_is_decided_at_once(
        clock: ManualClock) -> None:
    kube = FakeKube(clock)
    kube.put_lease(NS, "web", "web-0", duration=2**31 - 1)  # judged as 600 s: drained at 400
    op = Inside(clock, kube)
    op.member("web-0")
    op.member("web-1")
    await op.start()
    await clock.advance(400)
    assert op.role("web-0") == "stale"
    kube.put_lease(NS, "web", "web-0", duration=2**31 - 1)
    await op.settle()
    assert op.role("web-0") == "leader"
    await op.stop()
