"""The fault schedule of a chaos run: seeded, so the same seed replays the same faults.

`make_schedule(seed, seconds)` draws, one after another, a fault kind, its target and its
length, with random gaps, until `seconds - quiet` (the quiet tail lets the checker see the
election settle). A target is a role resolved when the fault fires: "leader" is whichever
candidate leads then, so the kinds, times and lengths replay exactly, while who is hit
depends on who leads at that moment.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: kind -> weight. Process faults dominate; control-plane restarts are rarer (they are slow).
KINDS = {
    "kill-candidate": 3,     # SIGKILL a candidate (or the sidecar), restarted shortly after
    "zombie-leader": 3,      # SIGSTOP the leader for longer than the TTL, then SIGCONT
    "kill-operator": 2,      # SIGKILL an operator replica, restarted shortly after
    "proxy-latency": 2,      # 200-500 ms each way on a proxied candidate's connections
    "proxy-blackhole": 2,    # cut a proxied candidate off (longer than the TTL), then heal
    "proxy-reset": 2,        # RST every connection of a proxied candidate or operator
    "starve-cpu": 1,         # nice 19 one candidate while both cores are kept busy
    "restart-apiserver": 1,
    "restart-etcd": 1,
}


@dataclass(frozen=True)
class Fault:
    at: float          # seconds after the run started
    kind: str
    target: str        # "leader", "c2", "op-1", "proxied:0", ... ("" for the control plane)
    seconds: float     # how long it lasts (0: instantaneous)

    def __str__(self) -> str:
        target = f" {self.target}" if self.target else ""
        length = f" for {self.seconds:.1f}s" if self.seconds else ""
        return f"t+{self.at:6.1f}s {self.kind}{target}{length}"


def make_schedule(seed: int, seconds: float, *, ttl: float, candidates: list[str],
                  operators: list[str], proxied: int, quiet: float, start: float = 8.0,
                  ) -> list[Fault]:
    rng = random.Random(seed)
    kinds, weights = zip(*KINDS.items(), strict=True)
    faults: list[Fault] = []
    t = start
    while True:
        kind = rng.choices(kinds, weights)[0]
        if kind == "kill-candidate":
            fault = Fault(t, kind, rng.choice(candidates), rng.uniform(0.5, 3.0))
        elif kind == "zombie-leader":
            fault = Fault(t, kind, "leader", ttl + rng.uniform(0.5, 2.0))
        elif kind == "kill-operator":
            fault = Fault(t, kind, rng.choice(operators), rng.uniform(0.5, 2.0))
        elif kind.startswith("proxy-"):
            length = {"proxy-latency": rng.uniform(2.0, 5.0),
                      "proxy-blackhole": ttl + rng.uniform(0.5, 2.0),
                      "proxy-reset": 0.0}[kind]
            fault = Fault(t, kind, f"proxied:{rng.randrange(proxied)}", length)
        elif kind == "starve-cpu":
            fault = Fault(t, kind, rng.choice(candidates), rng.uniform(2.0, 5.0))
        else:
            fault = Fault(t, kind, "", rng.uniform(0.5, 2.0))  # downtime
        if fault.at + fault.seconds > seconds - quiet:
            return faults
        faults.append(fault)
        t = fault.at + fault.seconds + rng.uniform(1.0, 4.0)
