"""containerd's task events, as the tests and the demo read them."""

from __future__ import annotations

import datetime
import json
import subprocess
import threading
from pathlib import Path

from ..waiting import eventually


class RuntimeEvents:
    """containerd's task events (``ctr events``) from now on, stamped by containerd: which
    container started or exited when. `Node.events()` starts one; `close()` ends it.

    "From now on" holds from the moment the constructor returns: ``ctr events`` subscribes
    some time after it starts (longer on a busy machine), so the constructor labels the CRI
    namespace (a ``/namespaces/update`` event) until its own stream shows the event, then
    takes the label off."""

    TOPICS = ("/tasks/start", "/tasks/exit")
    PROBE = "leadership.dev/events-probe"

    def __init__(self, ctr: Path, socket: Path, within: float = 10.0) -> None:
        self.seen: list[tuple[float, str, str]] = []  # (unix time, topic, container id)
        self._subscribed = threading.Event()
        ctl = [str(ctr), f"--address={socket}"]
        self._proc = subprocess.Popen([*ctl, "--namespace=k8s.io", "events"],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        probes = iter(range(1, 1 << 30))

        def subscribed() -> bool:
            subprocess.run([*ctl, "namespaces", "label", "k8s.io",
                            f"{self.PROBE}={next(probes)}"], capture_output=True, timeout=10)
            return self._subscribed.wait(0.2)

        try:
            eventually(subscribed, within, "containerd's event stream subscribed", every=0)
        except AssertionError:
            self.close()
            raise
        finally:
            subprocess.run([*ctl, "namespaces", "label", "k8s.io", f"{self.PROBE}="],
                           capture_output=True, timeout=10)

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            # 2026-12-01 09:21:37.681489873 +0000 UTC k8s.io /tasks/exit {"container_id": ...}
            parts = line.split(" ", 6)
            if len(parts) >= 7 and parts[5] == "/namespaces/update" and self.PROBE in parts[6]:
                self._subscribed.set()
            if len(parts) < 7 or parts[5] not in self.TOPICS:
                continue
            day, clock = parts[0], parts[1]
            whole, _, fraction = clock.partition(".")
            stamp = datetime.datetime.fromisoformat(f"{day}T{whole}+00:00").timestamp()
            self.seen.append((stamp + float(f"0.{fraction or 0}"), parts[5],
                              json.loads(parts[6])["container_id"]))

    def when(self, topic: str, container_id: str) -> float:
        """When `container_id` (with or without ``containerd://``) had `topic` (the last time)."""
        cid = container_id.removeprefix("containerd://")
        times = [t for t, top, c in list(self.seen) if top == topic and c == cid]
        if not times:
            raise LookupError(f"no {topic} event for container {cid[:12]}")
        return times[-1]

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)
        self._thread.join(timeout=10)


