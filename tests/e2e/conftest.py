"""The end-to-end tests: `manifests/operator` and `manifests/example` as they are, on a real
node (kubelet, containerd), every container from the image built from the Dockerfile.

One node for the whole directory (`deployed`, package scope): about 10 s to come up with
binaries and images cached, 25 s to roll the manifests out. A `ClusterRecorder` watches the
example's pods, its Lease and the `web-leader` Service's EndpointSlices from before the
first pod starts to the end, and the last check of the directory holds the whole history:
never two pods labelled `leader`, never two pods behind `web-leader`.

These tests need root on Linux (the `node` marker); where a node cannot come up they fail
and say why, they never skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controlplane.deployed import APP_NS, Deployed
from controlplane.local import LocalCluster
from controlplane.recorder import ClusterRecorder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.node)


class E2ECluster(Deployed):
    recorder: ClusterRecorder


@pytest.fixture(scope="package")
def deployed() -> Iterator[E2ECluster]:
    with LocalCluster() as local:
        cluster = E2ECluster(local)
        cluster.recorder = ClusterRecorder(cluster.cp.kubeconfig, APP_NS, service="web-leader")
        try:
            cluster.apply()
            cluster.wait_ready()
            yield cluster
        finally:
            cluster.recorder.close()
    # The whole directory's history, as the API server went through it.
    cluster.recorder.never_two_leaders()
    cluster.recorder.never_two_endpoints()
