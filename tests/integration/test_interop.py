"""Go (client-go's leaderelection on a LeaseLock) and Python candidates share one Lease.

The Go peer (controlplane/gomod/leaderpeer) runs with lease-duration 4 s, renew-deadline
3 s, retry-period 0.5 s and ReleaseOnCancel; the Python candidates use ttl=4.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import kubernetes
import pytest

import leadership
from controlplane.candidates import CandidateProcess
from controlplane.cluster import Cluster
from controlplane.waiting import eventually_async
from tests.integration.helpers import StoreFactory, consume

TTL = 4


class GoPeer:
    """A client-go candidate in a child process; its stdout lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, kubeconfig: Path, namespace: str, key: str, identity: str) -> GoPeer:
        proc = await asyncio.create_subprocess_exec(
            *CandidateProcess("client-go", kubeconfig, key, identity, TTL, namespace,
                       renew_deadline=3, retry_period=0.5).command(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode().strip())

    @property
    def leading(self) -> bool:
        """Whether its last word was LEADING (STOPPED or exit ends it)."""
        events = [line for line in self.lines if line in ("LEADING", "STOPPED")]
        return bool(events) and events[-1] == "LEADING" and self.proc.returncode is None

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        await asyncio.wait_for(self.proc.wait(), 10)
        await self._reader


@pytest.fixture
async def go_peer(cluster: Cluster, namespace: str) -> AsyncIterator[GoPeer]:
    peer = await GoPeer.start(cluster.kubeconfig, namespace, "shared", "go")
    yield peer
    await peer.stop(signal.SIGKILL)


async def never_both(python: object, go: GoPeer, seconds: float) -> None:
    """Sample for `seconds`: Python and Go must never both believe they lead."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert not (python.is_leader and go.leading)  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)


async def test_python_waits_while_go_holds_then_takes_over_when_go_releases(
        stores: StoreFactory, go_peer: GoPeer) -> None:
    await eventually_async(lambda: go_peer.leading, 20, f"Go leads: {go_peer.lines}")
    py = await stores.candidate("shared", "py", ttl=TTL)
    values = await consume(py)
    await never_both(py, go_peer, 3 * TTL / 2)  # Go renews; Python must keep waiting
    assert values == [False]
    released_at = time.monotonic()
    await go_peer.stop(signal.SIGTERM)  # ReleaseOnCancel writes holderIdentity ""
    await eventually_async(lambda: py.is_leader, 1.0, "Python leads after Go released")
    assert time.monotonic() - released_at < 1.0


async def test_python_takes_over_after_go_crashes_once_the_lease_expires(
        stores: StoreFactory, go_peer: GoPeer) -> None:
    await eventually_async(lambda: go_peer.leading, 20, f"Go leads: {go_peer.lines}")
    py = await stores.candidate("shared", "py", ttl=TTL)
    await consume(py)
    await eventually_async(lambda: py.watching and py.leader == "go", 5,
                           "Python watches the Lease Go holds")
    await go_peer.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    await eventually_async(lambda: py.is_leader, TTL + 1, "Python leads after the Go leader died")
    took = time.monotonic() - killed_at
    # Go renewed at most one retry period before dying: Python waits out the rest of its TTL.
    assert TTL - 0.5 - 0.2 <= took <= TTL + 1, took


async def test_go_waits_while_python_holds_then_takes_over_when_python_releases(
        stores: StoreFactory, cluster: Cluster, namespace: str) -> None:
    py = await stores.candidate("shared", "py", ttl=TTL)
    await consume(py)
    await eventually_async(lambda: py.is_leader, 5, "Python leads")
    go = await GoPeer.start(cluster.kubeconfig, namespace, "shared", "go")
    try:
        await eventually_async(lambda: "LEADER py" in go.lines, 20, f"Go sees Python: {go.lines}")
        await never_both(py, go, 3 * TTL / 2)
        assert "LEADING" not in go.lines
        stopped_at = time.monotonic()
        await py.stop()
        await eventually_async(lambda: go.leading, 2.0,
                               f"Go leads after Python released: {go.lines}")
        # client-go polls every retry period (0.5 s, jittered up to 1.2x): no watch.
        assert time.monotonic() - stopped_at < 2.0
    finally:
        await go.stop(signal.SIGKILL)


async def test_at_the_counter_bound_python_says_why_and_go_cannot_take_it_either(
        stores: StoreFactory, cluster: Cluster, namespace: str,
        core_api: kubernetes.client.ApiClient) -> None:
    # What the lease-holder policy now refuses a pod, an admin (or a pod without the
    # policy) can still write: a free Lease whose count is at the int32 maximum.
    leases = kubernetes.client.CoordinationV1Api(core_api)
    leases.create_namespaced_lease(namespace, {"metadata": {"name": "bound"}, "spec": {
        "holderIdentity": "", "leaseDurationSeconds": TTL, "leaseTransitions": 2**31 - 1}})
    py = await stores.candidate("bound", "py", ttl=TTL)
    with pytest.raises(leadership.FatalStoreError, match=r"at its maximum.*an admin deletes"):
        async with asyncio.timeout(10):
            async for leading in py.run_for_election():
                assert not leading
    # client-go sends the count + 1 as an int32: it wraps negative, the API server refuses
    # it (422), and client-go tries again every retry period, never leading.
    proc = await asyncio.create_subprocess_exec(
        *CandidateProcess("client-go", cluster.kubeconfig, "bound", "go", TTL, namespace,
                          renew_deadline=3, retry_period=0.5).command(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            while b"greater than or equal to 0" not in (line := await proc.stderr.readline()):
                assert line, "client-go exited without the API server's refusal"
    finally:
        proc.kill()
        out, _ = await proc.communicate()
    assert b"LEADING" not in out
    lease = leases.read_namespaced_lease("bound", namespace)
    assert (lease.spec.holder_identity, lease.spec.lease_transitions) == ("", 2**31 - 1)
