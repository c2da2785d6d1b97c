"""A short chaos run, seeded, inside `make test`: the same harness and checker as
`make chaos`, for 40 s. It must find no violation, no crash, nothing left running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chaos.schedule import make_schedule

ROOT = Path(__file__).resolve().parents[2]


def test_a_seed_replays_the_same_schedule() -> None:
    def schedule(seed: int) -> list[str]:
        return [str(f) for f in make_schedule(seed, 300, ttl=4, candidates=["c0", "c1"],
                                              operators=["op-0"], proxied=2, quiet=12)]

    assert schedule(5) == schedule(5) != schedule(6)
    assert len(schedule(5)) > 20
    kinds = {line.split()[2] for seed in range(5) for line in schedule(seed)}
    assert {"kill-candidate", "zombie-leader", "kill-operator", "proxy-blackhole",
            "restart-apiserver", "restart-etcd", "starve-cpu"} <= kinds


def test_a_short_seeded_chaos_run_finds_no_split_brain(tmp_path: Path) -> None:
    # Its logs go under pytest's own temporary directory (kept for the last few sessions,
    # then removed), not into /tmp for good.
    done = subprocess.run([sys.executable, "-m", "chaos.run", "--seconds=40", "--seed=3",
                           "--no-write"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "**No violation**: 0 violations, 0 unasked exits, 0 processes left running" in (
        done.stdout)
    assert "faults injected" in done.stdout
