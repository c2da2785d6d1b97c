"""The library's promises against a real kube-apiserver, through both real stores."""

from __future__ import annotations

import asyncio
import datetime
import random
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import kubernetes
import pytest

import leadership
from controlplane.candidates import CandidateProcess
from controlplane.clients import pykube_client_for
from controlplane.cluster import Cluster, audit_events
from controlplane.waiting import eventually_async
from leadership.record import format_microtime
from tests.integration.helpers import (
    StoreFactory,
    consume,
    grant,
    stop_all,
    until_allowed,
)

TTL = 2  # renew every 0.67 s, give up after 1.33 s, followers wait 2 s


def holder(core_api: kubernetes.client.ApiClient, namespace: str, key: str) -> str:
    try:
        lease = kubernetes.client.CoordinationV1Api(core_api).read_namespaced_lease(key, namespace)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    return lease.spec.holder_identity or ""


async def test_five_candidates_never_two_leaders_and_the_leader_is_the_holder(
        stores: StoreFactory, core_api: kubernetes.client.ApiClient, namespace: str) -> None:
    cands = [await stores.candidate("five", f"c{i}", ttl=TTL) for i in range(5)]
    for c in cands:
        await consume(c)
    rng = random.Random(7)
    checked = changes = 0
    deadline = time.monotonic() + 8
    last_stop = time.monotonic()
    alive = list(cands)
    while time.monotonic() < deadline:
        before = {c.node for c in alive if c.is_leader}
        lease_holder = await asyncio.to_thread(holder, core_api, namespace, "five")
        after = {c.node for c in alive if c.is_leader}
        assert len(before) <= 1 and len(after) <= 1, (before, after)
        for node in before & after:  # believed throughout the read: it must be the holder
            assert lease_holder == node
            checked += 1
        if time.monotonic() - last_stop > 1.5 and len(alive) > 1 and before:
            leader = next(c for c in alive if c.node in before)
            # Stop or resign the leader at random, so the lease changes hands under sampling.
            if rng.random() < 0.5:
                await leader.stop()
                alive.remove(leader)
            else:
                await leader.resign()
            changes += 1
            last_stop = time.monotonic()
        await asyncio.sleep(0.01)
    assert checked > 50 and changes >= 3
    await stop_all(*cands)


async def test_stop_hands_over_within_half_a_second(stores: StoreFactory) -> None:
    a = await stores.candidate("handover", "a", ttl=15)
    b = await stores.candidate("handover", "b", ttl=15)
    await consume(a)
    await eventually_async(lambda: a.is_leader, 5, "a leads")
    await consume(b)
    await eventually_async(lambda: b.watching, 5, "b watches the Lease")
    start = time.monotonic()
    await a.stop()
    await eventually_async(lambda: b.is_leader, 0.5, "b leads after a stops", every=0.001)
    assert time.monotonic() - start < 0.5
    await b.stop()


async def test_resign_hands_over(stores: StoreFactory) -> None:
    a = await stores.candidate("resign", "a", ttl=15)
    b = await stores.candidate("resign", "b", ttl=15)
    a_values = await consume(a)
    await eventually_async(lambda: a.is_leader, 5, "a leads")
    await consume(b)
    await eventually_async(lambda: b.watching, 5, "b watches the Lease")
    await a.resign()
    await eventually_async(lambda: b.is_leader, 0.5, "b leads after a resigns")
    assert not a.is_leader and a_values == [False, True, False]
    await stop_all(a, b)


async def test_sigkill_of_a_leader_process_fails_over_within_ttl_plus_one(
        stores: StoreFactory, cluster: Cluster, namespace: str) -> None:
    ttl = 3
    child = await asyncio.create_subprocess_exec(
        *CandidateProcess(stores.kind, cluster.kubeconfig, "killed", "child", ttl,
                   namespace).command(), stdout=asyncio.subprocess.PIPE)
    try:
        assert child.stdout is not None
        lines = [await asyncio.wait_for(child.stdout.readline(), 20) for _ in range(2)]
        assert lines == [b"FOLLOWING\n", b"LEADING\n"]
        b = await stores.candidate("killed", "survivor", ttl=ttl)
        await consume(b)
        await eventually_async(lambda: b.watching, 5, "the survivor watches the Lease")
        assert not b.is_leader
        child.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await eventually_async(lambda: b.is_leader, ttl + 1, "the survivor leads after SIGKILL")
        took = time.monotonic() - killed_at
        assert took <= ttl + 1, took
        await b.stop()
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


