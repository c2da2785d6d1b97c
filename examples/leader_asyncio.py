"""Run work only while leading, with asyncio and the official client.

    python -m examples.leader_asyncio --lease my-app [--namespace default] [--seconds 30]

Uses $KUBECONFIG (or ~/.kube/config). Start it twice: one prints "working as leader" each
second; stop it (Ctrl-C) and the other takes over at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import kubernetes.aio.config

import leadership


async def main(lease: str, namespace: str, seconds: float) -> None:
    api = await kubernetes.aio.config.new_client_from_config()
    store = leadership.KubernetesLeaseStore(api, namespace)
    candidate = leadership.Candidate(store, lease, ttl=15)

    async def work() -> None:  # cancelled the moment leadership is lost
        while True:
            print(f"{candidate.node}: working as leader "
                  f"(fencing token {candidate.fencing_token})", flush=True)
            await asyncio.sleep(1)

    try:
        async with candidate:
            with contextlib.suppress(TimeoutError):
                # Ctrl-C cancels this: the work stops, then the Lease is released.
                await asyncio.wait_for(candidate.run_while_leading(work), seconds)
    finally:
        await api.close()
        print(f"{candidate.node}: stopped; the lease is released", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lease", required=True)
    p.add_argument("--namespace", default="default")
    p.add_argument("--seconds", type=float, default=3600.0, help="quit after this long")
    args = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.lease, args.namespace, args.seconds))
