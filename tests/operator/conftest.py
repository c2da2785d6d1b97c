"""Fixtures of the operator's unit tests."""

from __future__ import annotations

import pytest

from leadership.testing import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
