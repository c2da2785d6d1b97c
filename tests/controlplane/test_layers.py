"""Which modules of `controlplane` each may import, deferred and type-only imports counted:
the process helpers, the errors and the build at the bottom, the components on them, the
test-side helpers on top. A new edge must be added here on purpose.

Known and still to undo (issue "House II"): the launcher and the node name each other
(`ControlPlane(with_node=True)` owns a `Node` that calls back into it), and the node reaches
up to `cluster` for a client. Those three edges are listed so that no other joins them."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_packaging import imported_modules

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {
    "errors": set(),
    "processes": set(),
    "waiting": set(),
    "proxy": set(),
    "traffic": set(),
    "build": {"errors"},
    "network": {"errors"},
    "host": {"network"},
    "candidates": {"build"},
    "images": {"build", "errors", "host", "processes"},
    "launcher": {"build", "errors", "network", "processes", "node"},  # node: to undo
    "node": {"build", "errors", "host", "images", "network", "waiting",
             "launcher", "cluster"},  # launcher, cluster: to undo
    "cluster": {"launcher", "proxy", "waiting"},
    "recorder": {"cluster", "waiting"},
    "deployed": {"cluster", "launcher", "node"},
    "__main__": {"errors", "launcher"},
}


def test_controlplanes_imports_point_one_way() -> None:
    source = ROOT / "controlplane"
    for path in sorted(source.glob("*.py")):
        module = path.stem
        if module == "__init__":
            continue
        assert module in LAYERS, f"{module}: add it to LAYERS with what it may import"
        imports = imported_modules(path, f"controlplane.{module}", root="controlplane",
                                   source=ROOT)
        assert imports <= LAYERS[module], f"{module} imports {imports - LAYERS[module]}"


def test_the_check_sees_deferred_and_type_only_imports() -> None:
    launcher = imported_modules(ROOT / "controlplane" / "launcher.py", "controlplane.launcher",
                                root="controlplane", source=ROOT)
    assert {"build", "processes", "node"} <= launcher  # node: under TYPE_CHECKING


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