async def test_follower_sees_every_change(stores: StoreFactory) -> None:
    seen: list[str] = []
    follower = leadership.Follower(await stores(), "followed")

    async def follow() -> None:
        async for leader in follower:
            seen.append(leader)

    task = asyncio.ensure_future(follow())
    await eventually_async(lambda: seen == [""], 5, "the follower reports no leader")
    a = await stores.candidate("followed", "a", ttl=15)
    b = await stores.candidate("followed", "b", ttl=15)
    await consume(a)
    await eventually_async(lambda: seen == ["", "a"], 5, f"the follower sees a: {seen}")
    await consume(b)
    await eventually_async(lambda: b.watching, 5, "b watches the Lease")
    await a.stop()
    await eventually_async(lambda: seen == ["", "a", "", "b"], 5, f"release, then b: {seen}")
    await b.stop()
    await eventually_async(lambda: seen == ["", "a", "", "b", ""], 5, f"released: {seen}")
    await follower.stop()
    await asyncio.wait_for(task, 5)


async def test_microtime_values_are_accepted_and_read_back_exactly(
        stores: StoreFactory) -> None:
    store = await stores()
    moment = datetime.datetime(2026, 11, 26, 20, 0, 0, 0, tzinfo=datetime.UTC)  # micro == 0
    created = await store.create({
        "metadata": {"name": "times"},
        "spec": {"holderIdentity": "x", "leaseDurationSeconds": 5,
                 "acquireTime": format_microtime(moment),
                 "renewTime": format_microtime(moment.replace(microsecond=7))}})
    read = await store.get("times")
    assert read is not None and read["spec"] == created["spec"]
    assert read["spec"]["acquireTime"] == "2026-11-26T20:00:00.000000Z"
    assert read["spec"]["renewTime"] == "2026-11-26T20:00:00.000007Z"
    a = leadership.Candidate(store, "renewed", "a", ttl=TTL)
    await consume(a)
    await eventually_async(lambda: a.is_leader, 5, "a leads")
    await eventually_async(lambda: a.metrics.renewals >= 2, 5, "two renewals")
    lease = await store.get("renewed")
    assert lease is not None and a.is_leader
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", lease["spec"]["renewTime"])
    await a.stop()


async def test_conflicts_map_to_conflict_error_and_put_creates_a_missing_lease(
        stores: StoreFactory) -> None:
    store = await stores()
    assert await store.get("absent") is None
    first = await store.create({"metadata": {"name": "cas"}, "spec": {"holderIdentity": "x"}})
    with pytest.raises(leadership.ConflictError):
        await store.create({"metadata": {"name": "cas"}, "spec": {}})
    await store.replace({**first, "spec": {"holderIdentity": "y"}})
    with pytest.raises(leadership.ConflictError):
        await store.replace({**first, "spec": {"holderIdentity": "z"}})  # stale version
    # Leases allow create-on-update: a PUT to a deleted Lease re-creates it.
    created = await store.replace({"metadata": {"name": "absent", "resourceVersion": "1"},
                                   "spec": {"holderIdentity": "w"}})
    assert created["spec"]["holderIdentity"] == "w"


