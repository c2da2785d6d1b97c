"""The leader endpoint and the gate on real pods: manifests/example-leader-endpoint applied
over the example (its pods roll to sidecars with a gate; `web-leader-endpoint` beside
`web-leader`). What happens, in order; the timing is `make bench-node`'s.

Runs after test_pods.py (the directory's files run in name order) and leaves the app on
the leader-endpoint example.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.deployed import APP_NS, ELECTION
from controlplane.recorder import ClusterRecorder
from controlplane.traffic import ask
from controlplane.waiting import eventually

from .conftest import E2ECluster
from .test_pods import TTL, settled

ROOT = Path(__file__).resolve().parents[2]
ROUTE = "web-leader-endpoint"


@pytest.fixture(scope="module")
def endpoint(deployed: E2ECluster) -> Iterator[ClusterRecorder]:
    """The example moved to the leader endpoint and its gate; a recorder of that route."""
    recorder = ClusterRecorder(deployed.cp.kubeconfig, APP_NS, service=ROUTE)
    try:
        deployed.cp.kubectl("apply", "-k", str(ROOT / "manifests" / "example-leader-endpoint"))
        deployed.rollout_status(APP_NS, "web")
        yield recorder
    finally:
        recorder.close()
    recorder.never_two_endpoints()


def on_the_route(d: E2ECluster, recorder: ClusterRecorder, within: float = 90) -> str:
    """Settled (as test_pods means it), and the leader alone and ready behind the leader
    endpoint, answering through its gate; the leader."""
    address = d.service_ip(ROUTE)

    def check() -> str | None:
        holder = settled(d, within)
        state = recorder.endpoints[-1] if recorder.endpoints else None
        if (state is not None and state.listed == (holder,) and state.ready == (holder,)
                and ask(address) == holder):
            return holder
        return None

    return str(eventually(check, within, "the leader behind the leader endpoint"))


def test_a_handover_moves_the_leader_endpoint_in_one_write(
        deployed: E2ECluster, endpoint: ClusterRecorder) -> None:
    leader = on_the_route(deployed, endpoint)
    deleted = time.monotonic()
    deployed.v1.delete_namespaced_pod(leader, APP_NS)
    _, new = eventually(lambda: deployed.recorder.next_holder(ELECTION, deleted, leader), 10,
                        "a new holder")
    eventually(lambda: next((e for e in list(endpoint.endpoints)
                             if e.seen >= deleted and e.listed == (new,)), None), 10,
               "the new leader behind the leader endpoint")
    changes = [e.listed for e in list(endpoint.endpoints) if e.seen >= deleted]
    # The old leader stayed listed, terminating, until its successor replaced it: the first
    # change since the delete is the successor, in one write (never empty between, never
    # two).
    assert changes[0] == (new,), changes
    on_the_route(deployed, endpoint)


def test_a_kept_alive_connection_through_the_gate_ends_with_the_term(
        deployed: E2ECluster, endpoint: ClusterRecorder) -> None:
    leader = on_the_route(deployed, endpoint)
    address = deployed.service_ip(ROUTE)
    conn = http.client.HTTPConnection(address, 80, timeout=2)

    def answer() -> str | None:
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            return response.read().decode().strip()
        except (OSError, http.client.HTTPException):
            return None

    assert [answer(), answer()] == [leader, leader]  # one connection, kept alive
    lease = deployed.coordination.read_namespaced_lease(ELECTION, APP_NS)
    # Deleting the Lease ends the term with every process alive: the leader's sidecar sees
    # its Lease gone and steps down, and its gate closes the open connection.
    deployed.coordination.delete_namespaced_lease(ELECTION, APP_NS)
    try:
        eventually(lambda: answer() is None or None, 10, "the kept-alive connection closed")
        assert ask(address) is None  # nobody leads: no new connection is answered either
        assert deployed.pids(leader, "leadership")  # the sidecar still runs: the gate did it
    finally:
        deployed.coordination.create_namespaced_lease(APP_NS, {
            "metadata": {"name": ELECTION, "labels": lease.metadata.labels},
            "spec": {}})
    conn.close()
    on_the_route(deployed, endpoint)


def test_a_frozen_leader_leaves_the_leader_endpoint_before_its_lease_expires(
        deployed: E2ECluster, endpoint: ClusterRecorder) -> None:
    leader = on_the_route(deployed, endpoint)
    frozen = deployed.freeze(leader, ("leadership",))
    stopped = time.monotonic()
    try:
        gone = eventually(lambda: next((e for e in list(endpoint.endpoints)
                                        if e.seen >= stopped and leader not in e.listed), None),
                          TTL + 10, "the frozen leader out of the leader endpoint")
        renewed = deployed.recorder.last_renewal(ELECTION, stopped)
        assert gone.seen - renewed < TTL, "drained only at the Lease's expiry, or later"
        began, successor = eventually(
            lambda: deployed.recorder.next_holder(ELECTION, stopped, leader), 10 + TTL,
            "a successor")
        assert began > gone.seen, "the successor's term began before the drain"
        eventually(lambda: next((e for e in list(endpoint.endpoints)
                                 if e.seen >= began and e.listed == (successor,)), None),
                   10, "the successor behind the leader endpoint")
    finally:
        deployed.thaw(frozen)
    on_the_route(deployed, endpoint)
