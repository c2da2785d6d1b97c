"""A candidate process: campaigns for a Lease and prints LEADING / FOLLOWING as it changes.

    python -m examples.candidate --kubeconfig PATH --namespace NS --lease NAME --id ID \
        [--ttl 15] [--store kubernetes|pykube]

SIGTERM or SIGINT stops it gracefully (the Lease is released if held); SIGKILL is a crash.
It imports only the client its store needs, so its memory is that client's, not both.
Used by `make demo`, `make bench` and the SIGKILL test.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable

import leadership


async def open_store(kind: str, kubeconfig: str,
                     namespace: str) -> tuple[leadership.LeaseStore, Callable[[], Awaitable[None]]]:
    """A store of `kind` and a coroutine function that closes its client."""
    if kind == "kubernetes":
        import kubernetes.aio.config

        api = await kubernetes.aio.config.new_client_from_config(config_file=kubeconfig)
        return leadership.KubernetesLeaseStore(api, namespace), api.close
    import pykube

    http = pykube.HTTPClient(pykube.KubeConfig.from_file(kubeconfig))

    async def close() -> None:
        http.session.close()

    return leadership.PykubeLeaseStore(http, namespace), close


async def campaign(args: argparse.Namespace) -> None:
    store, close = await open_store(args.store, args.kubeconfig, args.namespace)
    candidate = leadership.Candidate(store, args.lease, args.id, ttl=args.ttl)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(candidate.stop()))
    try:
        async for leading in candidate.run_for_election():
            print("LEADING" if leading else "FOLLOWING", flush=True)
    finally:
        await close()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m examples.candidate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", default="default")
    p.add_argument("--lease", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--ttl", type=int, default=15)
    p.add_argument("--store", choices=["kubernetes", "pykube"], default="kubernetes")
    asyncio.run(campaign(p.parse_args()))


if __name__ == "__main__":
    main()
