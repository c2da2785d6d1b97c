"""Which modules of `controlplane` each may import, deferred and type-only imports counted:
the process helpers, the errors and the build at the bottom, the components on them, the
test-side helpers on top. A new edge must be added here on purpose.

The control plane and the node do not own each other: the launcher knows no node, the node
reads the control plane it is beside (its address and credentials, a type-only import), and
`local` composes the two. Nothing below `cluster` imports it."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_packaging import imported_modules

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {
    "errors": set(),
    "processes": set(),
    "clients": set(),
    "pki": {"network"},
    "waiting": set(),
    "proxy": {"waiting"},
    "traffic": set(),
    "build": {"errors"},
    "network": {"errors"},
    "host": {"network", "waiting"},
    "candidates": {"build"},
    "images": {"build", "errors", "host", "processes", "waiting"},
    "launcher": {"build", "errors", "network", "pki", "processes", "waiting"},
    "node.machine": {"build", "errors", "pki"},
    "node.configs": {"images", "network", "node.machine"},
    "node.events": {"waiting"},
    "node.janitor": {"build", "host", "images", "network", "node.machine", "waiting"},
    "node.lifecycle": {"build", "clients", "host", "images", "network", "processes", "waiting",
                       "node.configs", "node.events", "node.janitor", "node.machine",
                       "launcher"},  # launcher: type-only, the control plane it is beside
    "node": {"node.events", "node.janitor", "node.lifecycle", "node.machine"},
    "node.__main__": {"build", "host", "images", "node.janitor", "node.machine"},
    "local": {"launcher", "node"},
    "cluster": {"clients", "launcher", "proxy", "waiting"},
    "recorder": {"clients", "traffic", "waiting"},
    "deployed": {"clients", "local", "network"},
    "__main__": {"errors", "launcher", "local"},
}


def test_controlplanes_imports_point_one_way() -> None:
    source = ROOT / "controlplane"
    for path in sorted(source.rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        module = ".".join(parts)
        if not module:
            continue
        assert module in LAYERS, f"{module}: add it to LAYERS with what it may import"
        imports = imported_modules(path, f"controlplane.{module}", root="controlplane",
                                   source=ROOT)
        assert imports <= LAYERS[module], f"{module} imports {imports - LAYERS[module]}"


def test_the_check_sees_deferred_and_type_only_imports() -> None:
    node = imported_modules(ROOT / "controlplane" / "node" / "lifecycle.py",
                            "controlplane.node.lifecycle", root="controlplane", source=ROOT)
    assert {"build", "processes", "launcher"} <= node  # launcher: under TYPE_CHECKING
    assert "kubernetes" not in node  # a client library is no module of ours


def test_every_error_has_the_one_base() -> None:
    import subprocess

    from controlplane.build import BuildError
    from controlplane.errors import ControlPlaneError
    from controlplane.images import ImageError
    from controlplane.launcher import KubectlError, StartError
    from controlplane.network import NetworkError
    from controlplane.node import NodeError

    for error in (BuildError, ImageError, StartError, KubectlError, NetworkError, NodeError):
        assert issubclass(error, ControlPlaneError), error
    assert issubclass(KubectlError, subprocess.CalledProcessError)  # what callers catch too
