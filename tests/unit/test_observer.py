"""LeaseObserver: expiry on the local clock, one failure signal, and no trust in a silent watch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from leadership import Candidate, FatalStoreError, MemoryLeaseStore, TransientStoreError
from leadership.observer import LeaseObserver
from leadership.testing import FaultyStore, ManualClock

KEY = "lock"


@pytest.fixture
async def leader(clock: ManualClock, store: MemoryLeaseStore) -> AsyncIterator[Candidate]:
    """'a' leads from 1000 and renews every 5 s (ttl 15) on a healthy connection."""
    a = Candidate(store, KEY, "a", ttl=15, clock=clock)
    a.run_for_election()
    await clock.settle()
    assert a.is_leader
    yield a
    await a.stop()


async def observe(observer: LeaseObserver, clock: ManualClock) -> asyncio.Task[None]:
    task = asyncio.ensure_future(observer.run())
    await clock.settle()
    return task


async def test_steady_state_costs_one_read_and_one_watch(
        clock: ManualClock, store: MemoryLeaseStore, leader: Candidate) -> None:
    link = FaultyStore(store)
    observer = LeaseObserver(link, KEY, clock, 15)
    task = await observe(observer, clock)
    await clock.advance(60)
    assert link.calls == {"get": 1, "watch": 1}
    assert observer.current is not None and observer.current.holder_at(clock.now()) == "a"
    assert observer.current.observed_at == 1060  # the renewal just seen
    task.cancel()


async def test_a_silent_watch_is_caught_by_the_confirming_read_and_restarted(
        clock: ManualClock, store: MemoryLeaseStore, leader: Candidate) -> None:
    link = FaultyStore(store)
    observer = LeaseObserver(link, KEY, clock, 15)
    task = await observe(observer, clock)
    link.silence_watches()  # half-open: nothing arrives, nothing fails
    await clock.advance(20)
    seen = observer.current
    assert seen is not None and seen.expired_at(clock.now())  # from the silent watch's view
    confirmed = await observer.confirm_expiry()
    assert confirmed.holder_at(clock.now()) == "a" and not confirmed.expired_at(clock.now())
    assert observer.stale_watches == 1
    await clock.settle()
    assert link.calls["watch"] == 2  # a fresh watch, at once
    await clock.advance(5)
    assert observer.current is not None and observer.current.observed_at == 1025  # it works
    task.cancel()


async def test_a_real_expiry_is_confirmed_without_restarting_a_live_watch(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    crashed = FaultyStore(store)
    a = Candidate(crashed, KEY, "a", ttl=15, clock=clock)
    a.run_for_election()
    await clock.settle()
    crashed.hang.add("replace")  # a renews no more, as if killed
    link = FaultyStore(store)
    observer = LeaseObserver(link, KEY, clock, 15)
    task = await observe(observer, clock)
    await clock.advance(15)
    confirmed = await observer.confirm_expiry()
    assert confirmed.expired_at(clock.now()) and confirmed.record.holder_identity == "a"
    assert observer.stale_watches == 0 and link.calls == {"get": 2, "watch": 1}
    task.cancel()
    crashed.heal()
    await a.stop()


async def test_a_missed_update_that_changes_no_record_keeps_the_expiry(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    await store.put_raw({"metadata": {"name": KEY},
                         "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 15}})
    link = FaultyStore(store)
    observer = LeaseObserver(link, KEY, clock, 15)
    task = await observe(observer, clock)
    link.silence_watches()
    lease = store.peek(KEY)
    assert lease is not None
    lease["metadata"]["labels"] = {"team": "x"}  # a new version, the same election record
    await store.put_raw(lease)
    await clock.advance(15)
    confirmed = await observer.confirm_expiry()
    assert confirmed.expired_at(clock.now())  # labels do not restart the expiry clock
    assert observer.stale_watches == 1  # but the watch had missed a version: restarted
    task.cancel()


async def test_a_failed_confirming_read_propagates_and_restarts_the_watch(
        clock: ManualClock, store: MemoryLeaseStore, leader: Candidate) -> None:
    link = FaultyStore(store)
    observer = LeaseObserver(link, KEY, clock, 15)
    task = await observe(observer, clock)
    link.fail["get"] = TransientStoreError("connection refused")
    with pytest.raises(TransientStoreError):
        await observer.confirm_expiry()
    await clock.settle()
    assert link.calls["watch"] == 2
    task.cancel()


async def test_a_fatal_error_is_one_signal_kept_for_the_consumer(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    forbidden = FaultyStore(store)
    forbidden.fail["get"] = FatalStoreError("HTTP 403: forbidden", status=403)
    observer = LeaseObserver(forbidden, KEY, clock, 15)
    await asyncio.wait_for(observer.run(), 1)  # ends by itself, raising nothing
    assert observer.failed.is_set() and observer.error is not None
    with pytest.raises(FatalStoreError, match="403"):
        observer.raise_if_failed()


async def test_transient_errors_are_retried_with_backoff(
        clock: ManualClock, store: MemoryLeaseStore, leader: Candidate) -> None:
    link = FaultyStore(store)
    link.fail["get"] = TransientStoreError("connection refused")
    observer = LeaseObserver(link, KEY, clock, 15, retry_min=0.2, retry_max=1.0)
    task = await observe(observer, clock)
    await clock.advance(3)
    assert observer.current is None and link.calls["get"] >= 3 and not observer.failed.is_set()
    link.heal()
    await clock.advance(1)
    assert observer.current is not None and observer.current.record.holder_identity == "a"
    task.cancel()


async def test_a_slow_read_never_overwrites_what_the_watch_delivered_meanwhile(
        clock: ManualClock, store: MemoryLeaseStore, leader: Candidate) -> None:
    link = FaultyStore(store)
    observer = LeaseObserver(link, KEY, clock, 15)
    task = await observe(observer, clock)
    link.hold.add("get")  # the read sees 'a' holding, but its answer comes late
    reading = asyncio.ensure_future(observer.refresh())
    await clock.settle()
    await leader.stop()  # meanwhile 'a' releases, and the watch delivers it
    await clock.settle()
    assert observer.current is not None and observer.current.record.is_free
    link.heal()
    await reading
    assert observer.current.record.is_free  # the older read was dropped
    task.cancel()


async def test_watching_is_true_only_while_a_watch_delivers(
        clock: ManualClock, store: MemoryLeaseStore, leader: Candidate) -> None:
    link = FaultyStore(store)
    observer = LeaseObserver(link, KEY, clock, 15)
    assert not observer.watching  # not started
    task = await observe(observer, clock)
    assert observer.watching  # listed, and the watch delivered the current state
    link.hang.add("watch")  # the next watch never answers
    await store.break_watches()  # the server ends this one (a restart)
    await clock.settle()
    assert not observer.watching and link.calls["watch"] == 2  # re-watching, nothing yet
    link.hang.discard("watch")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not observer.watching
    b = Candidate(store, KEY, "b", ttl=15, clock=clock)
    assert not b.watching
    b.run_for_election()
    await clock.settle()
    assert b.watching  # the candidate says the same of its own observer
    await b.stop()
