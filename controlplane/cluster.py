"""Working with a cluster: ServiceAccount credentials, the audit log, fault proxies (its
clients come from `controlplane.clients`).

Shared by the tests, `make demo` and `make bench`, so none of them imports from another's
code. A `Cluster` is a kubeconfig plus, when this process started it, the `ControlPlane`
behind it (whose audit log and binaries some checks need).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clients import sync_client
from .launcher import ControlPlane
from .proxy import TcpProxy
from .waiting import eventually


@dataclass
class Cluster:
    kubeconfig: Path
    control_plane: ControlPlane | None

    def require_control_plane(self) -> ControlPlane:
        if self.control_plane is None:
            raise AssertionError("this needs the suite's own control plane (its audit log or "
                                 "its binaries); unset LEADERSHIP_TEST_KUBECONFIG")
        return self.control_plane


def server_of(kubeconfig: Path) -> dict[str, str]:
    """The server and CA (inline) of `kubeconfig`'s current context, as a kubeconfig cluster."""
    import kubernetes

    loader = kubernetes.config.kube_config._get_kube_config_loader(filename=str(kubeconfig))
    loader.set_active_context()
    cfg = kubernetes.client.Configuration()
    loader.load_and_set(cfg)
    entry = {"server": cfg.host}
    if cfg.ssl_ca_cert:
        entry["certificate-authority-data"] = base64.b64encode(
            Path(cfg.ssl_ca_cert).read_bytes()).decode()
    return entry


def service_account_kubeconfig(admin_kubeconfig: Path, namespace: str, name: str,
                               out: Path, *, create: bool = True) -> Path:
    """Write to `out` a kubeconfig that authenticates as ServiceAccount `namespace/name` with
    a real token from the TokenRequest API (creating the account unless `create` is False)."""
    import kubernetes

    v1 = kubernetes.client.CoreV1Api(sync_client(admin_kubeconfig))
    if create:
        v1.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    token = v1.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": server_of(admin_kubeconfig)}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": name,
                                               "namespace": namespace}}],
    }
    out.write_text(json.dumps(config))
    return out


def wait_until_allowed(cp: ControlPlane, kubeconfig: Path, verb: str, resource: str,
                       within: float = 10.0) -> None:
    """Wait until `kubectl auth can-i verb resource` says yes for `kubeconfig`: RBAC just
    applied takes a moment to reach the authorizer's cache."""
    eventually(lambda: cp.kubectl(f"--kubeconfig={kubeconfig}", "auth", "can-i", verb, resource,
                                  check=False).stdout.strip() == "yes",
               within, f"{kubeconfig} may {verb} {resource}", every=0.05)


def kubeconfig_via(proxy: TcpProxy, kubeconfig: Path, out: Path) -> Path:
    """Write to `out` a copy of `kubeconfig` whose clusters are reached through `proxy`."""
    import yaml  # kubeconfigs may be YAML or JSON; YAML reads both

    config = yaml.safe_load(kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://{proxy.address}"
    out.write_text(json.dumps(config))
    return out


def proxy_to(kubeconfig: Path) -> TcpProxy:
    """A started `TcpProxy` to the API server of `kubeconfig` (a loopback address)."""
    from urllib.parse import urlsplit

    url = urlsplit(server_of(kubeconfig)["server"])
    if url.hostname is None or url.port is None:
        raise ValueError(f"{kubeconfig}: the server address has no host and port: {url}")
    return TcpProxy((url.hostname, url.port)).start()


def audit_events(audit_log: Path, namespace: str, name: str) -> list[dict[str, Any]]:
    """Audit events (ResponseComplete or ResponseStarted) for one Lease, oldest first."""
    events = []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if ref.get("namespace") != namespace or ref.get("resource") != "leases":
            continue
        query = event.get("requestURI", "")
        if ref.get("name") == name or f"metadata.name%3D{name}" in query:
            events.append(event)
    return events
