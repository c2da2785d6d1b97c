"""A hung request costs one attempt, not the term.

The leader reaches the real API server through `controlplane.proxy.TcpProxy`. Once it leads,
every connection it has open is blackholed (nothing forwarded, nothing closed), while a fresh
connection would work. Each renewal attempt is bounded by `Timing.attempt_timeout` (a third of
the window between the first attempt and the renew deadline), then retried on a fresh
connection, so the leader keeps its term.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.cluster import Cluster, kubeconfig_via, proxy_to
from controlplane.proxy import TcpProxy
from controlplane.waiting import eventually_async
from tests.integration.helpers import StoreFactory, consume

TTL = 4  # renew every 1.33 s, give up after 2.67 s; one attempt may take 0.44 s
KEY = "hung"


@pytest.fixture
def proxy(cluster: Cluster) -> Iterator[TcpProxy]:
    with proxy_to(cluster.kubeconfig) as started:
        yield started


async def test_the_leader_keeps_its_term_when_its_connections_freeze(
        stores: StoreFactory, proxy: TcpProxy, cluster: Cluster, tmp_path: Path) -> None:
    proxied = StoreFactory(stores.kind, kubeconfig_via(proxy, cluster.kubeconfig,
                                                       tmp_path / "via-proxy"), stores.namespace)
    try:
        a = await proxied.candidate(KEY, "a", ttl=TTL)
        a_values = await consume(a)
        await eventually_async(lambda: a.is_leader, 5, "a leads")
        b = await stores.candidate(KEY, "b", ttl=TTL)
        b_values = await consume(b)
        await eventually_async(lambda: b_values == [False], 5, "b follows")
        # A renewal on the established connection: the one the blackhole will freeze.
        await eventually_async(lambda: a.metrics.renewals >= 1, TTL, "a renewed")
        renewals_before = a.metrics.renewals
        frozen = proxy.blackhole()
        assert frozen >= 1
        lapses = []
        for _ in range(int(3 * TTL / 0.02)):  # three TTLs
            await asyncio.sleep(0.02)
            if not a.is_leader:
                lapses.append(time.monotonic())
        assert lapses == [], f"a stopped believing it leads {len(lapses)} times"
        assert a_values == [False, True] and b_values == [False]  # no step-down, no takeover
        assert a.metrics.renew_failures >= 1  # a hung attempt was abandoned and retried
        assert a.metrics.renewals >= renewals_before + 7  # and renewals went on
    finally:
        await proxied.close()
