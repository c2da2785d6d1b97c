"""One way to reach the API server for every subcommand: an explicit kubeconfig, else
in-cluster credentials, else ``$KUBECONFIG`` / ``~/.kube/config`` (the official client's
own order). Imports no kopf, so the sidecar and ``leadership status`` stay light."""

from __future__ import annotations

from pathlib import Path
from typing import Any


async def api_client(kubeconfig: Path | None) -> Any:
    """A ``kubernetes.aio`` ApiClient; the caller closes it."""
    from kubernetes.aio import client, config

    if kubeconfig is not None:
        return await config.new_client_from_config(config_file=str(kubeconfig))
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return await config.new_client_from_config()
