"""`python -m controlplane.node prepare|sweep|reap`."""

from __future__ import annotations

import os
import sys
import time

from .. import build, host, images
from .janitor import leftovers, reap, sweep
from .machine import (
    BEFORE_FILE,
    NODE_BINARIES,
    NodeError,
    own_dirs,
    say,
)


def main(argv: list[str] | None = None) -> int:
    """`python -m controlplane.node prepare|sweep`: install, build and cache what a node
    needs (packages, binaries, images) without starting one, so that `make test` builds
    before its timed tests run; or remove what a killed node left. On a machine that cannot
    host a node, `prepare` says why and exits 0 (the node's tests then fail with that
    reason); both exit 2 when another node of ours runs here."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m controlplane.node", description=main.__doc__)
    parser.add_argument("what", choices=["prepare", "sweep", "reap"],
                        help="prepare: build what a node needs; sweep: remove what a killed "
                             "node left behind; reap: (internal) sweep when stdin closes")
    args = parser.parse_args(argv)
    if args.what == "reap":
        return reap()
    if sys.platform != "linux" or os.geteuid() != 0:
        say(f"no node on this machine: {host.why_no_node(own_dirs())}")
        return 0 if args.what == "prepare" else 2
    lock = host.NodeLock()
    try:
        lock.acquire()
    except RuntimeError as exc:
        say(str(exc))
        return 2
    try:
        if args.what == "sweep":
            sweep(trust_unmarked=False)
            say("swept: nothing of a node is left" if not leftovers()
                else f"left: {leftovers()}")
            return 0
        why = host.why_no_node(own_dirs(), leftover_of_ours=BEFORE_FILE.exists())
        if why:
            say(f"no node on this machine: {why}")
            return 0
        t0 = time.monotonic()
        host.ensure_packages(say)
        build.ensure([*NODE_BINARIES])
        images.ensure_all(say)
        say(f"ready: binaries and images cached ({time.monotonic() - t0:.0f} s)")
        return 0
    except (NodeError, build.BuildError, images.ImageError, RuntimeError, OSError) as exc:
        say(f"error: {exc}")
        return 2
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
