"""The processes the local cluster runs, at the bottom of `controlplane`: a free loopback
port, a child that dies with its parent, a stop that escalates to SIGKILL, and `Supervisor`,
the processes of one part (the control plane's, the node's), each logging to its own file.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
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
    return reap(proc, grace)


def reap(proc: subprocess.Popen[Any], grace: float) -> int:
    """Wait up to `grace` seconds for `proc` (already signalled) to exit, then SIGKILL it.
    Returns its exit status."""
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


@dataclass
class Process:
    """One supervised process: its name, its command's arguments, its log."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    args: list[str]


class Supervisor:
    """The processes of one part of the local cluster. Each logs to ``<logs>/<name>.log``,
    runs in a session of its own and dies with this process; `stop_all` stops them in the
    reverse order of their start."""

    def __init__(self, logs: Path, cwd: Path) -> None:
        self.logs, self.cwd = logs, cwd
        self._procs: list[Process] = []

    def spawn(self, name: str, binary: Path, args: list[str], *,
              env: dict[str, str] | None = None) -> Process:
        """Start `binary` with `args` as `name`; main thread only."""
        # PR_SET_PDEATHSIG fires when the parent *thread* exits: a child started from a
        # worker thread would be killed when that thread ends.
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(f"start {name} from the main thread (PR_SET_PDEATHSIG is "
                               "bound to the thread that forks)")
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen([str(binary), *args], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.cwd, preexec_fn=die_with_parent,
                                     start_new_session=True, env=env)
        proc = Process(name, popen, log, args)
        self._procs.append(proc)
        return proc

    def get(self, name: str) -> Process | None:
        """The running process called `name`, if any."""
        return next((p for p in self._procs if p.name == name), None)

    def stop(self, name: str, grace: float = 3.0) -> list[str] | None:
        """Stop `name` (SIGTERM, SIGKILL after `grace` s); its arguments, for a restart, or
        None when it was not running. Safe from any thread."""
        proc = self.get(name)
        if proc is None:
            return None
        stop_process(proc.popen, grace=grace)
        self._procs.remove(proc)
        return proc.args

    def exited(self) -> Process | None:
        """The first supervised process that has exited, if any."""
        return next((p for p in self._procs if p.popen.poll() is not None), None)

    def failure(self, proc: Process | None, why: str) -> str:
        """`why`, with the log and the last lines of `proc`'s."""
        if proc is None or not proc.log.exists():
            return why
        lines = proc.log.read_text(errors="replace").splitlines()[-25:]
        return f"{why}; its log: {proc.log}\n    " + "\n    ".join(lines)

    def stop_all(self, grace: float = 3.0) -> None:
        """Stop every process: all are sent SIGTERM at once, latest first, then each gets
        `grace` s before SIGKILL (an API server would drain its watches for longer)."""
        for proc in reversed(self._procs):
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in reversed(self._procs):
            reap(proc.popen, grace)
        self._procs.clear()
