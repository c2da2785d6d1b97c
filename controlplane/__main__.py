"""`python -m controlplane [--node]`: start a control plane (and a node), print KUBECONFIG,
wait for Ctrl-C, then tear everything down."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .errors import ControlPlaneError
from .launcher import ControlPlane
from .local import LocalCluster


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controlplane", description=__doc__)
    p.add_argument("--no-controller-manager", action="store_true",
                   help="skip kube-controller-manager (then Deployments make no Pods)")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir and logs on exit")
    p.add_argument("--node", action="store_true",
                   help="also run a real node (root, Linux): containerd, kubelet, scheduler, "
                        "kube-proxy, with the project's image loaded")
    args = p.parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    cluster: ControlPlane | LocalCluster
    if args.node:
        cluster = LocalCluster(keep_logs=args.keep_logs)
        cp = cluster.control_plane
    else:
        cluster = cp = ControlPlane(with_controller_manager=not args.no_controller_manager,
                                    keep_logs=args.keep_logs)
    try:
        cluster.start()
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"control plane ready at {cp.server}; logs in {cp.logs}", flush=True)
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
        print("Ctrl-C stops it and removes its files.", flush=True)
        while not done.wait(1.0):
            cluster.check_alive()
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
