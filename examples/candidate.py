"""A candidate process: campaigns for a Lease and prints LEADING / FOLLOWING as it changes.

    python -m examples.candidate --kubeconfig PATH --namespace NS --lease NAME --id ID \
        [--ttl 15] [--store kubernetes|pykube] [--events]

With ``--events`` it prints JSON lines instead, stamped with the machine's monotonic clock
(shared by every process), for a checker: ``{"event": "leading", "at", "sent", "token",
"until"}`` (``sent``: when the winning write was sent, the earliest its term can begin),
``{"event": "until", "at", "until"}`` after each renewal (``until`` is `leading_until`: when
its belief ends unless it renews), and ``{"event": "following", "at"}``.

SIGTERM or SIGINT stops it gracefully (the Lease is released if held); SIGKILL is a crash.
It imports only the client its store needs, so its memory is that client's, not both.
Used by `make demo`, `make bench` and the SIGKILL test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
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
    in_term = [False]  # shared with the reporter: a "following" ends the term it reports
    report = (asyncio.ensure_future(report_belief(candidate, in_term)) if args.events
              else None)
    try:
        async for leading in candidate.run_for_election():
            if not args.events:
                print("LEADING" if leading else "FOLLOWING", flush=True)
            elif not leading and in_term[0]:
                in_term[0] = False
                emit({"event": "following", "at": time.monotonic()})
    finally:
        if report is not None:
            report.cancel()
        await close()


def emit(event: dict[str, object]) -> None:
    print(json.dumps(event), flush=True)


async def report_belief(candidate: leadership.Candidate, in_term: list[bool]) -> None:
    """Every 10 ms: a new term ("leading") or a renewal that moved `leading_until`."""
    last: float | None = None
    while True:
        until = candidate.leading_until
        if until is not None and not in_term[0]:
            in_term[0] = True
            emit({"event": "leading", "at": time.monotonic(), "until": until,
                  "sent": until - candidate.timing.renew_deadline,  # the winning write's
                  "token": candidate.fencing_token})
        elif until is not None and until != last:
            emit({"event": "until", "at": time.monotonic(), "until": until})
        last = until
        await asyncio.sleep(0.01)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m examples.candidate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", default="default")
    p.add_argument("--lease", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--ttl", type=int, default=15)
    p.add_argument("--store", choices=["kubernetes", "pykube"], default="kubernetes")
    p.add_argument("--events", action="store_true",
                   help="JSON lines with monotonic times, for the chaos checker")
    asyncio.run(campaign(p.parse_args()))


if __name__ == "__main__":
    main()
