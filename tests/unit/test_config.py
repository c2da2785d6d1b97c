"""Bad arguments raise ValueError/TypeError naming the argument, before anything runs."""

from __future__ import annotations

import socket
import uuid

import pytest

from leadership import Candidate, MemoryLeaseStore


@pytest.fixture
def store() -> MemoryLeaseStore:
    return MemoryLeaseStore()


@pytest.mark.parametrize("ttl, error", [
    (0, ValueError), (-1, ValueError), (1.5, ValueError), (float("nan"), ValueError),
    (2**31, ValueError), ("15", TypeError), (None, TypeError), (True, TypeError),
])
def test_ttl_must_be_a_positive_whole_number_of_seconds(store: MemoryLeaseStore, ttl: object,
                                                         error: type[Exception]) -> None:
    with pytest.raises(error, match="ttl"):
        Candidate(store, "lock", "a", ttl=ttl)  # type: ignore[arg-type]


def test_an_integral_float_ttl_is_accepted(store: MemoryLeaseStore) -> None:
    assert Candidate(store, "lock", "a", ttl=15.0).timing.ttl == 15  # type: ignore[arg-type]


@pytest.mark.parametrize("node, error", [("", ValueError), ("   ", ValueError),
                                         (7, TypeError)])
def test_identity_must_be_a_non_empty_string(store: MemoryLeaseStore, node: object,
                                             error: type[Exception]) -> None:
    with pytest.raises(error, match="node"):
        Candidate(store, "lock", node)  # type: ignore[arg-type]


@pytest.mark.parametrize("key, error", [
    ("Upper", ValueError), ("under_score", ValueError), ("-dash", ValueError), ("", ValueError),
    ("a" * 254, ValueError), ("trailing.", ValueError), (b"bytes", TypeError),
])
def test_key_must_be_a_dns_subdomain(store: MemoryLeaseStore, key: object,
                                     error: type[Exception]) -> None:
    with pytest.raises(error, match="key"):
        Candidate(store, key, "a")  # type: ignore[arg-type]


def test_store_must_implement_the_protocol() -> None:
    with pytest.raises(TypeError, match="store must be a LeaseStore"):
        Candidate({"not": "a store"}, "lock", "a")  # type: ignore[arg-type]


def test_identity_defaults_to_the_pod_name_plus_a_unique_suffix(
        store: MemoryLeaseStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "web-7d4b9-xk2p")
    one, two = Candidate(store, "lock").node, Candidate(store, "lock").node
    assert one.startswith("web-7d4b9-xk2p_") and two.startswith("web-7d4b9-xk2p_")
    assert one != two  # two workers in one pod never share an identity
    uuid.UUID(one.split("_", 1)[1])  # client-go's <hostname>_<uuid>
    monkeypatch.delenv("POD_NAME")
    assert Candidate(store, "lock").node.startswith(socket.gethostname() + "_")


def test_clock_must_be_a_clock(store: MemoryLeaseStore) -> None:
    with pytest.raises(TypeError, match="clock"):
        Candidate(store, "lock", "a", clock=object())  # type: ignore[arg-type]


def test_stores_name_their_bad_arguments() -> None:
    import pykube
    from kubernetes.aio.client import ApiClient

    from leadership import KubernetesLeaseStore, PykubeLeaseStore

    with pytest.raises(TypeError, match=r"api_client must be a kubernetes\.aio"):
        KubernetesLeaseStore(object(), "default")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="http_client must be a pykube"):
        PykubeLeaseStore(object(), "default")  # type: ignore[arg-type]
    api = ApiClient()
    with pytest.raises(ValueError, match="namespace"):
        KubernetesLeaseStore(api, "Bad_Namespace")
    with pytest.raises(ValueError, match="request_timeout"):
        KubernetesLeaseStore(api, "default", request_timeout=0)
    config = pykube.KubeConfig({"clusters": [{"name": "c", "cluster": {"server": "https://x"}}],
                                "users": [{"name": "u", "user": {}}],
                                "contexts": [{"name": "x", "context": {"cluster": "c",
                                                                       "user": "u"}}],
                                "current-context": "x"})
    with pytest.raises(ValueError, match="request_timeout"):
        PykubeLeaseStore(pykube.HTTPClient(config), "default", request_timeout=-1)
