"""The node's images and the machine checks, without starting a node: what the image's cache
key covers, that the local images carry the tags their source declares, and that a machine
running a kubelet of its own is refused with its name (and `make demo` falls back)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from controlplane import host, images
from controlplane.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


def copy_context(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "image-lock.txt",
                 "README.md"):
        shutil.copy2(ROOT / name, root / name)
    shutil.copytree(ROOT / "operator", root / "operator",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_the_image_key_follows_the_build_context_and_nothing_else(tmp_path: Path) -> None:
    root = copy_context(tmp_path)
    files = images.context_files(root)
    assert root / "pyproject.toml" in files and root / "operator/leadership/candidate.py" in files
    assert not any("__pycache__" in f.parts for f in files)
    before = images._digest(files, root=root)
    # What a test run leaves in the tree is not part of the context: the key stays.
    cache = root / "operator/leadership/__pycache__"
    cache.mkdir()
    (cache / "candidate.cpython-311.pyc").write_bytes(b"\0")
    (root / "notes.txt").write_text("not in the context\n")
    assert images._digest(images.context_files(root), root=root) == before
    # A change to the code that goes into the image changes it.
    source = root / "operator/leadership/candidate.py"
    source.write_text(source.read_text() + "\n# an edit\n")
    assert images._digest(images.context_files(root), root=root) != before


def test_a_dockerignore_the_key_cannot_follow_is_an_error(tmp_path: Path) -> None:
    root = copy_context(tmp_path)
    (root / ".dockerignore").write_text("*\n!operator/\n*.md\n")
    with pytest.raises(images.ImageError, match=r"\*\.md"):
        images.context_files(root)


def test_the_local_images_carry_the_tags_their_source_declares() -> None:
    assert images._declared_tags() == (images.PAUSE_TAG, images.AGNHOST_TAG)
    deployment = yaml.safe_load((ROOT / "manifests/example/deployment.yaml").read_text())
    app = deployment["spec"]["template"]["spec"]["containers"][0]
    assert app["image"] == images.AGNHOST


def test_a_kubelet_of_the_machines_own_is_found_and_the_demo_falls_back_saying_why(
        tmp_path: Path) -> None:
    fake = tmp_path / "kubelet"  # any process named kubelet that is not ours
    shutil.copy2("/bin/sleep", fake)
    proc = subprocess.Popen([str(fake), "60"])
    try:
        eventually(lambda: "kubelet" in Path(f"/proc/{proc.pid}/comm").read_text(), 5,
                   "the fake kubelet running", every=0.01)
        assert f"kubelet (pid {proc.pid}, {fake})" in host.foreign_processes(ours=())
        why = host.why_no_node((tmp_path / "not-the-cache",))
        assert why is not None  # the kubelet, or (not root, not Linux) something before it
        demo = subprocess.Popen([sys.executable, "-m", "examples.node_demo"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            assert demo.stdout is not None
            first = demo.stdout.readline()
        finally:
            os.killpg(demo.pid, signal.SIGINT)  # the process demo stops what it started
            demo.communicate(timeout=60)
        assert first.startswith("make demo: no real node on this machine ("), first
        assert "running the process version instead (make demo-processes)" in first
        if os.geteuid() == 0:
            assert "runs a kubelet or container runtime of its own" in first, first
    finally:
        proc.kill()
        proc.wait()
