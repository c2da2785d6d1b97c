"""What the operator and the sidecar say before they know: a missing namespace at start, and
the sidecar's role before its first read of the Lease (unit tests, no cluster)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import leadership
from leadership import toolkit
from leadership.testing import ManualClock
from leadership_operator.app import Options, check_namespaces
from leadership_operator.errors import CommandError
from leadership_operator.sidecar import Roles
from leadership_operator.testing import FakeKube


def options(lease_namespace: str, *watched: str) -> Options:
    return Options(kubeconfig=Path("/dev/null"), namespaces=list(watched),
                   lease_name="leadership-operator", lease_namespace=lease_namespace,
                   identity="op-0")


async def test_a_missing_lease_namespace_refuses_to_start(clock: ManualClock) -> None:
    kube = FakeKube(clock)
    kube.namespaces = {"leadership-system"}
    with pytest.raises(CommandError, match="namespace nope does not exist"):
        await check_namespaces(kube, options("nope"))
    await check_namespaces(kube, options("leadership-system"))


async def test_a_watched_namespace_that_does_not_exist_is_warned_about(
        clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    kube = FakeKube(clock)
    kube.namespaces = {"leadership-system", "apps"}
    with caplog.at_level(logging.WARNING):
        await check_namespaces(kube, options("leadership-system", "apps", "typo"))
    said = [r.getMessage() for r in caplog.records]
    assert said == ["namespace typo does not exist (yet): no election there until it does"]


async def test_without_rights_to_ask_nothing_is_refused(
        clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    """Where RBAC does not let the operator ask (the answer is None, not False), it neither
    refuses to start nor warns of namespaces it cannot see: it asked, and goes on."""
    kube = FakeKube(clock)  # namespaces None: RBAC does not let the operator ask
    asked: list[str] = []
    answer = kube.namespace_exists

    async def counted(namespace: str) -> bool | None:
        asked.append(namespace)
        return await answer(namespace)

    kube.namespace_exists = counted  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING):
        await check_namespaces(kube, options("anything", "else"))
    assert asked == ["anything", "else"]
    assert [r.getMessage() for r in caplog.records] == []


async def test_the_sidecar_says_starting_until_it_has_read_the_lease(
        clock: ManualClock) -> None:
    store = leadership.MemoryLeaseStore(clock)
    await store.create({"metadata": {"name": "web"}, "spec": {
        "holderIdentity": "web-0", "leaseDurationSeconds": 15,
        "renewTime": toolkit.format_microtime(clock.wall())}})
    candidate = leadership.Candidate(store, "web", "web-1", ttl=15, clock=clock)
    roles = Roles(candidate)
    assert roles.now() == "starting" and roles.describe() == "starting: reading the Lease"
    stream = candidate.run_for_election()
    assert await stream.__anext__() is False
    await clock.settle()
    assert roles.now() == "follower" and roles.describe() == "follower (leader: web-0)"
    await candidate.stop()
