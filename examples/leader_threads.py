"""The same with threads: pykube-ng and the blocking `leadership.sync` facade.

    python -m examples.leader_threads --lease my-app [--namespace default] [--seconds 30]

Uses $KUBECONFIG (or ~/.kube/config). Start it twice: one prints "leading"; stop it (Ctrl-C)
and the other takes over at once.
"""

from __future__ import annotations

import argparse
import threading

import pykube

import leadership
from leadership import sync


def main(lease: str, namespace: str, seconds: float) -> None:
    api = pykube.HTTPClient(pykube.KubeConfig.from_file())
    store = leadership.PykubeLeaseStore(api, namespace)
    candidate = sync.Candidate(store, lease, ttl=15)
    # stop() may come from any thread. A daemon timer never keeps the process alive.
    timer = threading.Timer(seconds, candidate.stop)
    timer.daemon = True
    timer.start()

    def work(stop: threading.Event) -> None:  # runs in a worker thread while leading
        print(f"{candidate.node}: leading (fencing token {candidate.fencing_token})", flush=True)
        while not stop.wait(1.0):  # check the event between steps of the leader's job
            pass
        print(f"{candidate.node}: not leading any more", flush=True)

    try:
        candidate.run_while_leading(work)  # blocks; Ctrl-C stops the candidate and releases
    except KeyboardInterrupt:
        pass
    finally:
        timer.cancel()
    print(f"{candidate.node}: stopped; the lease is released", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lease", required=True)
    p.add_argument("--namespace", default="default")
    p.add_argument("--seconds", type=float, default=3600.0, help="quit after this long")
    args = p.parse_args()
    main(args.lease, args.namespace, args.seconds)
