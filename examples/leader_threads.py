"""The same with threads: pykube-ng and the blocking `leadership.sync` facade.

    python -m examples.leader_threads --lease my-app [--namespace default] [--seconds 30]

Uses $KUBECONFIG (or ~/.kube/config).
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
    with sync.Candidate(store, lease, ttl=15) as candidate:
        threading.Timer(seconds, candidate.stop).start()  # stop() may come from any thread
        for leading in candidate.run_for_election():  # blocks; ends after stop()
            if leading:
                print(f"{candidate.node}: leading (fencing token {candidate.fencing_token})",
                      flush=True)
            else:
                print(f"{candidate.node}: following", flush=True)
    print(f"{candidate.node}: stopped; the lease is released", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lease", required=True)
    p.add_argument("--namespace", default="default")
    p.add_argument("--seconds", type=float, default=3600.0, help="quit after this long")
    args = p.parse_args()
    main(args.lease, args.namespace, args.seconds)
