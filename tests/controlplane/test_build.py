"""The helper Go module must agree with versions.env: a version bump is one edit + `make gomod`."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane import build


def test_committed_go_mod_matches_versions_env() -> None:
    versions = build.load_versions()
    assert build.check_go_mod(versions) == []


def test_check_go_mod_names_each_disagreement() -> None:
    versions = build.Versions(kubernetes="1.35.4", etcd="3.6.5", go_directive="1.25.0")
    text = build.render_go_mod(versions, ["k8s.io/api", "k8s.io/client-go"])
    assert build.check_go_mod(versions, text) == []
    bumped = build.Versions(kubernetes="1.35.9", etcd="3.6.5", go_directive="1.25.0")
    problems = build.check_go_mod(bumped, text)
    assert any("k8s.io/kubernetes" in p for p in problems)
    assert any("k8s.io/client-go pinned at v0.35.4, want v0.35.9" in p for p in problems)


def test_versions_env_rejects_a_malformed_version(tmp_path: Path) -> None:
    bad = tmp_path / "versions.env"
    bad.write_text("KUBERNETES_VERSION=1.35\nETCD_VERSION=3.6.5\nGO_DIRECTIVE=1.25.0\n")
    with pytest.raises(build.BuildError, match="KUBERNETES_VERSION"):
        build.load_versions(bad)


def test_cache_dir_is_keyed_by_version_and_overridable(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setenv("LEADERSHIP_CONTROLPLANE_CACHE", str(tmp_path))
    versions = build.Versions(kubernetes="1.35.4", etcd="3.6.5", go_directive="1.25.0")
    assert build.bin_dir(versions) == tmp_path / "k8s-v1.35.4_etcd-v3.6.5" / "bin"


def test_missing_go_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no `go` anywhere
    monkeypatch.setenv("LEADERSHIP_CONTROLPLANE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(build.BuildError, match="Go toolchain is missing"):
        build.ensure(["etcd"])


def test_unreachable_module_proxy_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    # An empty module cache and no proxy: exactly what a machine without network sees.
    monkeypatch.setenv("GOPROXY", "off")
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "modcache"))
    monkeypatch.setenv("LEADERSHIP_CONTROLPLANE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(build.BuildError, match=r"Go module proxy .* looks unreachable"):
        build.ensure(["etcd"])


def test_cached_binaries_are_used_without_go(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("LEADERSHIP_CONTROLPLANE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # Go would be missing: not needed
    names = ["etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "leaderpeer"]
    for name in names:
        path = build.target_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("cached")
    assert build.ensure(names) == {name: build.target_path(name) for name in names}


def test_editing_the_peer_changes_its_cache_key(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "gomod"
    shutil.copytree(build.MODULE_DIR, copy)
    monkeypatch.setattr(build, "MODULE_DIR", copy)
    before = build.target_path("leaderpeer")
    assert before.name.startswith("leaderpeer-")
    main_go = copy / "leaderpeer" / "main.go"
    main_go.write_text(main_go.read_text() + "\n// an edit\n")
    after = build.target_path("leaderpeer")
    assert after != before and after.parent == before.parent
    assert build.target_path("etcd") == before.parent / "etcd"  # the others keep their key