async def test_followers_make_no_periodic_requests(
        stores: StoreFactory, cluster: Cluster, namespace: str) -> None:
    cp = cluster.require_control_plane()
    cands = [await stores.candidate("quiet", f"c{i}", ttl=TTL) for i in range(3)]
    for c in cands:
        await consume(c)
    await eventually_async(lambda: any(c.is_leader for c in cands), 5, "someone leads")
    leader = next(c for c in cands if c.is_leader)
    await eventually_async(lambda: all(c.watching and c.leader == leader.node for c in cands),
                           5, "everyone watches the leader")

    def settled() -> bool:
        """The first race is over: the last three requests the API server answered for the
        Lease are renewals (the losers' creates and their re-reads came before)."""
        done = [e["verb"] for e in audit_events(cp.audit_log, namespace, "quiet")
                if e["stage"] == "ResponseComplete"]
        return done[-3:] == ["update"] * 3

    await eventually_async(settled, 10, "only renewals")
    # The window by the API server's own timestamps: its audit log may be written a moment
    # after a request it records.
    window_start = datetime.datetime.now(datetime.UTC)
    await asyncio.sleep(4.0)  # the window in which requests are counted
    window = [e for e in audit_events(cp.audit_log, namespace, "quiet")
              if datetime.datetime.fromisoformat(e["requestReceivedTimestamp"]) >= window_start]
    verbs = sorted({e["verb"] for e in window})
    assert verbs == ["update"], [(e["verb"], e["requestURI"]) for e in window]
    # Only the leader's renewals: one every 0.67 s, answered and logged once each.
    completed = [e for e in window if e["stage"] == "ResponseComplete"]
    assert 4 <= len(completed) <= 8, len(completed)
    await stop_all(*cands)


async def test_a_forbidden_candidate_ends_with_a_fatal_error(
        stores: StoreFactory, cluster: Cluster, namespace: str,
        service_account_kubeconfig: object) -> None:
    kubeconfig = service_account_kubeconfig(namespace, "nobody")  # type: ignore[operator]
    denied = StoreFactory(stores.kind, kubeconfig, namespace)
    c = leadership.Candidate(await denied(), "denied", "a", ttl=TTL)
    values: list[bool] = []
    with pytest.raises(leadership.FatalStoreError) as error:
        async for value in c.run_for_election():
            values.append(value)
    assert values == [False] and error.value.status == 403
    await denied.close()


