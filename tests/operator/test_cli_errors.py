"""Ordinary mistakes get a one-line message and an exit code from the installed `leadership`
console script, never a traceback: a missing kubeconfig, no credentials at all, a token
without rights, a port in use, a namespace that does not exist, a bad number."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.cluster import Cluster, service_account_kubeconfig

SCRIPT = Path(sys.executable).parent / "leadership"  # what pip installed


def leadership(*args: str, env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "POD_NAMESPACE")}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env={**environment, **(env or {})})


def told(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The message, checked: one or two lines, no traceback, the exit code, the words."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, (done.returncode, done.stderr[-3000:])
    assert 1 <= len(lines) <= 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    for word in words:
        assert word in done.stderr, done.stderr
    return done.stderr


def test_version() -> None:
    from leadership import __version__

    done = leadership("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"leadership {__version__}"


def test_a_lease_duration_out_of_range_says_the_range_in_one_line() -> None:
    done = leadership("operator", "--lease-seconds", "1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    # argparse's usage, then one line: not the 3,599 allowed values.
    assert done.stderr.strip().splitlines()[-1] == (
        "leadership operator: error: argument --lease-seconds: must be a whole number of "
        "seconds, 2 to 3600: '1'")
    assert len(done.stderr) < 1500


@pytest.mark.parametrize("command", ["status", "operator", "sidecar"])
def test_a_kubeconfig_variable_naming_no_file(command: str, tmp_path: Path) -> None:
    args = ["sidecar", "--election=web"] if command == "sidecar" else [command]
    done = leadership(*args, env={"KUBECONFIG": str(tmp_path / "nope.yaml"),
                                  "HOME": str(tmp_path)})
    told(done, 2, f"{tmp_path / 'nope.yaml'}", "does not exist")


def test_no_credentials_at_all_says_where_it_looked(tmp_path: Path) -> None:
    done = leadership("status", env={"HOME": str(tmp_path)})
    told(done, 2, "no Kubernetes credentials found", "$KUBECONFIG is not set",
         str(tmp_path / ".kube" / "config"))


@pytest.fixture
def no_rights(cluster: Cluster, namespace: str, tmp_path: Path) -> Path:
    """A kubeconfig of a ServiceAccount that RBAC grants nothing."""
    return service_account_kubeconfig(cluster.kubeconfig, namespace, "nobody",
                                      tmp_path / "nobody")


@pytest.mark.parametrize("command", ["status", "operator"])
def test_a_token_without_rights_says_what_is_missing_and_what_grants_it(
        command: str, no_rights: Path) -> None:
    message = told(leadership(command, f"--kubeconfig={no_rights}",
                              "--lease-namespace=default" if command == "operator" else "-A"),
                   1, "forbidden: RBAC does not grant list on", "Grant it with")
    assert "cannot list resource" in message and message.rstrip().endswith(".")


def test_an_operator_lease_namespace_that_does_not_exist(cluster: Cluster) -> None:
    told(leadership("operator", f"--kubeconfig={cluster.kubeconfig}",
                    "--lease-namespace=nope"), 1, "namespace nope does not exist")


def test_a_status_namespace_that_does_not_exist_is_said(cluster: Cluster) -> None:
    done = leadership("status", f"--kubeconfig={cluster.kubeconfig}", "-n", "nope")
    assert done.returncode == 0
    assert done.stderr.strip() == "leadership status: namespace nope does not exist"


def test_a_port_in_use(cluster: Cluster, namespace: str) -> None:
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        told(leadership("operator", f"--kubeconfig={cluster.kubeconfig}", "-n", namespace,
                        f"--lease-namespace={namespace}", f"--http-port={port}"),
             1, f"port {port} is in use")


def test_a_kubeconfig_that_is_not_yaml(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: v1\nclusters: [unclosed\n")
    told(leadership("status", f"--kubeconfig={broken}"), 2, "cannot use the credentials of",
         str(broken))


@pytest.mark.parametrize("command", ["operator", "sidecar"])
def test_a_blank_identity_exits_2_naming_the_flag(command: str) -> None:
    args = ["sidecar", "--election=web"] if command == "sidecar" else [command]
    done = leadership(*args, "--identity", " ")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "argument --identity: must be printable, not blank" in done.stderr
