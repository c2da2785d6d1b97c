"""The one place the harness makes Kubernetes clients from a kubeconfig: the official client
(synchronous and asyncio) and pykube-ng. At the bottom of `controlplane`: every part that
talks to a cluster (the node, the recorder, the tests) asks here."""

from __future__ import annotations

from pathlib import Path
from typing import Any


async def new_aio_client(kubeconfig: Path) -> Any:
    """A kubernetes.aio ApiClient for `kubeconfig`; the caller closes it."""
    import kubernetes.aio.config

    return await kubernetes.aio.config.new_client_from_config(config_file=str(kubeconfig))


def sync_client(kubeconfig: Path) -> Any:
    """A (synchronous) kubernetes ApiClient for `kubeconfig`."""
    import kubernetes

    return kubernetes.config.new_client_from_config(config_file=str(kubeconfig))


def pykube_client_for(kubeconfig: Path) -> Any:
    """A pykube HTTPClient for `kubeconfig`."""
    import pykube

    return pykube.HTTPClient(pykube.KubeConfig.from_file(str(kubeconfig)))
