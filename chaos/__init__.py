"""`make chaos`: seeded fault injection against real candidates, the sidecar and the
operator on the local control plane, and a checker that fails the run on split brain.

- `schedule`: the seeded, replayable list of faults (pure).
- `checker`: the rules a run must satisfy, as pure functions of what was recorded.
- `run`: the harness (``python -m chaos.run``), which writes docs/reliability.md.
"""
