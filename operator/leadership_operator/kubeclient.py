"""Where every subcommand finds its credentials, in one order: ``--kubeconfig``, else the
files ``$KUBECONFIG`` names, else the pod's ServiceAccount (in a cluster), else
``~/.kube/config``. A missing file or no credentials at all is a `CommandError` saying where
it looked, never a traceback. Imports no kopf, so the sidecar and ``leadership status`` stay
light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from . import text
from .errors import CommandError

#: where a pod's ServiceAccount token is mounted.
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
HOME_CONFIG = Path("~/.kube/config")


def kubeconfig_files(flag: Path | None) -> list[Path] | None:
    """The kubeconfig files to read, in order; None: the in-cluster ServiceAccount."""
    if flag is not None:
        if not flag.is_file():
            raise CommandError(f"--kubeconfig {flag}: no such file", code=2)
        return [flag]
    listed = os.environ.get("KUBECONFIG", "")
    if listed:
        paths = [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
        present = [p for p in paths if p.is_file()]
        if not present:  # kubectl, too, reads those of a list that exist
            names = ", ".join(str(p) for p in paths)
            raise CommandError(f"$KUBECONFIG names {names}, which does not exist" if
                               len(paths) == 1 else f"$KUBECONFIG names {names}: none exists",
                               code=2)
        return present
    if os.environ.get("KUBERNETES_SERVICE_HOST") and SERVICE_ACCOUNT_TOKEN.is_file():
        return None
    home = HOME_CONFIG.expanduser()
    if home.is_file():
        return [home]
    raise CommandError(
        "no Kubernetes credentials found: no --kubeconfig, $KUBECONFIG is not set, not in a "
        f"pod (no {SERVICE_ACCOUNT_TOKEN} with $KUBERNETES_SERVICE_HOST), and no {home}",
        code=2)


def _unusable(files: list[Path] | None, exc: Exception) -> CommandError:
    where = ", ".join(map(str, files)) if files else "the in-cluster ServiceAccount"
    return CommandError(text.cut(f"cannot use the credentials of {where}: {exc}", text.LINE,
                                 one_line=True), code=2)


async def api_client(kubeconfig: Path | None) -> Any:
    """A ``kubernetes.aio`` ApiClient from `kubeconfig_files`; the caller closes it."""
    from kubernetes.aio import client, config

    files = kubeconfig_files(kubeconfig)
    try:
        if files is None:
            config.load_incluster_config()
            return client.ApiClient()
        return await config.new_client_from_config(  # several: merged, as kubectl does
            config_file=os.pathsep.join(map(str, files)))
    except (config.ConfigException, OSError, ValueError, TypeError, KeyError,
            yaml.YAMLError) as exc:
        raise _unusable(files, exc) from exc


def sync_configuration(kubeconfig: Path | None) -> Any:
    """The same credentials as a (synchronous) ``kubernetes.client.Configuration``, read
    afresh from their files: for kopf's login, which repeats when a token expires."""
    import kubernetes

    files = kubeconfig_files(kubeconfig)
    configuration = kubernetes.client.Configuration()
    try:
        if files is None:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        else:
            kubernetes.config.load_kube_config(
                config_file=os.pathsep.join(map(str, files)),
                client_configuration=configuration)
    except (kubernetes.config.ConfigException, OSError, ValueError, TypeError,
            KeyError, yaml.YAMLError) as exc:
        raise _unusable(files, exc) from exc
    return configuration
