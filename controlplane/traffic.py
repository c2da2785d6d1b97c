"""`Traffic`: a client on the node that calls one Service over and over and records who
answered, on the same monotonic clock as `controlplane.recorder.ClusterRecorder`.

Each request opens a new TCP connection (``Connection: close``), so every request is routed
afresh by kube-proxy, as a new client's would be; requests start on a fixed cadence whether
or not the previous one has answered (a request to a vanished pod hangs until its timeout),
so a slow answer never hides what the next request would have seen.

With ``keep_alive=True`` it is the other kind of client, the one every HTTP library and
database driver is by default: one connection, kept open, its requests one after another
on the same cadence (each waits for the previous answer); a new connection only once the
open one failed or was closed. kube-proxy routes that connection once, when it opens.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


def ask(address: str, port: int = 80, timeout: float = 1.0) -> str | None:
    """One request to ``http://<address>:<port>/``: the answering pod's name, or None."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read().decode(errors="replace").strip()
        return body if response.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()


@dataclass(frozen=True)
class Answer:
    sent: float  # monotonic
    done: float
    body: str | None  # the answering pod's name; None if the request failed
    error: str = ""


class Traffic:
    """Calls ``http://<address>/`` every `interval` seconds from a thread until `stop()`."""

    def __init__(self, address: str, *, interval: float = 0.05, timeout: float = 1.0,
                 port: int = 80, keep_alive: bool = False) -> None:
        self.address, self.port, self.interval, self.timeout = address, port, interval, timeout
        self.keep_alive = keep_alive
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(4, int(timeout / interval) + 2),
                                        thread_name_prefix="traffic")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def _run(self) -> None:
        next_at = time.monotonic()
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if self.keep_alive:
                conn = self._kept(conn, time.monotonic())
            else:
                self._pool.submit(self._one, time.monotonic())
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            conn.close()

    def _kept(self, conn: http.client.HTTPConnection | None,
              sent: float) -> http.client.HTTPConnection | None:
        """One request on the kept-alive connection (opened if there is none); the
        connection to use next, None once this one failed."""
        if conn is None:
            conn = http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            body = response.read().decode(errors="replace").strip()
            answer = (Answer(sent, time.monotonic(), body) if response.status == 200
                      else Answer(sent, time.monotonic(), None, f"HTTP {response.status}"))
            kept: http.client.HTTPConnection | None = None if response.will_close else conn
        except (OSError, http.client.HTTPException) as exc:
            answer = Answer(sent, time.monotonic(), None, type(exc).__name__)
            kept = None
        if kept is None:
            conn.close()
        with self._lock:
            self.answers.append(answer)
        return kept

    def _one(self, sent: float) -> None:
        conn = http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)
        try:
            conn.request("GET", "/", headers={"Connection": "close"})
            response = conn.getresponse()
            body = response.read().decode(errors="replace").strip()
            answer = (Answer(sent, time.monotonic(), body) if response.status == 200
                      else Answer(sent, time.monotonic(), None, f"HTTP {response.status}"))
        except OSError as exc:
            answer = Answer(sent, time.monotonic(), None, type(exc).__name__)
        finally:
            conn.close()
        with self._lock:
            self.answers.append(answer)

    def stop(self) -> list[Answer]:
        """Stop sending, wait for the requests in flight; the answers in the order sent."""
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)
        return self.snapshot()

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return sorted(self.answers, key=lambda a: a.sent)

    def first_answer_from(self, pod: str, after: float) -> Answer | None:
        """The first answer by `pod` to a request sent at or after `after`."""
        return next((a for a in self.snapshot() if a.sent >= after and a.body == pod), None)

    def longest_silence(self, start: float, end: float) -> float:
        """The longest time between two successful answers (by send time) in [start, end]."""
        times = [a.sent for a in self.snapshot() if a.body and start <= a.sent <= end]
        edges = [start, *times, end]
        return max(b - a for a, b in itertools.pairwise(edges))
