"""Follower: who leads, de-duplicated, "" when free or expired (by timer, not poll)."""

from __future__ import annotations

import asyncio

import pytest

from leadership import Candidate, FatalStoreError, Follower, MemoryLeaseStore
from leadership.testing import FaultyStore, ManualClock

KEY = "lock"


async def follow(follower: Follower, clock: ManualClock) -> tuple[list[str], list[float],
                                                                  asyncio.Task[None]]:
    seen: list[str] = []
    times: list[float] = []

    async def run() -> None:
        async for leader in follower:
            seen.append(leader)
            times.append(clock.now())

    task = asyncio.ensure_future(run())
    await clock.settle()
    return seen, times, task


async def test_follower_sees_every_change_of_leader() -> None:
    clock = ManualClock()
    store = MemoryLeaseStore(clock=clock)
    follower = Follower(store, KEY, clock=clock)
    seen, _, task = await follow(follower, clock)
    assert seen == [""]
    a = Candidate(store, KEY, "a", ttl=15, clock=clock)
    b = Candidate(store, KEY, "b", ttl=15, clock=clock)
    a.run_for_election()
    await clock.settle()
    b.run_for_election()
    await clock.advance(20)  # renewals change the record but not the leader: no repeats
    assert seen == ["", "a"]
    await a.stop()
    await clock.settle()
    assert seen == ["", "a", "", "b"]  # a's release, then b's take-over: every change
    await b.stop()
    await clock.settle()
    assert seen == ["", "a", "", "b", ""]
    await follower.stop()
    await task
    assert task.done()


async def test_follower_yields_empty_when_the_holder_expires() -> None:
    clock = ManualClock()
    store = MemoryLeaseStore(clock=clock)
    crashed = FaultyStore(store)
    a = Candidate(crashed, KEY, "a", ttl=15, clock=clock)
    a.run_for_election()
    await clock.settle()
    seen, times, task = await follow(Follower(store, KEY, clock=clock), clock)
    await clock.advance(5)  # a renews at 1005
    crashed.hang.add("replace")  # then renews no more, as if killed
    await clock.advance(30)
    assert seen == ["a", ""] and times == [1000, 1020]  # 1005 + leaseDurationSeconds
    task.cancel()
    crashed.heal()
    await a.stop()


async def test_follower_ends_with_a_fatal_error() -> None:
    clock = ManualClock()
    forbidden = FaultyStore(MemoryLeaseStore(clock=clock))
    forbidden.fail["get"] = FatalStoreError("HTTP 403", status=403)
    with pytest.raises(FatalStoreError):
        async for _ in Follower(forbidden, KEY, clock=clock):
            pass


def test_follower_validates_its_arguments() -> None:
    with pytest.raises(TypeError, match="store"):
        Follower(object(), KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key"):
        Follower(MemoryLeaseStore(), "Not_A_Name")
    with pytest.raises(ValueError, match="ttl"):
        Follower(MemoryLeaseStore(), KEY, ttl=0)


async def test_a_silent_watch_never_reports_a_live_leader_as_gone(clock: ManualClock,
                                                                   store: MemoryLeaseStore) -> None:
    a = Candidate(store, KEY, "a", ttl=15, clock=clock)
    a.run_for_election()
    await clock.settle()
    link = FaultyStore(store)
    seen, times, task = await follow(Follower(link, KEY, clock=clock), clock)
    link.silence_watches()  # half-open: nothing arrives, nothing fails
    await clock.advance(60)
    assert seen == ["a"]  # the read at 1015 found a's renewals and restarted the watch
    assert link.calls == {"get": 2, "watch": 2}  # one confirming read, one fresh watch
    await a.stop()
    await clock.settle()
    assert seen == ["a", ""] and times[-1] == 1060  # the fresh watch carries the release
    task.cancel()
