"""The timing rule: refused up front when unsafe; defaults follow the seed; retries fit."""

from __future__ import annotations

import random

import pytest

from leadership import Candidate, MemoryLeaseStore, Timing
from leadership.timing import backoff


@pytest.fixture
def store() -> MemoryLeaseStore:
    return MemoryLeaseStore()


@pytest.mark.parametrize("kwargs, argument", [
    ({"renew_deadline": 15}, "renew_deadline"),  # not below ttl
    ({"renew_deadline": 20}, "renew_deadline"),
    ({"renew_interval": 9}, "renew_interval"),  # 1.2 * 9 > default deadline 10
    ({"renew_interval": 0}, "renew_interval"),
    ({"renew_interval": -1}, "renew_interval"),
    ({"renew_deadline": float("inf")}, "renew_deadline"),
    ({"resign_grace": -1}, "resign_grace"),
    ({"renew_interval": "5"}, "renew_interval"),
])
def test_inconsistent_timing_is_refused_up_front(store: MemoryLeaseStore,
                                                 kwargs: dict[str, object],
                                                 argument: str) -> None:
    with pytest.raises((ValueError, TypeError), match=argument):
        Candidate(store, "lock", "a", ttl=15, **kwargs)  # type: ignore[arg-type]


def test_defaults_follow_the_seed_and_the_safety_rule() -> None:
    t = Timing.from_args(15)
    assert (t.ttl, t.renew_interval, t.renew_deadline, t.resign_grace) == (15, 5, 10, 5)
    tiny = Timing.from_args(1)
    assert 1.2 * tiny.renew_interval < tiny.renew_deadline < tiny.ttl


def test_at_least_two_more_attempts_fit_after_a_hung_one() -> None:
    for ttl in (1, 4, 15, 60, 3600):
        t = Timing.from_args(ttl)
        window = t.renew_deadline - t.renew_interval
        assert 0 < t.attempt_timeout and 3 * t.attempt_timeout <= window + 1e-9


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 30])
def test_backoff_stays_within_its_floor_and_cap(attempt: int) -> None:
    rng = random.Random(attempt)
    delays = [backoff(rng, attempt, 0.2, 2.5) for _ in range(200)]
    assert min(delays) >= 0.2
    assert max(delays) <= min(2.5, 0.2 * 2**attempt) + 1e-9
