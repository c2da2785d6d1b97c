"""Fencing: tokens never go backwards, and the fence example really refuses stale writes."""

from __future__ import annotations

import sqlite3

import pytest

from examples.fencing import FencedOff, create_table, demo, reset_fence, write_fenced
from leadership import Candidate, Fence, MemoryLeaseStore
from leadership.testing import FaultyStore, ManualClock, Recorder

KEY = "lock"


@pytest.fixture
def db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    create_table(conn)
    return conn


def value(db: sqlite3.Connection) -> str:
    return str(db.execute("SELECT value FROM config WHERE key = 'k'").fetchone()[0])


async def test_the_example_fences_off_a_stale_leader() -> None:
    story = await demo()
    assert story[0].startswith("b wrote with Fence(") and "token=1" in story[0]
    assert story[1].startswith("a was fenced off: refused mode='from a'")


def test_same_lease_newer_or_equal_token_is_accepted_lower_is_refused(
        db: sqlite3.Connection) -> None:
    write_fenced(db, Fence("u1", 3), "k", "three")
    write_fenced(db, Fence("u1", 3), "k", "three again")  # the same term writes again
    write_fenced(db, Fence("u1", 4), "k", "four")
    with pytest.raises(FencedOff):
        write_fenced(db, Fence("u1", 3), "k", "stale")
    with pytest.raises(FencedOff, match="not leading"):
        write_fenced(db, None, "k", "nobody")
    assert value(db) == "four"


def test_another_lease_is_refused_until_the_fence_is_reset(db: sqlite3.Connection) -> None:
    write_fenced(db, Fence("old-uid", 7), "k", "old")
    with pytest.raises(FencedOff):  # re-created by a fresh process: its count restarted
        write_fenced(db, Fence("new-uid", 0), "k", "new")
    with pytest.raises(FencedOff):  # even a higher token: no order between two Leases
        write_fenced(db, Fence("new-uid", 9), "k", "new")
    reset_fence(db, "k")
    write_fenced(db, Fence("new-uid", 0), "k", "new")
    assert value(db) == "new"


async def test_a_candidate_that_recreates_a_deleted_lease_continues_the_count(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    crashable = FaultyStore(store)
    a = Candidate(store, KEY, "a", ttl=15, clock=clock)
    b = Candidate(crashable, KEY, "b", ttl=15, clock=clock)
    Recorder(a, clock).start()
    await clock.settle()
    Recorder(b, clock).start()
    for _ in range(3):  # three handovers: tokens 1, 2, 3
        leader = a if a.is_leader else b
        await leader.resign()
        await clock.advance(6)
    assert b.fence is not None and b.fence.token == 3
    old_uid = b.fence.lease_uid
    crashable.hang.update({"replace", "get", "create"})  # b dies
    await store.delete(KEY)
    await clock.advance(30)  # a waits the deletion out, then re-creates the Lease
    after = a.fence
    assert after is not None and after.token == 4 and after.lease_uid != old_uid
    crashable.heal()
    await a.stop()
    await b.stop()
