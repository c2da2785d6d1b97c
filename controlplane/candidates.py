"""The one way to build a candidate process's command line, for every kind the project runs
side by side: this library's example candidate on either client, the sidecar, client-go's
elector (the `leaderpeer` Go peer) and the official Python client's elector. Used by the
benchmarks, the chaos run, the tests and the demos, so that "a client-go candidate" means
the same flags everywhere.

Each kind prints FOLLOWING, then LEADING when it acquires (the sidecar answers on its port
instead); see `examples/candidate.py` and `controlplane/gomod/leaderpeer`.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import build

#: this library's candidate (`examples.candidate`) on the official client, or on pykube-ng.
PYTHON_KINDS = ("kubernetes", "pykube")
KINDS = (*PYTHON_KINDS, "client-go", "sidecar", "kubernetes-leaderelection")


@dataclass(frozen=True)
class CandidateProcess:
    """One candidate process to start: `kind` (one of `KINDS`) campaigning for `lease` in
    `namespace` as `identity`, with a Lease duration of `ttl` seconds.

    `renew_deadline` and `retry_period` (seconds) are client-go's; None takes client-go's
    ratios of `ttl` (2/3 and 2/15, as 10 s and 2 s of 15 s). `port` is the sidecar's;
    `events` asks this library's candidate for JSON lines with monotonic times (chaos)."""

    kind: str
    kubeconfig: Path
    lease: str
    identity: str
    ttl: int
    namespace: str = "default"
    renew_deadline: float | None = None
    retry_period: float | None = None
    port: int | None = None
    events: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "sidecar" and self.port is None:
            raise ValueError("port is required for a sidecar")

    def command(self) -> list[str]:
        if self.kind == "client-go":
            deadline = self.renew_deadline or self.ttl * 2 / 3
            retry = self.retry_period or self.ttl * 2 / 15
            return [str(build.ensure(["leaderpeer"])["leaderpeer"]),
                    f"-kubeconfig={self.kubeconfig}", f"-id={self.identity}",
                    f"-lease-name={self.lease}", f"-namespace={self.namespace}",
                    f"-lease-duration={self.ttl}s", f"-renew-deadline={_ms(deadline)}",
                    f"-retry-period={_ms(retry)}"]
        if self.kind == "sidecar":
            return [sys.executable, "-m", "leadership_operator.cli", "sidecar",
                    f"--election={self.lease}", f"--namespace={self.namespace}",
                    f"--identity={self.identity}", f"--kubeconfig={self.kubeconfig}",
                    f"--port={self.port}", f"--lease-seconds={self.ttl}",
                    "--log-format=text"]
        if self.kind == "kubernetes-leaderelection":
            return [sys.executable, "-m", "benchmarks.official_candidate",
                    f"--kubeconfig={self.kubeconfig}", f"--namespace={self.namespace}",
                    f"--lease={self.lease}", f"--id={self.identity}", f"--ttl={self.ttl}"]
        return [sys.executable, "-m", "examples.candidate", f"--kubeconfig={self.kubeconfig}",
                f"--namespace={self.namespace}", f"--lease={self.lease}",
                f"--id={self.identity}", f"--ttl={self.ttl}", f"--store={self.kind}",
                *(["--events"] if self.events else [])]


def sidecar_answer(port: int, timeout: float = 1.0) -> dict[str, Any]:
    """What the sidecar on `port` answers to ``GET /leader`` (``is_leader``, ``leader``,
    ``fencing_token``, ...), or ``{"is_leader": False}`` when it does not answer: an app in
    another language sees just this."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/leader", timeout=timeout) as r:
            answer = json.loads(r.read())
    except (OSError, ValueError):
        return {"is_leader": False}
    return answer if isinstance(answer, dict) else {"is_leader": False}


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"
