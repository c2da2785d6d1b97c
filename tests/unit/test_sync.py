"""leadership.sync: the same promises for threaded programs (real threads, real clock)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from controlplane.waiting import eventually
from leadership import FatalStoreError, MemoryLeaseStore, TransientStoreError, sync
from leadership.testing import FaultyStore


def test_blocking_stream_stop_and_handover_between_threads() -> None:
    store = MemoryLeaseStore()
    a = sync.Candidate(store, "lock", "a", ttl=3)
    stream = a.run_for_election()
    assert [next(stream), next(stream)] == [False, True]
    assert a.is_leader and a.fencing_token == 0

    b = sync.Candidate(store, "lock", "b", ttl=3)
    b_values: list[bool] = []
    reader = threading.Thread(target=lambda: b_values.extend(b.run_for_election()))
    reader.start()
    a.stop()
    a.stop()  # idempotent
    assert list(stream) == [False]
    eventually(lambda: b.is_leader, 5, "b leads", every=0.01)
    assert b.fencing_token == 1
    b.stop()
    reader.join(timeout=5)
    assert b_values == [False, True, False]


def test_resign_and_context_manager() -> None:
    store = MemoryLeaseStore()
    with sync.Candidate(store, "lock", "a", ttl=3, resign_grace=0) as a:
        stream = a.run_for_election()
        assert [next(stream), next(stream)] == [False, True]
        a.resign()
        assert [next(stream), next(stream)] == [False, True]  # alone: it takes it back
    assert list(stream) == [False]
    lease = store.peek("lock")
    assert lease is not None and lease["spec"]["holderIdentity"] == ""


def test_errors_reach_the_reading_thread() -> None:
    forbidden = FaultyStore(MemoryLeaseStore())
    forbidden.fail["get"] = FatalStoreError("HTTP 403", status=403)
    c = sync.Candidate(forbidden, "lock", "a", ttl=3)
    stream = c.run_for_election()
    assert next(stream) is False
    with pytest.raises(FatalStoreError):
        next(stream)
    c.stop()


def test_sync_follower() -> None:
    store = MemoryLeaseStore()
    with sync.Candidate(store, "lock", "a", ttl=3) as a:
        stream = a.run_for_election()
        assert [next(stream), next(stream)] == [False, True]
        follower = sync.Follower(store, "lock")
        leaders = iter(follower)
        assert next(leaders) == "a"
    assert next(leaders) == ""
    follower.stop()
    assert list(leaders) == []


def test_bad_arguments_raise_in_the_callers_thread() -> None:
    with pytest.raises(ValueError, match="ttl"):
        sync.Candidate(MemoryLeaseStore(), "lock", "a", ttl=0)


def test_stop_from_two_threads_at_once_never_hangs() -> None:
    for _ in range(30):  # the race needed many tries to show before the fix
        c = sync.Candidate(MemoryLeaseStore(), "lock", "a", ttl=3)
        stream = c.run_for_election()
        assert [next(stream), next(stream)] == [False, True]
        stoppers = [threading.Thread(target=c.stop) for _ in range(3)]
        for t in stoppers:
            t.start()
        c.stop()
        for t in stoppers:
            t.join(timeout=5)
            assert not t.is_alive(), "stop() hung"
        assert list(stream) == [False]
        c.resign()  # after stop: no effect, no hang


def wait_for(predicate: Callable[[], object], within: float = 5.0) -> None:
    eventually(predicate, within, "the condition", every=0.01)


def test_run_while_leading_sets_the_stop_event_on_loss_and_runs_again_on_regain() -> None:
    store = MemoryLeaseStore()
    link = FaultyStore(store)
    a = sync.Candidate(link, "lock", "a", ttl=1)
    calls: list[str] = []

    def work(stop: threading.Event) -> None:
        calls.append("started")
        while not stop.wait(0.01):  # blocking work that checks its event
            pass
        calls.append("stopped")

    runner = threading.Thread(target=a.run_while_leading, args=(work,))
    runner.start()
    wait_for(lambda: calls == ["started"])
    link.fail["replace"] = TransientStoreError("partitioned")  # renewals fail: loss at ~0.67 s
    wait_for(lambda: calls == ["started", "stopped"])
    assert not a.is_leader and a.metrics.step_downs == 1
    del link.fail["replace"]
    wait_for(lambda: calls == ["started", "stopped", "started"])  # regained: a fresh call
    a.stop()  # from another thread: the event is set, work returns, the Lease is released
    runner.join(timeout=5)
    assert not runner.is_alive() and calls[-1] == "stopped"
    lease = store.peek("lock")
    assert lease is not None and lease["spec"]["holderIdentity"] == ""


def test_run_while_leading_work_that_returns_frees_the_lease_and_returns() -> None:
    store = MemoryLeaseStore()
    a = sync.Candidate(store, "lock", "a", ttl=3)
    a.run_while_leading(lambda stop: None)  # returns: the job is done
    lease = store.peek("lock")
    assert lease is not None and lease["spec"]["holderIdentity"] == "" and not a.is_leader
    assert a.metrics.acquisitions == 1


def test_run_while_leading_work_that_raises_propagates_after_releasing() -> None:
    store = MemoryLeaseStore()
    a = sync.Candidate(store, "lock", "a", ttl=3)

    def work(stop: threading.Event) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        a.run_while_leading(work)
    lease = store.peek("lock")
    assert lease is not None and lease["spec"]["holderIdentity"] == ""
    with pytest.raises(TypeError, match="work must be callable"):
        sync.Candidate(store, "lock", "b", ttl=3).run_while_leading("not callable")  # type: ignore[arg-type]


def test_the_facade_has_every_read_only_attribute_of_the_core_with_its_value() -> None:
    from leadership import Candidate as Core

    store = MemoryLeaseStore()
    with sync.Candidate(store, "lock", "a", ttl=3) as a:
        stream = a.run_for_election()
        assert [next(stream), next(stream)] == [False, True]
        properties = [n for n, v in vars(Core).items()
                      if isinstance(v, property) and not n.startswith("_")]
        assert {"is_leader", "fencing_token", "fence", "leader", "leading_until"} <= set(
            properties)
        attributes = ["key", "node", "metrics", "timing"]
        for name in [*properties, *attributes]:
            assert hasattr(type(a), name), f"sync.Candidate lacks {name}"
            assert getattr(a, name) == getattr(a.core, name), name
        assert a.leader == "a" and a.leading_until is not None
        with pytest.raises(AttributeError):
            a.is_leader = False  # type: ignore[misc]  # read-only, as on the core
