"""The fault proxy against the real API server: forwards, blackholes, resets."""

from __future__ import annotations

import time
from pathlib import Path

import pykube
import pytest
import requests

from controlplane.cluster import Cluster, kubeconfig_via, proxy_to


def version(client: pykube.HTTPClient, timeout: float) -> requests.Response:
    return client.session.get(f"{client.url}/version", timeout=timeout)

def test_forwards_then_blackholes_established_connections_only(cluster: Cluster,
                                                               tmp_path: Path) -> None:
    with proxy_to(cluster.kubeconfig) as proxy:
        config = pykube.KubeConfig.from_file(
            str(kubeconfig_via(proxy, cluster.kubeconfig, tmp_path / "via-proxy")))
        old = pykube.HTTPClient(config)
        assert version(old, 1).json()["gitVersion"].startswith("v1.")
        [link] = proxy.wait_for_links(1, timeout=5)
        assert link.forwarded > 0
        assert proxy.blackhole() == 1
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):  # silent: no error, no answer
            version(old, 1)
        assert time.monotonic() - started >= 1.0
        fresh = pykube.HTTPClient(config)  # a new connection is not affected
        assert version(fresh, 5).status_code == 200


def test_reset_aborts_a_connection(cluster: Cluster, tmp_path: Path) -> None:
    with proxy_to(cluster.kubeconfig) as proxy:
        config = pykube.KubeConfig.from_file(
            str(kubeconfig_via(proxy, cluster.kubeconfig, tmp_path / "via-proxy")))
        client = pykube.HTTPClient(config)
        version(client, 5)
        proxy.wait_for_links(1, timeout=5)
        assert proxy.reset() >= 1
        # requests retries a request on a pooled connection found dead, so a reset
        # connection costs at most a reconnect, never a hang.
        assert version(client, 5).status_code == 200
