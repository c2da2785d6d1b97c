"""A benchmark contender: the official client's ``kubernetes.leaderelection`` with LeaseLock.

    python -m benchmarks.official_candidate --kubeconfig PATH --namespace NS --lease NAME \
        --id ID --ttl 4

Prints FOLLOWING, then LEADING on acquiring (like `examples.candidate`), with client-go's
timing ratios scaled to the TTL. This is the elector Python users find first (threads). It
polls the Lease every retry period, has no release on shutdown (SIGTERM ends the process
like a crash), and once it loses the Lease `run()` returns: the process then exits.

Its asyncio twin, ``kubernetes.aio.leaderelection``, cannot be measured with kubernetes
37.0.2: its LeaseLock passes ``pretty=True`` to ``create_namespaced_lease``, which the
generated client's validation rejects, so it never creates a Lease.
"""

from __future__ import annotations

import argparse

import kubernetes
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.official_candidate",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", default="default")
    p.add_argument("--lease", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--ttl", type=int, default=15)
    args = p.parse_args()
    kubernetes.config.load_kube_config(config_file=args.kubeconfig)  # its lock uses the default
    config = electionconfig.Config(
        LeaseLock(args.lease, args.namespace, args.id), lease_duration=args.ttl,
        renew_deadline=args.ttl * 2 / 3, retry_period=args.ttl / 3,
        onstarted_leading=lambda: print("LEADING", flush=True),
        onstopped_leading=lambda: print("FOLLOWING", flush=True))
    print("FOLLOWING", flush=True)
    leaderelection.LeaderElection(config).run()


if __name__ == "__main__":
    main()