LEASE_RULES: dict[str, object] = {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"]}


async def test_the_least_privilege_role_from_the_docs_is_enough(
        stores: StoreFactory, core_api: kubernetes.client.ApiClient, namespace: str,
        service_account_kubeconfig: Callable[[str, str], Path]) -> None:
    grant(core_api, namespace, "app", [
        {**LEASE_RULES, "resourceNames": ["app"], "verbs": ["get", "update", "watch"]},
        {**LEASE_RULES, "verbs": ["create"]}])
    kubeconfig = service_account_kubeconfig(namespace, "app")
    limited = StoreFactory(stores.kind, kubeconfig, namespace)
    try:
        await until_allowed(kubeconfig, namespace, "create", "app")
        a, b = await limited.candidate("app", "a", ttl=TTL), await limited.candidate(
            "app", "b", ttl=TTL)
        a_values, b_values = await consume(a), await consume(b)
        await eventually_async(lambda: a.is_leader or b.is_leader, 5, "one of them leads")
        leader, other = (a, b) if a.is_leader else (b, a)
        await leader.stop()
        await eventually_async(lambda: other.is_leader, 1, "the other takes over")
        assert not leader.is_leader
        assert a_values[0] is False and b_values[0] is False
        with pytest.raises(leadership.FatalStoreError) as denied:
            await (await limited()).get("not-mine")
        assert denied.value.status == 403
    finally:
        await limited.close()


async def test_without_create_a_deleted_lease_is_waited_for_until_it_is_re_created(
        stores: StoreFactory, core_api: kubernetes.client.ApiClient, namespace: str,
        service_account_kubeconfig: Callable[[str, str], Path]) -> None:
    """A pre-created Lease and a Role without `create` (RBAC cannot limit create by name): a
    renewal after a deletion is a create (Leases allow create-on-update), which RBAC
    refuses. The candidate steps down and waits as a follower, saying why (`blocked`),
    never ending its campaign; once the Lease is re-applied it leads again, under the
    Lease's new uid."""
    grant(core_api, namespace, "app", [
        {**LEASE_RULES, "resourceNames": ["app"], "verbs": ["get", "update", "watch"]}])
    coordination = kubernetes.client.CoordinationV1Api(core_api)
    coordination.create_namespaced_lease(namespace, {"metadata": {"name": "app"}, "spec": {}})
    kubeconfig = service_account_kubeconfig(namespace, "app")
    limited = StoreFactory(stores.kind, kubeconfig, namespace)
    try:
        await until_allowed(kubeconfig, namespace, "update", "app")
        a = await limited.candidate("app", "a", ttl=TTL)
        values = await consume(a)
        await eventually_async(lambda: a.is_leader, 5, "a leads the pre-created Lease")
        old = a.fence
        coordination.delete_namespaced_lease("app", namespace)
        await eventually_async(lambda: a.blocked is not None, 3 * TTL, "a waits for the Lease")
        assert "may not create it" in (a.blocked or "") and not a.is_leader
        assert values == [False, True, False]
        coordination.create_namespaced_lease(namespace, {"metadata": {"name": "app"},
                                                         "spec": {}})
        # The stream's consumer runs after the candidate's state changes: wait for what it
        # was told, not for the state alone.
        await eventually_async(lambda: values == [False, True, False, True], 3 * TTL,
                               "the stream says a leads the re-created Lease")
        assert a.is_leader and a.blocked is None
        assert old is not None and a.fence is not None
        assert a.fence.lease_uid != old.lease_uid
        await a.stop()
    finally:
        await limited.close()


def test_the_sync_facade_on_a_real_server(cluster: Cluster, namespace: str) -> None:
    store = leadership.PykubeLeaseStore(pykube_client_for(cluster.kubeconfig), namespace)
    with leadership.sync.Candidate(store, "threaded", "t", ttl=TTL) as candidate:
        stream = candidate.run_for_election()
        assert [next(stream), next(stream)] == [False, True]
        assert candidate.is_leader and candidate.fencing_token == 0
    assert list(stream) == [False]
    lease = store.http.get(version="coordination.k8s.io/v1", namespace=namespace,
                           url="leases/threaded").json()
    assert lease["spec"]["holderIdentity"] == ""


async def test_candidates_ride_out_an_apiserver_restart(stores: StoreFactory,
                                                        cluster: Cluster) -> None:
    cp = cluster.require_control_plane()
    ttl = 4  # renew deadline 2.67 s: a 4 s outage must make the leader step down
    cands = [await stores.candidate("restart", f"c{i}", ttl=ttl) for i in range(3)]
    values = {c.node: await consume(c) for c in cands}
    await eventually_async(lambda: any(c.is_leader for c in cands), 5, "someone leads")
    first = next(c for c in cands if c.is_leader)
    overlap: list[float] = []
    sampling = True

    async def sample() -> None:
        while sampling:
            if sum(c.is_leader for c in cands) > 1:
                overlap.append(time.monotonic())
            await asyncio.sleep(0.005)

    sampler = asyncio.ensure_future(sample())
    try:
        # The candidates keep running on this loop while the API server is down for 4 s.
        flags = await asyncio.to_thread(cp.stop_component, "kube-apiserver")
        await asyncio.sleep(4.0)  # the outage itself
        cp.start_component("kube-apiserver", flags)
        await asyncio.to_thread(cp.wait_ready)
        assert values[first.node][:3] == [False, True, False], values  # stepped down
        await eventually_async(lambda: any(c.is_leader for c in cands), 3 * ttl,
                         "someone leads again after the restart")
        await eventually_async(lambda: all(c.watching for c in cands), 10,
                               "everyone watches again after the restart")
        leader = next(c for c in cands if c.is_leader)
        others = [c for c in cands if c is not leader]
        await leader.stop()
        await eventually_async(lambda: any(c.is_leader for c in others), 1.0,
                         "a release is seen through the re-established watch")
    finally:
        sampling = False
        await sampler
    assert overlap == []


async def test_a_missing_namespace_ends_the_stream_with_a_fatal_error(
        cluster: Cluster, stores: StoreFactory) -> None:
    absent = StoreFactory(stores.kind, cluster.kubeconfig, "no-such-namespace")
    try:
        c = await absent.candidate("orphan", "a", ttl=TTL)
        values: list[bool] = []
        with pytest.raises(leadership.FatalStoreError, match="no-such-namespace"):
            async for value in c.run_for_election():
                values.append(value)
        assert values == [False]
    finally:
        await absent.close()
