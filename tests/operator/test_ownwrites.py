"""`OwnWrites` at each version the cache can show after a write: the one written on, the one
made, and a third (a skipped event, or a write between)."""

from __future__ import annotations

from leadership_operator.ownwrites import OwnWrites
from leadership_operator.pods import Member


def pod(role: str | None, version: str, uid: str = "uid-1") -> Member:
    return Member("web-0", uid=uid, role=role, namespace="apps", election="web",
                  resource_version=version)


def test_with_no_write_the_cache_is_believed() -> None:
    writes = OwnWrites()
    assert writes.roles(pod("leader", "5")) == {"leader"}
    assert writes.version(pod("leader", "5")) == "5"


def test_a_write_stands_while_the_cache_shows_the_version_it_was_made_on() -> None:
    writes = OwnWrites()
    writes.wrote(pod(None, "5"), "leader", "6")
    assert writes.roles(pod(None, "5")) == {"leader"}
    assert writes.version(pod(None, "5")) == "6"  # a deletion carries the version made


def test_the_write_is_forgotten_once_the_cache_shows_the_version_it_made() -> None:
    writes = OwnWrites()
    writes.wrote(pod(None, "5"), "leader", "6")
    assert writes.roles(pod("leader", "6")) == {"leader"}
    assert len(writes) == 0
    # Later versions are the cache's alone, whatever they say.
    assert writes.roles(pod("follower", "9")) == {"follower"}


def test_at_a_third_version_both_roles_are_possible() -> None:
    writes = OwnWrites()
    writes.wrote(pod("follower", "5"), "leader", "7")
    # Version 6 (a kubelet's status write, say, between the decision and the write) still
    # says follower: the leader label written at 7 may be there, and counts.
    assert writes.roles(pod("follower", "6")) == {"follower", "leader"}
    assert writes.version(pod("follower", "6")) == "6"
    # The watch skipped 7 and shows 8, as kopf's batching may: still both (8 may be a
    # newer foreign write, or come after ours), until the operator writes again.
    assert writes.roles(pod("follower", "8")) == {"follower", "leader"}
    writes.wrote(pod("follower", "8"), "follower", "9")
    assert writes.roles(pod("follower", "8")) == {"follower"}


def test_a_pod_found_gone_has_no_role_and_no_version_made() -> None:
    writes = OwnWrites()
    writes.wrote(pod("leader", "5"), None, "")
    assert writes.roles(pod("leader", "5")) == {None}
    assert writes.version(pod("leader", "5")) == "5"
    assert len(writes) == 1  # never shown by the watch: forgotten with the pod
    writes.forget("uid-1")
    assert len(writes) == 0
