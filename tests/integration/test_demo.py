"""`make demo` tells the operator's story end to end, inside its time, and leaves nothing
running (every process it started shares its session; none may outlive it)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def session_members(sid: int) -> list[str]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm)"
        if int(fields[3]) == sid:  # state, ppid, pgrp, session
            members.append(text[:text.rindex(")") + 1])
    return members


def test_make_demo_tells_the_story_and_leaves_nothing_running() -> None:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "examples.operator_demo"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out, _ = proc.communicate(timeout=240)
    took = time.monotonic() - started
    assert proc.returncode == 0, out[-5000:]
    assert took < 120, f"the demo took {took:.0f}s"
    for step in ("kubectl -n leadership-example get lease web",
                 "kubectl -n leadership-example get pods -L leadership.dev/role",
                 "curl localhost:4040/leader", "the Service web-leader selects",
                 "leadership status -n leadership-example", "labelled stale",
                 "SIGTERM the sidecar", "is active", "never two leaders", "Measured"):
        assert step in out, step
    assert '"is_leader": true' in out
    deadline = time.monotonic() + 10
    while left := session_members(proc.pid):
        assert time.monotonic() < deadline, f"left running: {left}"
        time.sleep(0.1)
