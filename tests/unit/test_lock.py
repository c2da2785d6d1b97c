"""LeaseLock: records in, compare-and-swap writes out; fencing tokens never go backwards."""

from __future__ import annotations

import pytest

from leadership import ConflictError, FatalStoreError, MemoryLeaseStore
from leadership.lock import MAX_TRANSITIONS, LeaseLock
from leadership.testing import ManualClock
from leadership.toolkit import LeaseRecord

KEY = "lock"


async def test_acquire_renew_release_speak_in_records(clock: ManualClock,
                                                      store: MemoryLeaseStore) -> None:
    lock = LeaseLock(store, KEY, "a", clock)
    record = await lock.acquire(None, 15)
    assert (record.holder_identity, record.lease_transitions) == ("a", 0) and lock.held
    await clock.advance(5)
    renewed = await lock.renew()
    assert renewed.renew_time is not None and renewed.acquire_time is not None
    assert renewed.renew_time > renewed.acquire_time
    await lock.release()
    assert lock.record.is_free and lock.record.lease_transitions == 0 and not lock.held


async def test_a_stale_cache_loses_the_race_and_a_reread_refreshes_it(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a, b = LeaseLock(store, KEY, "a", clock), LeaseLock(store, KEY, "b", clock)
    await a.acquire(None, 15)
    await a.release()
    await b.acquire(store.peek(KEY), 15)
    with pytest.raises(ConflictError):
        await a.renew()
    record = await a.reread()
    assert record is not None and record.holder_identity == "b" and not a.held


async def test_a_recreated_lease_continues_the_fencing_count(clock: ManualClock,
                                                             store: MemoryLeaseStore) -> None:
    a, b = LeaseLock(store, KEY, "a", clock), LeaseLock(store, KEY, "b", clock)
    await a.acquire(None, 15)
    for _ in range(3):  # three changes of holder: transitions 1, 2, 3
        await a.release()
        await b.acquire(store.peek(KEY), 15)
        a, b = b, a
    assert a.record.lease_transitions == 3
    await store.delete(KEY)
    record = await a.acquire(None, 15)  # re-created by a lock that saw 3
    assert record.lease_transitions == 4


async def test_observed_counts_raise_the_floor_too(clock: ManualClock,
                                                   store: MemoryLeaseStore) -> None:
    lock = LeaseLock(store, KEY, "a", clock)
    lock.observe(LeaseRecord(holder_identity="x", lease_transitions=41))
    assert (await lock.acquire(None, 15)).lease_transitions == 42


async def test_a_lease_whose_count_is_at_the_int32_maximum_is_refused_with_what_to_do(
        clock: ManualClock, store: MemoryLeaseStore) -> None:
    a, b = LeaseLock(store, KEY, "a", clock), LeaseLock(store, KEY, "b", clock)
    await a.acquire(None, 15)
    await store.replace({**store.peek(KEY), "spec": {  # type: ignore[dict-item]
        **store.peek(KEY)["spec"], "leaseTransitions": MAX_TRANSITIONS}})  # type: ignore[index]
    with pytest.raises(FatalStoreError, match=r"at its maximum .* an admin deletes") as exc:
        await b.acquire(store.peek(KEY), 15)
    assert exc.value.status == 422
    assert store.peek(KEY)["spec"]["holderIdentity"] == "a"  # type: ignore[index]  # nothing sent
