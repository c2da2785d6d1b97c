"""The launcher's failure path: a component that dies at start is named, with its log kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from controlplane import build
from controlplane.launcher import ControlPlane, StartError


def test_a_component_that_dies_is_named_with_its_log(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("LEADERSHIP_CONTROLPLANE_CACHE", str(tmp_path / "cache"))
    bin_dir = build.bin_dir()
    bin_dir.mkdir(parents=True)
    scripts = {"etcd": "echo 'etcd: data dir is corrupt' >&2; exit 3",
               "kube-apiserver": "exec sleep 60", "kubectl": "exit 0"}
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    cp = ControlPlane(dir=tmp_path / "cp")
    with pytest.raises(StartError) as failed:
        cp.start()
    message = str(failed.value)
    assert "etcd exited with 3" in message
    assert str(tmp_path / "cp" / "logs" / "etcd.log") in message
    assert "data dir is corrupt" in message
    assert (tmp_path / "cp" / "logs" / "etcd.log").exists()  # kept for the reader
    assert cp.processes.get("kube-apiserver") is None  # stopped too
    shutil.rmtree(tmp_path / "cp")
