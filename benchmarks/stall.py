"""Try to reproduce the stall once reported for two fresh pykube candidates under CPU
saturation (issue 3's closing note: one unexplained 30 s wait for a first leader).

    python -m benchmarks.stall [--trials 12] [--busy 2]

Starts the local control plane and `--busy` CPU burners (`stress --cpu N`, Debian's stress),
then, per trial, two fresh pykube candidates on a new Lease (TTL 4 s), and prints how long
the first one took to lead. A trial over 10 s is a stall: its candidates' logs are kept.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from controlplane.launcher import ControlPlane

ROOT = Path(__file__).resolve().parents[1]
STALL = 10.0


def first_leader(cp: ControlPlane, lease: str, logs: Path) -> float | None:
    leading: list[float] = []
    procs = []
    started = time.monotonic()
    for i in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-m", "examples.candidate", f"--kubeconfig={cp.kubeconfig}",
             f"--lease={lease}", f"--id=p{i}", "--ttl=4", "--store=pykube"], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=(logs / f"{lease}-{i}.log").open("w"), text=True)
        procs.append(proc)

        def read(proc: subprocess.Popen[str] = proc) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip() == "LEADING":
                    leading.append(time.monotonic())

        threading.Thread(target=read, daemon=True).start()
    while not leading and time.monotonic() - started < 60:
        time.sleep(0.01)
    for proc in procs:
        proc.kill()
        proc.wait()
    return leading[0] - started if leading else None


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stall", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--busy", type=int, default=2, help="CPU burners (stress --cpu N)")
    args = p.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="leadership-stall-"))
    stalls = 0
    with ControlPlane() as cp:
        burners = subprocess.Popen(["stress", "--cpu", str(args.busy)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for trial in range(args.trials):
                took = first_leader(cp, f"stall-{trial}", logs)
                stalled = took is None or took > STALL
                stalls += stalled
                print(f"trial {trial}: first leader after "
                      f"{'never (60 s)' if took is None else f'{took:.2f} s'}"
                      f"{'  STALL' if stalled else ''}", flush=True)
        finally:
            burners.kill()
            burners.wait()
    print(f"{stalls} stalls in {args.trials} trials; logs in {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
