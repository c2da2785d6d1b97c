"""Delivery without Docker: every kustomization renders with the kubectl the project builds
and applies server-side to the real API server; the operator's Deployment is hardened; the
example's sidecar, Role and Services fit together; the image runs the console script the
tests run, under the name the Makefile and the manifests share."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from controlplane.cluster import Cluster
from leadership_operator.cli import parser

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
KUSTOMIZATIONS = sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml"))
#: What a user applies as is (the rest are parts of these).
DEPLOYABLE = ["operator", "operator/overlays/namespaced", "operator/overlays/delete-pods",
              "example", "example-leader-endpoint"]


def render(cluster: Cluster, directory: Path) -> list[dict[str, Any]]:
    text = cluster.require_control_plane().kubectl("kustomize", str(directory)).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def makefile_image() -> str:
    match = re.search(r"^IMAGE\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile defines IMAGE"
    return match.group(1)


def test_there_are_kustomizations_and_each_deployable_one_is_one() -> None:
    names = {str(p.relative_to(MANIFESTS)) for p in KUSTOMIZATIONS}
    assert set(DEPLOYABLE) <= names, names


@pytest.mark.parametrize("directory", DEPLOYABLE)
def test_each_deployable_kustomization_applies_server_side(
        cluster: Cluster, core_api: kubernetes.client.ApiClient, directory: str) -> None:
    cp = cluster.require_control_plane()
    v1 = kubernetes.client.CoreV1Api(core_api)
    if "my-apps" not in {n.metadata.name for n in v1.list_namespace().items}:
        v1.create_namespace({"metadata": {"name": "my-apps"}})  # the namespaced overlay's
    rendered = cp.kubectl("kustomize", str(MANIFESTS / directory)).stdout
    # Without a kubelet nothing is pulled or run: the API server validates and stores it all.
    done = subprocess.run([str(cp.binaries["kubectl"]), f"--kubeconfig={cluster.kubeconfig}",
                           "apply", "--server-side", "--force-conflicts",
                           "--field-manager=leadership-tests", "-f", "-"],
                          input=rendered, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    applied = [line for line in done.stdout.splitlines() if "serverside-applied" in line]
    assert len(applied) == len(render(cluster, MANIFESTS / directory)), done.stdout
    if directory.endswith("delete-pods"):
        # The session's cluster is shared: take the extra right away again, or later tests
        # (that the operator cannot delete pods by default) would see it.
        cp.kubectl("delete", "-f", str(MANIFESTS / directory / "delete-pods-rbac.yaml"))


def test_every_part_renders(cluster: Cluster) -> None:
    for directory in KUSTOMIZATIONS:
        assert render(cluster, directory), directory


def test_the_operator_deployment_is_hardened(cluster: Cluster) -> None:
    docs = render(cluster, MANIFESTS / "operator")
    deployment = one(docs, "Deployment", "leadership-operator")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "leadership-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # Liveness (and start-up) on what a restart fixes; readiness on what it cannot.
    assert [container[p]["httpGet"]["path"] for p in (
        "startupProbe", "livenessProbe", "readinessProbe")] == ["/healthz", "/healthz", "/readyz"]
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    args = parser().parse_args(container["args"])
    assert args.command == "operator" and args.http_port == 8080
    assert {e["name"] for e in container["env"]} >= {"POD_NAME", "POD_NAMESPACE"}
    # Only the operator's own pods get the ServiceAccount's token.
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is True
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_the_overlays_change_scope_and_rights_only(cluster: Cluster) -> None:
    namespaced = render(cluster, MANIFESTS / "operator" / "overlays" / "namespaced")
    container = one(namespaced, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert parser().parse_args(container["args"]).namespaces == ["my-apps"]
    assert not [d for d in namespaced if d["kind"].startswith("Cluster")]
    role = one(namespaced, "Role", "leadership-operator")
    assert role["metadata"]["namespace"] == "my-apps"

    def pod_verbs(docs: list[dict[str, Any]]) -> set[str]:
        return {verb for d in docs if d["kind"] in ("ClusterRole", "Role")
                for rule in d["rules"] if "pods" in rule["resources"] for verb in rule["verbs"]}

    assert "delete" not in pod_verbs(render(cluster, MANIFESTS / "operator"))
    assert "delete" in pod_verbs(render(cluster, MANIFESTS / "operator" / "overlays" /
                                        "delete-pods"))


def test_the_example_routes_by_label_and_its_sidecar_may_touch_only_its_lease(
        cluster: Cluster) -> None:
    docs = render(cluster, MANIFESTS / "example")
    deployment = one(docs, "Deployment", "web")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]
    election = pod["metadata"]["labels"]["leadership.dev/election"]
    [sidecar] = pod["spec"]["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: up before, down after
    args = parser().parse_args(sidecar["args"])
    assert args.command == "sidecar" and args.election == election
    assert "readinessProbe" not in sidecar  # readiness never depends on leadership
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    # Only the sidecar sees a token; the app container gets none.
    assert pod["spec"]["automountServiceAccountToken"] is False
    token_volume = sidecar["volumeMounts"][0]["name"]
    assert all(token_volume not in str(c.get("volumeMounts")) for c in pod["spec"]["containers"])
    lease = one(docs, "Lease")
    assert lease["metadata"]["name"] == election
    role = one(docs, "Role")
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                              "resourceNames": [election],
                              "verbs": ["get", "watch", "update"]}]
    leader = one(docs, "Service", "web-leader")["spec"]["selector"]
    followers = one(docs, "Service", "web-followers")["spec"]["selector"]
    assert leader == {"leadership.dev/election": election, "leadership.dev/role": "leader"}
    assert followers == {"leadership.dev/election": election, "leadership.dev/role": "follower"}


def test_the_leader_endpoint_example_has_one_selector_less_route_and_no_label_route(
        cluster: Cluster) -> None:
    docs = render(cluster, MANIFESTS / "example-leader-endpoint")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert set(services) == {"web-leader-endpoint", "web-followers"}
    route = services["web-leader-endpoint"]
    assert "selector" not in route["spec"]
    assert route["metadata"]["labels"]["leadership.dev/election"] == "web"
    # It targets the sidecar's gate, which passes connections to the app's port.
    pod = one(docs, "Deployment", "web")["spec"]["template"]["spec"]
    [sidecar] = pod["initContainers"]
    args = parser().parse_args(sidecar["args"])
    gate = {p["name"]: p["containerPort"] for p in sidecar["ports"]}["gate"]
    app = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}["http"]
    assert route["spec"]["ports"][0]["targetPort"] == "gate"
    assert (args.gate_port, args.gate_target) == (gate, ("127.0.0.1", app))
    assert {"port": "gate"} in one(docs, "NetworkPolicy")["spec"]["ingress"][0]["ports"]
    # The app itself is the example's, unchanged.
    example = one(render(cluster, MANIFESTS / "example"), "Deployment", "web")
    assert pod["containers"] == example["spec"]["template"]["spec"]["containers"]


def test_one_image_name_everywhere_and_its_entrypoint_is_the_tested_command(
        cluster: Cluster) -> None:
    image = makefile_image()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert image == f"leadership:{version}"
    ours = set()
    for directory in DEPLOYABLE:
        for doc in render(cluster, MANIFESTS / directory):
            if doc["kind"] == "Deployment":
                spec = doc["spec"]["template"]["spec"]
                for c in spec.get("initContainers", []) + spec["containers"]:
                    if c["image"].startswith("leadership"):
                        ours.add(c["image"])
    assert ours == {image}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["leadership"]' in dockerfile
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    # The tests run `python -m leadership_operator.cli`: the very function the script calls.
    assert scripts["leadership"] == "leadership_operator.cli:main"
    script = Path(sys.executable).parent / "leadership"  # what pip installed from that line
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert all(command in done.stdout for command in ("operator", "sidecar", "status"))


def test_the_dockerfile_is_multi_stage_pinned_non_root_and_lint_clean() -> None:
    text = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M)
    # A patch release and the digest of its index: the build resolves exactly one image.
    assert bases and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}",
                                  bases[0]), bases
    # Dependencies come from the hashed lock only, the project itself without any index.
    assert "--require-hashes -r image-lock.txt" in text
    assert re.search(r"pip install .*--no-deps .*--no-index \.", text)
    stages = re.findall(r"^FROM ", text, re.M)
    assert len(stages) == 2
    final = text[text.rindex("FROM "):]
    assert "COPY --from=build /opt/leadership /opt/leadership" in final
    assert re.search(r"^USER 10001", final, re.M)
    assert "pip install" not in final and "apt-get" not in final
    command = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([command, str(ROOT / "Dockerfile")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
