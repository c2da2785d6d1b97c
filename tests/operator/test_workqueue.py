"""The work queue at exact instants on a manual clock: an item is never handed out twice at
once nor lost, timers keep the earliest time per item, failures back off with jitter."""

from __future__ import annotations

import asyncio
import random

from leadership.testing import ManualClock
from leadership_operator.workqueue import RETRY, WorkQueue


def queue(clock: ManualClock, rng: random.Random | None = None) -> WorkQueue[str]:
    return WorkQueue(clock, order=str, rng=rng or random.Random(0))


def test_an_item_added_while_in_flight_comes_back_once_it_is_done(clock: ManualClock) -> None:
    q = queue(clock)
    q.add("b")
    q.add("a")
    assert q.take() == ["a", "b"]
    q.add("a")
    q.add("a")
    assert q.take() == []  # in flight: never twice at once
    q.done("a")
    assert q.take() == ["a"]  # and not lost, once
    q.done("a")
    q.done("b")
    assert q.take() == []


async def test_timers_keep_the_earliest_time_per_item(clock: ManualClock) -> None:
    q, t0 = queue(clock), clock.now()
    for at in (30.0, 20.0, 40.0, 20.0):
        q.add_at("web", t0 + at)
    assert q.timers() == 2  # 30, then the earlier 20; the later 40 and the same 20 not kept
    await clock.advance(19.999)
    assert q.take() == []
    await clock.advance(0.001)
    assert q.take() == ["web"]
    q.done("web")
    await clock.advance(10)  # the superseded 30 hands nothing out
    assert q.take() == []


async def test_a_forgotten_item_is_not_handed_out_at_its_time(clock: ManualClock) -> None:
    q = queue(clock)
    q.add_at("gone", clock.now() + 5)
    q.forget("gone")
    await clock.advance(5)
    assert q.take() == []


class Top(random.Random):
    def random(self) -> float:
        return 1 - 1e-9


async def test_failures_back_off_exactly_first_then_jittered_up_to_the_cap(
        clock: ManualClock) -> None:
    q = queue(clock, Top())
    delays = []
    for _ in range(9):
        delays.append(q.failed("web"))
    low, high = RETRY
    assert delays[0] == low
    assert [round(d) for d in delays] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert all(low <= d <= high for d in delays)
    q.succeeded("web")
    assert q.failed("web") == low  # a success starts the back-off anew
    drawn = WorkQueue(clock, rng=random.Random(7))
    jittered = [drawn.failed("x") for _ in range(12)]
    assert jittered[0] == low and all(low <= d <= high for d in jittered)
    assert len(set(jittered[1:])) == 11  # jittered: no two retries of a crowd line up


async def test_wait_returns_on_an_add_or_at_the_next_time(clock: ManualClock) -> None:
    q = queue(clock)
    q.add_at("later", clock.now() + 10)
    await q.wait()  # the new time itself wakes a waiter: it may be sooner than the last
    waiting = asyncio.ensure_future(q.wait())
    await clock.settle()
    assert not waiting.done()
    q.add("now")
    await clock.settle()
    assert waiting.done()
    waiting = asyncio.ensure_future(q.wait())
    await clock.advance(9.999)
    assert not waiting.done()
    await clock.advance(0.001)
    assert waiting.done() and q.take() == ["later", "now"]
