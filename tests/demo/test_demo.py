"""`make demo` tells the operator's story on real pods, and `make demo-processes` the same
story with processes standing in for pods; each inside its time, leaving nothing running
(every process it started shares its session; none may outlive it) and, for the real one,
nothing of the node on the machine.

The real-pod demo needs root on Linux (the `node` marker), as the node does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controlplane import node
from controlplane.waiting import eventually

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


def run_demo(module: str, within: float) -> tuple[subprocess.Popen[str], str, float]:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        # Interrupted, the demo stops what it started (the node included) before it exits.
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        raise AssertionError(f"{module} took over {within:.0f}s:\n{out[-5000:]}") from None
    return proc, out, time.monotonic() - started


def nothing_left_in_session(sid: int) -> None:
    eventually(lambda: not session_members(sid), 10, f"nothing of session {sid} running",
               every=0.1)


@pytest.mark.node
@pytest.mark.timeout(450)
def test_make_demo_tells_the_real_pod_story_and_leaves_nothing() -> None:
    proc, out, took = run_demo("examples.node_demo", 400)
    assert proc.returncode == 0, out[-5000:]
    assert "no real node on this machine" not in out, out[:2000]
    assert took < 180, f"the demo took {took:.0f}s"
    for step in ("$ kubectl apply -k manifests/operator",
                 "$ kubectl apply -k manifests/policies/lease-holder",
                 "$ kubectl apply -k manifests/example",
                 "$ kubectl -n leadership-example get lease web",
                 "$ kubectl -n leadership-example get pods -L leadership.dev/role",
                 "$ leadership status -n leadership-example",
                 "$ kubectl -n leadership-example rollout restart deployment/web",
                 "$ kubectl -n leadership-example delete pod", "$ kill -KILL",
                 "$ kubectl -n leadership-system delete pod", "never two behind web-leader",
                 "rolling update: answers from a pod that was not the leader         0 of",
                 "Measured", "nothing is left running"):
        assert step in out, step
    # Five pods ran from the image (2 operators, 3 app pods), all Running and Ready.
    assert out.count("2/2     Running") >= 3 and out.count("1/1     Running") >= 2
    nothing_left_in_session(proc.pid)
    assert node.leftovers() == []


def test_make_demo_processes_tells_the_story_and_leaves_nothing_running() -> None:
    proc, out, took = run_demo("examples.operator_demo", 240)
    assert proc.returncode == 0, out[-5000:]
    assert took < 120, f"the demo took {took:.0f}s"
    for step in ("kubectl -n leadership-example get lease web",
                 "kubectl -n leadership-example get pods -L leadership.dev/role",
                 "curl localhost:4040/leader", "the Service web-leader selects",
                 "leadership status -n leadership-example", "labelled stale",
                 "SIGTERM the sidecar", "is active", "never two leaders", "Measured"):
        assert step in out, step
    assert '"is_leader": true' in out
    nothing_left_in_session(proc.pid)
