"""Every YAML snippet in docs/library.md is accepted by the real API server.

Plain manifests are applied with a server-side dry run (the API server validates and admits
them, stores nothing). A kustomization is rendered with the kubectl this project builds,
against a copy of this repository's manifests/, then dry-run applied the same way.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from controlplane.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "library.md"
YAML = re.findall(r"(?ms)^```yaml\n(.*?)^```", DOC.read_text())


def test_there_are_yaml_snippets() -> None:
    assert len(YAML) >= 3


@pytest.mark.parametrize("text", YAML, ids=[f"yaml-{i}" for i in range(len(YAML))])
def test_yaml_snippet_is_accepted_by_the_api_server(text: str, cluster: Cluster,
                                                    namespace: str, tmp_path: Path) -> None:
    cp = cluster.require_control_plane()
    documents = [d for d in yaml.safe_load_all(text) if d]
    if documents[0].get("kind") == "Kustomization":
        shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
        overlay = tmp_path / "overlays" / "mine"
        overlay.mkdir(parents=True)
        (overlay / "kustomization.yaml").write_text(text)
        text = cp.kubectl("kustomize", str(overlay)).stdout
        role = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "Role")
        assert role["rules"][0]["resourceNames"] == ["my-app"]  # the patch took
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(text)
    done = cp.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(manifest),
                      check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(server dry run)") == len(
        [d for d in yaml.safe_load_all(text) if d])
