"""The fault proxy against the real API server: forwards, blackholes, resets."""

from __future__ import annotations

import time
from pathlib import Path

import pykube
import pytest
import requests

from controlplane.cluster import Cluster, kubeconfig_via, proxy_to
from controlplane.proxy import TcpProxy


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


def test_latency_delays_each_chunk_without_serialising_them() -> None:
    """A long wire, not a queue: two chunks sent 50 ms apart arrive 50 ms apart, each a
    round trip of at least twice the latency later."""
    import contextlib
    import socket
    import threading

    latency = 0.4
    with socket.create_server(("127.0.0.1", 0)) as server:

        def echo() -> None:
            conn, _ = server.accept()
            with conn, contextlib.suppress(ConnectionError):  # the proxy's stop() resets it
                while data := conn.recv(1024):
                    conn.sendall(data)

        threading.Thread(target=echo, daemon=True).start()
        with TcpProxy(server.getsockname(), latency=latency) as proxy, \
                socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
            sent = time.monotonic()
            client.sendall(b"a")
            time.sleep(0.05)
            client.sendall(b"b")
            arrivals = []
            while len(arrivals) < 2:
                for _ in client.recv(1024):
                    arrivals.append(time.monotonic())
    assert arrivals[0] - sent >= 2 * latency
    assert arrivals[1] - arrivals[0] < latency / 2  # serialised, they would be >= 0.4 s apart
