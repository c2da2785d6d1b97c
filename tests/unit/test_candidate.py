"""The election logic on MemoryLeaseStore and a ManualClock: exact values at exact times.

ttl=15 throughout, so renew_interval=5, renew_deadline=10, resign_grace=5.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from leadership import (
    Candidate,
    DuplicateIdentityError,
    FatalStoreError,
    MemoryLeaseStore,
    TransientStoreError,
)
from leadership.testing import FaultyStore, ManualClock, Recorder

KEY = "lock"


def spec(store: MemoryLeaseStore) -> dict[str, object]:
    lease = store.peek(KEY)
    assert lease is not None
    return lease["spec"]  # type: ignore[no-any-return]


def candidate(store: object, node: str, clock: ManualClock, **kw: object) -> Candidate:
    return Candidate(store, KEY, node, ttl=15, clock=clock, **kw)  # type: ignore[arg-type]


async def leader_then_follower(a: Candidate, b: Candidate,
                               clock: ManualClock) -> tuple[Recorder, Recorder]:
    """Start `a` (which takes the free Lease at once), then `b`; return their recorders."""
    ra = Recorder(a, clock).start()
    await clock.settle()
    rb = Recorder(b, clock).start()
    await clock.settle()
    return ra, rb


async def test_stream_is_false_then_true_then_false_on_stop(clock: ManualClock,
                                                            store: MemoryLeaseStore) -> None:
    a = candidate(store, "a", clock)
    rec = Recorder(a, clock).start()
    await clock.settle()
    assert rec.values == [False, True]
    assert a.is_leader and a.fencing_token == 0
    s = spec(store)
    assert (s["holderIdentity"], s["leaseDurationSeconds"], s["leaseTransitions"]) == ("a", 15, 0)
    assert s["acquireTime"] == s["renewTime"] == "2026-01-01T00:16:40.000000Z"

    await a.stop()
    await clock.settle()
    assert rec.values == [False, True, False] and rec.finished and rec.error is None
    assert not a.is_leader and a.fencing_token is None
    s = spec(store)
    assert (s["holderIdentity"], s["leaseDurationSeconds"], s["leaseTransitions"]) == ("", 1, 0)


async def test_leader_renews_every_interval_from_its_cache_without_reading(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a = candidate(store, "a", clock)
    Recorder(a, clock).start()
    await clock.settle()
    before = dict(store.requests)
    await clock.advance(30)
    assert store.requests["replace"] - before.get("replace", 0) == 6  # every 5 s
    assert store.requests["get"] == before["get"] == 1  # the observer's one initial read
    assert spec(store)["renewTime"] == "2026-01-01T00:17:10.000000Z"
    await a.stop()


async def test_follower_takes_over_with_one_write_after_a_release(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a, b = candidate(store, "a", clock), candidate(store, "b", clock)
    ra = Recorder(a, clock).start()
    await clock.settle()
    rb = Recorder(b, clock).start()
    await clock.advance(7)
    assert rb.values == [False]
    writes = store.requests["replace"]
    await a.stop()
    await clock.settle()
    assert ra.values == [False, True, False]
    assert rb.values == [False, True] and rb.times[-1] == ra.times[-1] == 1007
    assert store.requests["replace"] == writes + 2  # a's release, then b's acquisition
    s = spec(store)
    assert (s["holderIdentity"], s["leaseTransitions"]) == ("b", 1)
    assert b.fencing_token == 1
    await b.stop()


async def test_failed_renewals_step_down_before_any_follower_may_take_over(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    partitioned = FaultyStore(store)
    a, b = candidate(partitioned, "a", clock), candidate(store, "b", clock)
    ra = Recorder(a, clock).start()
    await clock.settle()
    rb = Recorder(b, clock).start()
    await clock.advance(5)  # a's renewal at 1005 succeeds; b sees it at 1005
    partitioned.fail["replace"] = TransientStoreError("connection refused")
    partitioned.fail["get"] = TransientStoreError("connection refused")
    overlap = []
    for _ in range(200):  # 1005 .. 1030 in 1/8 s steps
        await clock.advance(0.125)
        if a.is_leader and b.is_leader:
            overlap.append(clock.now())
    assert overlap == []
    assert ra.values == [False, True, False] and ra.times[-1] == 1015  # 1005 + renew_deadline
    assert rb.values == [False, True] and rb.times[-1] == 1020  # 1005 + ttl
    assert spec(store)["leaseTransitions"] == 1
    await a.stop()
    await b.stop()


async def test_a_hung_renewal_still_steps_down_at_the_deadline(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    hung = FaultyStore(store)
    a = candidate(hung, "a", clock)
    rec = Recorder(a, clock).start()
    await clock.settle()
    hung.hang.add("replace")
    await clock.advance(9.9)
    assert a.is_leader and rec.values == [False, True]
    await clock.advance(0.1)
    assert not a.is_leader and rec.values == [False, True, False] and rec.times[-1] == 1010
    hung.heal()
    await clock.settle()
    # The write that was cut off never landed; the lease still names a, so a takes it back.
    assert rec.values == [False, True, False, True]
    await a.stop()


async def test_an_acquisition_answered_in_time_counts_from_when_it_was_sent(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    slow = FaultyStore(store)
    slow.hold.add("create")  # the Lease is created at 1000; the answer comes at 1009
    a = candidate(slow, "a", clock)
    rec = Recorder(a, clock).start()
    await clock.advance(9)
    assert not a.is_leader and spec(store)["holderIdentity"] == "a"
    slow.heal()
    slow.hold.add("replace")  # and no renewal is answered
    await clock.settle()
    assert rec.values == [False, True] and rec.times[-1] == 1009
    assert a.leading_until == 1010 and a.metrics.late_acquisitions == 0
    await clock.advance(1)
    assert rec.values == [False, True, False] and rec.times[-1] == 1010
    slow.heal()
    await a.stop()


async def test_an_acquisition_answered_too_late_leads_only_from_a_renewal_in_time(
        clock: ManualClock, store: MemoryLeaseStore, caplog: pytest.LogCaptureFixture) -> None:
    slow = FaultyStore(store)
    slow.hold.add("create")  # landed at 1000, answered at 1012: past renew_deadline (10)
    a = candidate(slow, "a", clock)
    rec = Recorder(a, clock).start()
    await clock.advance(12)
    assert not a.is_leader and rec.values == [False]
    slow.heal()
    slow.hold.add("replace")  # the confirming renewal, sent at 1012, is answered at 1014
    await clock.settle()
    assert not a.is_leader and slow.calls.get("replace") == 1
    await clock.advance(2)
    slow.heal()
    await clock.settle()
    assert rec.values == [False, True] and rec.times[-1] == 1014
    assert a.leading_until == 1022  # counted from the renewal's send time, 1012
    assert a.metrics.late_acquisitions == 1 and a.metrics.acquisitions == 1
    assert "past renew_deadline" in caplog.text
    await a.stop()


async def test_stop_after_a_late_acquisition_releases_the_lease_it_never_led_with(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    slow = FaultyStore(store)
    slow.hold.add("create")
    a = candidate(slow, "a", clock)
    rec = Recorder(a, clock).start()
    await clock.advance(12)
    slow.heal()
    slow.hold.add("replace")  # the confirming renewal lands, its answer does not come
    await clock.settle()
    stopping = asyncio.ensure_future(a.stop())
    await clock.settle()
    slow.heal()  # the release (after a 409 from the renewal that landed, and a re-read)
    await clock.settle()
    await stopping
    assert rec.values == [False] and spec(store)["holderIdentity"] == ""
    # replace: the renewal, the release refused (409) and the release; get: the first read
    # of the Lease and the re-read after the 409
    assert slow.calls == {"watch": 1, "create": 1, "replace": 3, "get": 2}


async def test_stop_ends_a_hung_acquisition_at_once(clock: ManualClock,
                                                    store: MemoryLeaseStore) -> None:
    # A store bounds its own requests (request_timeout); the candidate waits for the answer,
    # however late, but never past a stop.
    hung = FaultyStore(store)
    hung.hang.add("create")
    a = candidate(hung, "a", clock)
    rec = Recorder(a, clock).start()
    await clock.advance(60)
    assert hung.calls["create"] == 1 and rec.values == [False]
    await asyncio.wait_for(a.stop(), timeout=1)  # real seconds: the ManualClock stands still
    assert rec.values == [False] and store.peek(KEY) is None


async def test_concurrent_acquisitions_conflict_and_exactly_one_wins(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    await store.put_raw({"metadata": {"name": KEY},
                         "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 15}})
    a, b = candidate(store, "a", clock), candidate(store, "b", clock)
    ra, rb = Recorder(a, clock).start(), Recorder(b, clock).start()
    await clock.advance(14.9)
    assert ra.values == rb.values == [False]
    await clock.advance(0.1)  # both see the ghost expire at 1015 and write the same version
    assert sorted([ra.values, rb.values]) == [[False], [False, True]]
    # Reads: one initial each, one confirming the expiry each, one re-read after the 409.
    assert store.requests["replace"] == 2 and store.requests["get"] == 5
    assert spec(store)["leaseTransitions"] == 1
    await a.stop()
    await b.stop()


async def test_resign_hands_over_then_campaigns_again_after_the_grace(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a, b = candidate(store, "a", clock), candidate(store, "b", clock)
    ra, rb = await leader_then_follower(a, b, clock)
    await a.resign()
    await clock.settle()
    assert ra.values == [False, True, False] and not a.is_leader
    assert rb.values == [False, True] and rb.times[-1] == 1000
    await clock.advance(1)
    await b.stop()  # the lease is free at 1001, but a resigned at 1000: grace until 1005
    await clock.advance(3.9)
    assert ra.values == [False, True, False]
    await clock.advance(0.1)
    assert ra.values == [False, True, False, True] and ra.times[-1] == 1005
    assert a.fencing_token == 2
    await a.stop()


async def test_resign_when_not_leading_does_nothing(clock: ManualClock,
                                                    store: MemoryLeaseStore) -> None:
    a, b = candidate(store, "a", clock), candidate(store, "b", clock)
    Recorder(a, clock).start()
    await clock.settle()
    rb = Recorder(b, clock).start()
    await clock.settle()
    await b.resign()
    await clock.advance(1)
    assert rb.values == [False] and a.is_leader
    await a.stop()
    await b.stop()


async def test_stop_while_waiting_returns_at_once_and_ends_the_stream(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a, b = candidate(store, "a", clock), candidate(store, "b", clock)
    Recorder(a, clock).start()
    await clock.settle()
    rb = Recorder(b, clock).start()
    await clock.advance(3)
    await b.stop()
    await clock.settle()
    assert rb.values == [False] and rb.finished
    assert a.is_leader and spec(store)["holderIdentity"] == "a"
    await a.stop()


async def test_stop_is_idempotent_and_safe_before_running(clock: ManualClock,
                                                          store: MemoryLeaseStore) -> None:
    early = candidate(store, "early", clock)
    await early.stop()
    await early.stop()
    rec = Recorder(early, clock).start()
    await clock.settle()
    assert rec.values == [False] and rec.finished and store.peek(KEY) is None

    a = candidate(store, "a", clock)
    rec = Recorder(a, clock).start()
    await clock.settle()
    await asyncio.gather(a.stop(), a.stop())
    await a.stop()
    await clock.settle()
    assert rec.values == [False, True, False]
    with pytest.raises(RuntimeError, match="only once"):
        a.run_for_election()


async def test_stop_from_inside_the_consuming_loop_does_not_deadlock(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a = candidate(store, "a", clock)
    seen = []
    async for leading in a.run_for_election():
        seen.append(leading)
        if leading:
            await a.stop()
    assert seen == [False, True, False]
    assert spec(store)["holderIdentity"] == ""


async def test_an_absent_consumer_never_delays_renewals(clock: ManualClock,
                                                        store: MemoryLeaseStore) -> None:
    a = candidate(store, "a", clock)
    stream = a.run_for_election()  # nobody reads it for a minute
    await clock.advance(60)
    assert store.requests["replace"] == 12 and a.is_leader
    assert [await anext(stream), await anext(stream)] == [False, True]
    await a.stop()
    assert [v async for v in stream] == [False]


async def test_is_leader_is_false_right_after_a_long_pause(clock: ManualClock,
                                                           store: MemoryLeaseStore) -> None:
    a = candidate(store, "a", clock)
    rec = Recorder(a, clock).start()
    await clock.settle()
    clock.jump(9.999)  # frozen: no task ran, no renewal was sent
    assert a.is_leader and a.fencing_token == 0
    clock.jump(0.001)
    assert not a.is_leader and a.fencing_token is None  # before any task gets to run
    await clock.advance(0)  # resumed: the campaign notices, steps down, and takes it back
    assert rec.values == [False, True, False, True]
    await a.stop()


async def test_run_while_leading_cancels_work_the_moment_leadership_is_lost(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    partitioned = FaultyStore(store)
    a, b = candidate(partitioned, "a", clock), candidate(store, "b", clock)
    started: list[float] = []
    cancelled: list[float] = []

    async def work() -> None:
        started.append(clock.now())
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(clock.now())
            raise

    running = asyncio.ensure_future(a.run_while_leading(work))
    await clock.settle()
    rb = Recorder(b, clock).start()
    assert started == [1000] and cancelled == []
    partitioned.fail["replace"] = TransientStoreError("partition")
    await clock.advance(30)
    assert cancelled == [1010]  # a's deadline
    assert rb.values == [False, True] and rb.times[-1] == 1015  # b waited out the ttl
    partitioned.heal()
    await b.stop()
    await clock.settle()
    assert started == [1000, 1030]  # a regained it: the work runs again
    await a.stop()
    await running
    assert cancelled == [1010, 1030]


async def test_run_while_leading_lets_work_finish_cancelling_before_releasing(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a = candidate(store, "a", clock)
    holder_when_cancelled: list[object] = []

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # cleanup that takes a few steps of the loop
            holder_when_cancelled.append(spec(store)["holderIdentity"])
            raise

    running = asyncio.ensure_future(a.run_while_leading(work))
    await clock.settle()
    await a.stop()
    await running
    assert holder_when_cancelled == ["a"]  # still held while the work wound down
    assert spec(store)["holderIdentity"] == ""


async def test_work_that_fails_steps_down_releases_and_raises(clock: ManualClock,
                                                              store: MemoryLeaseStore) -> None:
    a = candidate(store, "a", clock)

    async def work() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await a.run_while_leading(work)
    assert not a.is_leader and spec(store)["holderIdentity"] == ""


async def test_work_that_returns_ends_the_campaign_and_frees_the_lease(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a = candidate(store, "a", clock)
    b = candidate(store, "b", clock)
    done: list[float] = []

    async def work() -> None:
        await clock.sleep_until(clock.now() + 3)
        done.append(clock.now())

    running = asyncio.ensure_future(a.run_while_leading(work))
    await clock.settle()
    rb = Recorder(b, clock).start()
    await clock.advance(3)
    assert done == [1003] and running.done() and running.exception() is None
    assert not a.is_leader and rb.values == [False, True]  # released, not held idle
    await b.stop()


async def test_cancelling_run_while_leading_stops_the_candidate_work_first(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a = candidate(store, "a", clock)
    holder_when_cancelled: list[object] = []

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            holder_when_cancelled.append(spec(store)["holderIdentity"])
            raise

    running = asyncio.ensure_future(a.run_while_leading(work))
    await clock.settle()
    assert a.is_leader
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert holder_when_cancelled == ["a"] and not a.is_leader
    assert spec(store)["holderIdentity"] == ""  # released, not kept until someone calls stop()
    await clock.advance(30)
    assert spec(store)["holderIdentity"] == ""  # and no campaign goes on behind our back


async def test_a_fatal_error_ends_the_stream_after_a_final_false(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    forbidden = FaultyStore(store)
    forbidden.fail["get"] = FatalStoreError("HTTP 403: forbidden", status=403)
    rec = Recorder(candidate(forbidden, "a", clock), clock).start()
    await clock.settle()
    assert rec.values == [False] and isinstance(rec.error, FatalStoreError)


async def test_a_fatal_error_while_leading_steps_down_first(clock: ManualClock,
                                                            store: MemoryLeaseStore) -> None:
    revoked = FaultyStore(store)
    a = candidate(revoked, "a", clock)
    rec = Recorder(a, clock).start()
    await clock.settle()
    revoked.fail["replace"] = FatalStoreError("HTTP 403: forbidden", status=403)
    await clock.advance(5)
    assert rec.values == [False, True, False] and isinstance(rec.error, FatalStoreError)
    assert not a.is_leader


async def test_transient_errors_while_following_are_retried(clock: ManualClock,
                                                            store: MemoryLeaseStore) -> None:
    flaky = FaultyStore(store)
    flaky.fail["get"] = TransientStoreError("HTTP 503", status=503)
    rec = Recorder(candidate(flaky, "a", clock), clock).start()
    await clock.advance(3)
    assert rec.values == [False] and flaky.calls["get"] > 1
    flaky.heal()
    await clock.advance(6)
    assert rec.values == [False, True] and rec.error is None
    await rec.candidate.stop()


@pytest.mark.parametrize("bad_spec, takeover_after", [
    ({"holderIdentity": "ghost"}, 15),  # no duration: waited out for our ttl
    ({"holderIdentity": "ghost", "leaseDurationSeconds": 0}, 15),
    ({"holderIdentity": "ghost", "leaseDurationSeconds": -5}, 15),
    ({"holderIdentity": "ghost", "leaseDurationSeconds": "15s"}, 15),
    ({"holderIdentity": "ghost", "leaseDurationSeconds": 3, "renewTime": "yesterday"}, 3),
    ({"holderIdentity": "ghost", "leaseDurationSeconds": 20, "leaseTransitions": "many"}, 20),
    ({"holderIdentity": 42, "leaseDurationSeconds": 7}, 7),
])
async def test_a_malformed_holder_is_waited_out_not_stolen(
        clock: ManualClock, store: MemoryLeaseStore, caplog: pytest.LogCaptureFixture,
        bad_spec: dict[str, object], takeover_after: int) -> None:
    await store.put_raw({"metadata": {"name": KEY}, "spec": bad_spec})
    a = candidate(store, "a", clock)
    with caplog.at_level(logging.WARNING, logger="leadership"):
        rec = Recorder(a, clock).start()
        await clock.advance(takeover_after - 0.01)
        assert rec.values == [False]
        await clock.advance(0.01)
    assert rec.values == [False, True] and rec.error is None
    assert "lease default/lock is malformed" in caplog.text
    await a.stop()


async def test_a_huge_duration_is_honoured(clock: ManualClock, store: MemoryLeaseStore) -> None:
    await store.put_raw({"metadata": {"name": KEY},
                         "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 2**31 - 1}})
    rec = Recorder(candidate(store, "a", clock), clock).start()
    await clock.advance(10_000)
    assert rec.values == [False] and rec.error is None
    await rec.candidate.stop()


@pytest.mark.parametrize("bad_spec", [None, {}, {"holderIdentity": ""}, "not-an-object"])
async def test_a_lease_without_a_holder_is_free_at_once(clock: ManualClock,
                                                        store: MemoryLeaseStore,
                                                        bad_spec: object) -> None:
    await store.put_raw({"metadata": {"name": KEY}, "spec": bad_spec})
    rec = Recorder(candidate(store, "a", clock), clock).start()
    await clock.settle()
    assert rec.values == [False, True]
    await rec.candidate.stop()


async def test_fields_written_by_others_are_preserved(clock: ManualClock,
                                                      store: MemoryLeaseStore) -> None:
    await store.put_raw({
        "metadata": {"name": KEY, "labels": {"team": "x"}, "annotations": {"note": "keep"}},
        "spec": {"holderIdentity": "", "preferredHolder": "a", "strategy": "OldestEmulationVersion",
                 "leaseTransitions": 4}})
    a = candidate(store, "a", clock)
    Recorder(a, clock).start()
    await clock.advance(5)
    lease = store.peek(KEY)
    assert lease is not None
    assert lease["metadata"]["labels"] == {"team": "x"}
    assert lease["metadata"]["annotations"] == {"note": "keep"}
    assert lease["spec"]["preferredHolder"] == "a"
    assert lease["spec"]["strategy"] == "OldestEmulationVersion"
    assert lease["spec"]["leaseTransitions"] == 5 and a.fencing_token == 5
    await a.stop()
    lease = store.peek(KEY)
    assert lease is not None and lease["spec"]["preferredHolder"] == "a"
    assert lease["spec"]["leaseTransitions"] == 5


async def test_followers_make_no_periodic_requests(clock: ManualClock,
                                                   store: MemoryLeaseStore) -> None:
    a, b, c = (candidate(store, n, clock) for n in "abc")
    for cand in (a, b, c):
        Recorder(cand, clock).start()
        await clock.settle()
    before = dict(store.requests)
    await clock.advance(120)
    after = dict(store.requests)
    assert after["get"] == before["get"] and after["watch"] == before["watch"]
    assert after["replace"] - before.get("replace", 0) == 24  # only the leader's renewals
    for cand in (a, b, c):
        await cand.stop()


async def test_a_broken_watch_is_reestablished_and_relisted_after_410(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a, b = candidate(store, "a", clock), candidate(store, "b", clock)
    Recorder(a, clock).start()
    await clock.settle()
    rb = Recorder(b, clock).start()
    await clock.advance(6)
    store.compact()
    await store.break_watches()
    await clock.advance(6)  # both re-watch from versions now compacted away: 410, re-list
    assert store.requests["get"] > 2
    await a.stop()
    await clock.settle()
    assert rb.values == [False, True] and rb.times[-1] == clock.now()
    await b.stop()


async def test_candidates_on_different_leases_in_one_process(clock: ManualClock,
                                                             store: MemoryLeaseStore) -> None:
    one = Candidate(store, "one", "x", ttl=15, clock=clock)
    two = Candidate(store, "two", "x", ttl=15, clock=clock)
    r1, r2 = Recorder(one, clock).start(), Recorder(two, clock).start()
    await clock.settle()
    assert r1.values == r2.values == [False, True]
    await one.stop()
    await two.stop()


async def test_a_lease_deleted_under_the_leader_is_recreated_by_its_next_renewal(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a, b = candidate(store, "a", clock), candidate(store, "b", clock)
    ra, rb = await leader_then_follower(a, b, clock)
    await store.delete(KEY)
    await clock.advance(5)  # a's renewal (a PUT) re-creates it; b never saw it free long enough
    assert ra.values == [False, True] and rb.values == [False]
    assert spec(store)["holderIdentity"] == "a"
    await a.stop()
    await b.stop()


async def test_deleting_the_lease_does_not_free_it_before_the_holder_expires(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    crashed = FaultyStore(store)
    a, b = candidate(crashed, "a", clock), candidate(store, "b", clock)
    ra = Recorder(a, clock).start()
    await clock.settle()
    rb = Recorder(b, clock).start()
    await clock.advance(4)
    crashed.fail["replace"] = TransientStoreError("partition")  # a cannot renew any more
    crashed.fail["create"] = TransientStoreError("partition")
    await store.delete(KEY)  # at 1004: a still believes until 1010
    overlap = []
    for _ in range(100):
        await clock.advance(0.25)
        if a.is_leader and b.is_leader:
            overlap.append(clock.now())
    assert overlap == []
    assert ra.times[-1] == 1010 and rb.values == [False, True] and rb.times[-1] == 1019
    await a.stop()
    await b.stop()


async def test_a_candidate_that_may_not_create_the_lease_waits_for_it_as_a_follower(
        clock: ManualClock, store: MemoryLeaseStore, caplog: pytest.LogCaptureFixture) -> None:
    store.may_create = False  # RBAC without create: the Lease ships with the manifests
    a = candidate(store, "a", clock)
    rec = Recorder(a, clock).start()
    await clock.settle()
    await clock.advance(60)
    # Not a crash loop: one attempt, said once, and the campaign goes on as a follower.
    assert rec.values == [False] and rec.error is None and not rec.finished
    assert store.requests["create"] == 1
    assert a.blocked is not None and "may not create it" in a.blocked
    assert len([r for r in caplog.records if "may not create it" in r.getMessage()]) == 1
    await store.put_raw({"metadata": {"name": KEY, "uid": "u1"}, "spec": {}})  # re-applied
    await clock.settle()
    assert rec.values == [False, True] and a.blocked is None
    assert spec(store)["holderIdentity"] == "a"
    await a.stop()


async def test_a_lease_deleted_under_a_leader_that_may_not_recreate_it(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a, b = candidate(store, "a", clock), candidate(store, "b", clock)
    ra, rb = await leader_then_follower(a, b, clock)
    old_fence = a.fence
    assert old_fence is not None
    store.may_create = False
    await store.delete(KEY)
    await clock.advance(5)  # a's renewal finds no Lease and may not re-create it: it steps down
    assert ra.values == [False, True, False] and not ra.finished and not rb.finished
    assert a.fence is None and a.blocked is not None and b.blocked is None
    await clock.advance(60)
    assert store.peek(KEY) is None and not (a.is_leader or b.is_leader)
    # Re-applied by an admin: a new uid, and its count starts again.
    await store.put_raw({"metadata": {"name": KEY, "uid": "u2"}, "spec": {}})
    await clock.settle()
    winner = a if a.is_leader else b
    assert [a.is_leader, b.is_leader].count(True) == 1 and winner.fence is not None
    assert winner.fence.lease_uid == "u2" != old_fence.lease_uid  # a fence tells them apart
    await a.stop()
    await b.stop()


async def test_a_404_on_acquiring_means_a_missing_namespace_and_is_fatal(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    from leadership import NotFoundError

    nowhere = FaultyStore(store)
    nowhere.fail["create"] = NotFoundError('namespaces "gone" not found', status=404)
    rec = Recorder(candidate(nowhere, "a", clock), clock).start()
    await clock.settle()
    assert rec.values == [False] and isinstance(rec.error, FatalStoreError)
    assert "does not exist" in str(rec.error) and nowhere.calls["create"] == 1


async def test_metrics_count_what_happened(clock: ManualClock, store: MemoryLeaseStore) -> None:
    flaky = FaultyStore(store)
    a, b = candidate(flaky, "a", clock), candidate(store, "b", clock)
    await leader_then_follower(a, b, clock)
    await clock.advance(10)  # renewals at 1005 and 1010
    flaky.fail["replace"] = TransientStoreError("HTTP 503", status=503)
    await clock.advance(5.05)  # the renewal at 1015 fails; its retry is due 0.2 s or more later
    flaky.heal()
    await clock.advance(3)  # the retry succeeds (by 1017.5)
    lease = store.peek(KEY)
    assert lease is not None
    lease["metadata"]["annotations"] = {"someone": "wrote"}
    await store.put_raw(lease)  # the next renewal gets 409 and takes the slow path
    await clock.advance(5)
    await a.stop()
    await clock.settle()  # b takes the released Lease
    m = a.metrics
    assert (m.acquisitions, m.step_downs, m.last_step_down) == (1, 1, "stop")
    assert m.renew_failures == 1 and m.slow_path_renewals == 1
    assert m.renewals == 4 and m.last_renewal_latency == 0.0
    assert b.metrics.acquisitions == 1 and b.metrics.acquire_conflicts == 0
    await b.stop()


async def test_a_follower_with_a_silent_watch_never_writes_over_a_live_leader(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    crashable = FaultyStore(store)
    a = candidate(crashable, "a", clock)
    ra = Recorder(a, clock).start()
    await clock.settle()
    link = FaultyStore(store)
    b = candidate(link, "b", clock)
    rb = Recorder(b, clock).start()
    await clock.settle()
    link.silence_watches()
    await clock.advance(60)
    assert rb.values == [False] and "replace" not in link.calls and "create" not in link.calls
    assert ra.values == [False, True] and a.is_leader
    crashable.hang.add("replace")  # a dies after its renewal at 1060
    await clock.advance(20)
    assert rb.values == [False, True] and rb.times[-1] == 1075  # 1060 + ttl: no stall
    crashable.heal()
    await a.stop()
    await b.stop()


async def test_two_candidates_sharing_an_identity_never_lead_at_once_and_the_twin_stops(
        clock: ManualClock, store: MemoryLeaseStore,
        caplog: pytest.LogCaptureFixture) -> None:
    a = candidate(store, "worker", clock)
    ra = Recorder(a, clock).start()
    await clock.advance(1)
    twin = candidate(store, "worker", clock)  # a second process with the same identity
    rt = Recorder(twin, clock).start()
    await clock.advance(14)
    assert ra.values == [False, True] and rt.values == [False]  # the twin waits, unsure yet
    # a's renewals under "worker" go on for a full Lease duration: a live twin, an error.
    await clock.advance(15)
    assert rt.finished and isinstance(rt.error, DuplicateIdentityError)
    assert rt.times[-1] <= 1001 + 2 * 15  # within about two Lease durations
    assert "'worker'" in str(rt.error) and "<pod>_<uuid>" in str(rt.error)
    assert rt.values == [False] and ra.values == [False, True] and a.is_leader
    warnings = [r for r in caplog.records if "held under our identity" in r.getMessage()]
    assert len(warnings) == 1  # said once, with what to check, not at every renewal
    await a.stop()


async def test_a_restarted_process_waits_out_its_previous_run_under_the_same_identity(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    link = FaultyStore(store)
    old = candidate(link, "worker", clock)
    Recorder(old, clock).start()
    await clock.advance(2)
    link.hang.add("replace")  # the old process dies: no renewal after its last one at 1000
    restarted = candidate(store, "worker", clock)
    rec = Recorder(restarted, clock).start()
    await clock.advance(14)
    assert rec.values == [False] and not rec.finished  # waiting out the previous run
    await clock.advance(1.01)  # 15 s after it first saw that Lease, as for anyone's
    assert rec.values == [False, True] and rec.error is None
    link.heal()
    await restarted.stop()
    await old.stop()


async def test_a_leader_whose_identity_another_process_renews_stops_with_a_clear_error(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a = candidate(store, "worker", clock)
    rec = Recorder(a, clock).start()
    await clock.advance(2)
    lease = store.peek(KEY)
    assert lease is not None
    lease["spec"]["renewTime"] = "2026-01-01T00:16:41.500000Z"  # a twin's renewal, not a's
    await store.put_raw(lease)
    await clock.advance(5)  # a's next renewal meets a 409 and re-reads
    assert rec.values == [False, True, False] and rec.finished
    assert isinstance(rec.error, DuplicateIdentityError) and "'worker'" in str(rec.error)
    assert not a.is_leader


async def test_leader_names_the_holder_as_observed_and_empty_once_its_claim_runs_out(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a, b = candidate(store, "a", clock), candidate(store, "b", clock)
    assert a.leader == "" and b.leader == ""  # nothing observed yet
    partitioned = FaultyStore(store)
    c = candidate(partitioned, "c", clock)
    Recorder(c, clock).start()
    await clock.settle()
    Recorder(b, clock).start()
    await clock.settle()
    assert b.leader == "c" and c.leader == "c"
    partitioned.fail["replace"] = TransientStoreError("partitioned")
    partitioned.fail["get"] = TransientStoreError("partitioned")
    await clock.advance(14.9)  # c's last renewal was seen at 1000: still its claim
    assert b.leader == "c"
    await clock.advance(0.2)  # 15 s without a renewal: b takes over
    await clock.settle()
    assert b.leader == "b" and b.is_leader
    await b.stop()
    await clock.settle()
    assert b.leader == ""  # released
    await c.stop()


async def test_leading_until_is_the_last_renewal_plus_the_deadline(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a = candidate(store, "a", clock)
    assert a.leading_until is None
    Recorder(a, clock).start()
    await clock.settle()
    assert a.leading_until == 1010  # acquired at 1000; renew_deadline 10
    await clock.advance(5)
    assert a.leading_until == 1015  # renewed at 1005
    await a.stop()
    await clock.settle()
    assert a.leading_until is None


async def test_a_lease_re_created_free_under_a_live_leader_is_not_taken_before_its_claim_ends(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    """An admin deletes the Lease and applies it again at once (kubectl replace --force, a
    GitOps sync): the leader has not noticed and still leads until its next renewal fails.
    Nobody may take the fresh, free Lease before the old claim has run out."""
    crashed = FaultyStore(store)
    a, b = candidate(crashed, "a", clock), candidate(store, "b", clock)
    ra, rb = await leader_then_follower(a, b, clock)
    crashed.hang.add("replace")  # a's renewals never land (it has not noticed anything)
    await store.delete(KEY)
    await store.put_raw({"metadata": {"name": KEY, "uid": "re-applied"}, "spec": {}})
    overlap = []
    for _ in range(80):
        await clock.advance(0.25)
        if a.is_leader and b.is_leader:
            overlap.append(clock.now())
    assert overlap == []
    assert rb.values == [False, True] and rb.times[-1] >= 1015  # a's claim, from the deletion
    assert ra.values == [False, True, False]
    await a.stop()
    await b.stop()
