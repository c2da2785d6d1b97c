"""The processes the local cluster runs, at the bottom of `controlplane`: a free loopback
port, a child that dies with its parent, and a stop that escalates to SIGKILL."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
from typing import Any


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM,
                 grace: float = 15.0) -> int:
    """Send `sig` to `proc` unless it has exited, give it `grace` seconds, then SIGKILL it.
    Returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def die_with_parent() -> None:
    """A `preexec_fn`: the child gets SIGKILL when this process dies (PR_SET_PDEATHSIG), so a
    killed test run leaves no component running."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
