"""The one cutter: what the operator, the sidecar and the command show is bounded, says what
it dropped where there is room, and never shows a terminal escape or an exception's repr."""

from __future__ import annotations

import pytest

from leadership_operator import text


def test_short_text_is_left_alone() -> None:
    assert text.cut("web-0", text.CELL) == "web-0"


@pytest.mark.parametrize("limit", [text.QUOTE, text.CELL, text.DETAIL, text.LINE, text.EVENT])
def test_a_cut_never_exceeds_its_limit(limit: int) -> None:
    for length in (limit, limit + 1, 10 * limit, 400_000):
        assert len(text.cut("x" * length, limit)) <= limit


def test_short_limits_end_in_an_ellipsis_long_ones_count_what_was_dropped() -> None:
    assert text.cut("x" * 100, text.CELL) == "x" * (text.CELL - 1) + "…"
    long = text.cut("x" * 5000, text.EVENT)
    kept = long.index("…")
    assert len(long) == text.EVENT and long.endswith(f"({5000 - kept} more characters)")


def test_escape_and_one_line() -> None:
    assert text.cut("a\x1b[31mb", text.CELL, escape=True) == "a\\x1b[31mb"
    assert text.cut("a\n  b\tc", text.LINE, one_line=True) == "a b c"


def test_an_error_is_its_type_and_text_on_one_line_never_its_repr() -> None:
    class Leaky(Exception):
        def __repr__(self) -> str:
            return "Leaky(headers={'Authorization': 'Bearer secret'})"

    assert text.error(Leaky("no\nroute")) == "Leaky: no route"
    assert text.error(TimeoutError()) == "TimeoutError"
    assert len(text.error(OSError("x" * 10_000))) == text.DETAIL
