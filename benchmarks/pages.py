"""Benchmarks that print a table and write it, with its command, to `docs/`."""

from pathlib import Path

#: the hand-written reading of a run, below its generated table: kept when a benchmark
#: rewrites the page.
ANALYSIS = "\n## What the figures say\n"


def write_keeping_analysis(out: Path, generated: str) -> None:
    """Write `generated` to `out`, followed by the page's hand-written analysis, if any."""
    previous = out.read_text() if out.exists() else ""
    kept = previous[previous.index(ANALYSIS):] if ANALYSIS in previous else ""
    out.write_text(generated.rstrip("\n") + "\n" + kept)
