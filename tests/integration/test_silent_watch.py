"""A watch that goes silent (a half-open TCP connection) never fakes an expiry.

Between the observing process and the real API server sits `controlplane.proxy.TcpProxy`.
Once the watch is established, its connection is blackholed: nothing is forwarded, nothing is
closed, so the client hears neither events nor an error. The leader renews on a healthy
connection of its own throughout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import leadership
from controlplane.cluster import Cluster, kubeconfig_via, proxy_to
from controlplane.proxy import Link, TcpProxy
from controlplane.waiting import eventually_async
from tests.integration.helpers import StoreFactory, consume

TTL = 2  # renew every 0.67 s, give up after 1.33 s, followers wait 2 s
KEY = "silent"


@pytest.fixture
def proxy(cluster: Cluster) -> Iterator[TcpProxy]:
    with proxy_to(cluster.kubeconfig) as started:
        yield started


@pytest.fixture
def proxied(stores: StoreFactory, proxy: TcpProxy, cluster: Cluster,
            tmp_path: Path) -> StoreFactory:
    """Stores of the same kind whose every connection goes through `proxy`."""
    return StoreFactory(stores.kind, kubeconfig_via(proxy, cluster.kubeconfig,
                                                    tmp_path / "via-proxy"), stores.namespace)


async def blackhole_the_watch(proxy: TcpProxy) -> Link:
    """Blackhole the connection that carries the watch: the one whose traffic grows as the
    leader's renewals (every 0.67 s) arrive as watch events. Idle pooled ones stay."""
    watch = await asyncio.to_thread(proxy.busiest_link)
    proxy.blackhole([watch])
    return watch


async def test_a_follower_keeps_the_live_leader_and_sees_the_next_change(
        stores: StoreFactory, proxied: StoreFactory, proxy: TcpProxy) -> None:
    a = await stores.candidate(KEY, "a", ttl=TTL)
    await consume(a)
    await eventually_async(lambda: a.is_leader, 5, "a leads")
    follower = leadership.Follower(await proxied(), KEY)
    seen: list[tuple[float, str]] = []

    async def follow() -> None:
        async for leader in follower:
            seen.append((time.monotonic(), leader))

    task = asyncio.ensure_future(follow())
    try:
        await eventually_async(lambda: bool(seen) and seen[-1][1] == "a", 5, "the follower sees a")
        await blackhole_the_watch(proxy)
        await asyncio.sleep(3 * TTL)  # several expiries' worth of silence
        assert [leader for _, leader in seen] == ["a"], seen  # never a false ""
        assert a.is_leader

        # Silence the (restarted) watch again, then hand over: the change must still arrive
        # within TTL + 1 s, through the read that confirms the expiry.
        await blackhole_the_watch(proxy)
        b = await stores.candidate(KEY, "b", ttl=TTL)
        await consume(b)
        released = time.monotonic()
        await a.stop()
        await eventually_async(lambda: seen[-1][1] == "b", TTL + 1, "the follower sees b")
        assert time.monotonic() - released <= TTL + 1
        assert all(t >= released for t, leader in seen[1:]), seen  # nothing before the change
    finally:
        await follower.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await proxied.close()


async def test_a_follower_candidate_neither_writes_over_the_leader_nor_stalls(
        stores: StoreFactory, proxied: StoreFactory, proxy: TcpProxy) -> None:
    a = await stores.candidate(KEY, "a", ttl=TTL)
    await consume(a)
    await eventually_async(lambda: a.is_leader, 5, "a leads")
    b = await proxied.candidate(KEY, "b", ttl=TTL)
    b_values = await consume(b)
    try:
        await eventually_async(lambda: b_values == [False], 5, "b campaigns")
        await blackhole_the_watch(proxy)
        overlap = []
        for _ in range(int(3 * TTL / 0.05)):
            await asyncio.sleep(0.05)
            if b.is_leader:
                overlap.append(time.monotonic())
        assert overlap == [] and b_values == [False] and a.is_leader
        assert b.metrics.acquire_conflicts == 0  # not even a write that lost its race
        stopped = time.monotonic()
        await a.stop()
        await eventually_async(lambda: b.is_leader, TTL + 1, "b takes over")
        assert time.monotonic() - stopped <= TTL + 1
    finally:
        await proxied.close()
