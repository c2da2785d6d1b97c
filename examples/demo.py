"""`make demo`: Python and client-go candidates share one Lease on a local control plane.

It starts etcd + kube-apiserver on loopback (building them on first use), then four candidate
processes on the Lease ``demo``: two on the official client (``kubernetes.aio``), one on
pykube-ng, and one client-go program. A Follower prints each change of leader. The demo then
stops the leader gracefully, crashes the next one with SIGKILL, and stops the third, measuring
each failover, and shows what ``kubectl get lease`` says.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import kubernetes.aio.config

import leadership
from controlplane.candidates import CandidateProcess
from controlplane.launcher import ControlPlane
from controlplane.waiting import eventually_async

TTL = 4
LEASE = "demo"


def say(message: str, t0: float | None = None) -> None:
    stamp = f"[{time.monotonic() - t0:7.3f}s] " if t0 is not None else ""
    print(f"{stamp}{message}", flush=True)


def start_members(cp: ControlPlane) -> dict[str, subprocess.Popen[bytes]]:
    kinds = {"py-official-1": "kubernetes", "py-pykube-2": "pykube",
             "go-client-go-3": "client-go", "py-official-4": "kubernetes"}
    commands = {name: CandidateProcess(kind, cp.kubeconfig, LEASE, name, TTL, renew_deadline=3,
                                retry_period=0.5).command()
                for name, kind in kinds.items()}
    members = {}
    for name, command in commands.items():
        members[name] = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL if name.startswith("go")
                                         else None)
        time.sleep(0.3)  # a stable order of arrival makes the story easier to follow
    return members


async def run(cp: ControlPlane) -> list[tuple[str, str, str, float]]:
    api = await kubernetes.aio.config.new_client_from_config(config_file=str(cp.kubeconfig))
    follower = leadership.Follower(leadership.KubernetesLeaseStore(api, "default"), LEASE)
    leaders: list[tuple[float, str]] = []
    t0 = time.monotonic()

    async def follow() -> None:
        async for leader in follower:
            leaders.append((time.monotonic(), leader))
            say(f"leader: {leader or '(none: the lease is free or expired)'}", t0)

    following = asyncio.ensure_future(follow())
    members = start_members(cp)
    say(f"started {', '.join(members)} on Lease default/{LEASE} (ttl {TTL}s)", t0)

    async def next_leader(after: float, old: str, within: float) -> str:
        def new() -> str | None:
            return next((who for when, who in leaders if when >= after and who and who != old),
                        None)

        return str(await eventually_async(
            new, within, f"a new leader after {old}",
            fail=lambda _: RuntimeError(f"no new leader within {within}s after {old}")))

    first = await next_leader(t0, "", 30)
    await asyncio.sleep(2)
    print("\n$ kubectl get lease " + LEASE, flush=True)
    print(cp.kubectl("get", "lease", LEASE).stdout, flush=True)

    results = []
    current = first
    for action, sig in (("graceful stop (SIGTERM)", signal.SIGTERM),
                        ("crash (SIGKILL)", signal.SIGKILL),
                        ("graceful stop (SIGTERM)", signal.SIGTERM)):
        say(f"{action} of the leader {current}", t0)
        started = time.monotonic()
        members[current].send_signal(sig)
        new = await next_leader(started, current, 3 * TTL)
        took = next(when for when, who in leaders if when >= started and who == new) - started
        results.append((action, current, new, took))
        members[current].wait(10)
        current = new
        await asyncio.sleep(1.5)

    print("\n$ kubectl get lease " + LEASE + " -o custom-columns=...", flush=True)
    print(cp.kubectl("get", "lease", LEASE, "-o",
                     "custom-columns=HOLDER:.spec.holderIdentity,"
                     "DURATION:.spec.leaseDurationSeconds,TRANSITIONS:.spec.leaseTransitions,"
                     "RENEWED:.spec.renewTime").stdout, flush=True)
    for proc in members.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in members.values():
        proc.wait(10)
    await follower.stop()
    await following
    await api.close()
    return results


def main() -> int:
    print("Starting a local control plane (etcd + kube-apiserver). The first run builds "
          "them from the Go module proxy: about 5 minutes.", flush=True)
    with ControlPlane() as cp:
        results = asyncio.run(run(cp))
    print("\nFailovers (measured by the Follower's watch):")
    print(f"{'what':26} {'from':16} {'to':16} {'seconds':>8}")
    for action, old, new, took in results:
        print(f"{action:26} {old:16} {new:16} {took:8.3f}")
    print(f"\nA graceful stop releases the Lease: a watching Python candidate takes it at once "
          f"(client-go polls, so it takes up to its retry period). A crash is waited out for "
          f"the TTL ({TTL}s) from the last renewal seen.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
