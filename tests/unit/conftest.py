"""Shared fixtures of the unit tests: a manual clock and an in-memory store that reads it."""

from __future__ import annotations

import pytest

from leadership import MemoryLeaseStore
from leadership.testing import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(clock: ManualClock) -> MemoryLeaseStore:
    return MemoryLeaseStore(clock=clock)
