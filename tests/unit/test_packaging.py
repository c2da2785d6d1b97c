"""`import leadership` costs nothing it does not use; each store and example loads one client."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["kopf", "kubernetes", "pykube", "aiohttp", "requests"]


def loaded_after(code: str) -> set[str]:
    """Which of HEAVY a fresh interpreter has loaded after running `code`."""
    loaded = "{m.split('.')[0] for m in sys.modules}"
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted({loaded} & {set(HEAVY)!r})))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_every_heavy_module_is_installed_here() -> None:
    # Otherwise the checks below would pass for the wrong reason.
    assert loaded_after("import " + ", ".join(HEAVY)) == set(HEAVY)


def test_import_leadership_loads_no_client_and_no_kopf() -> None:
    assert loaded_after("import leadership, leadership.sync, leadership.testing") == set()


@pytest.mark.parametrize("module, allowed", [
    ("leadership.stores.pykube", {"pykube", "requests"}),
    # The official client itself pulls in requests (its config loaders), never pykube.
    ("leadership.stores.kubernetes", {"kubernetes", "aiohttp", "requests"}),
    ("leadership.stores.kubeapi", {"kubernetes", "aiohttp", "requests"}),
])
def test_each_store_imports_only_its_own_client(module: str, allowed: set[str]) -> None:
    assert loaded_after(f"import {module}") == allowed


def test_the_candidate_example_loads_only_the_client_it_uses(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]}))
    opened = ("import asyncio, examples.candidate as c\n"
              "async def main(kind):\n"
              f"    store, close = await c.open_store(kind, {str(kubeconfig)!r}, 'default')\n"
              "    await close()\n")
    assert loaded_after(opened + "asyncio.run(main('pykube'))") == {"pykube", "requests"}
    assert "pykube" not in loaded_after(opened + "asyncio.run(main('kubernetes'))")


def test_pip_install_leadership_brings_no_client() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == []
    extras = project["optional-dependencies"]
    assert any(r.startswith("kubernetes") for r in extras["kubernetes"])
    assert any(r.startswith("pykube-ng") for r in extras["pykube"])
    assert any(r.startswith("kopf") for r in extras["operator"])
    assert any(r.startswith("pytest") for r in extras["test"])


# Which modules of the package each module may import: the arrows point one way, from the
# public face down to the store protocol. A new edge must be added here on purpose.
LAYERS = {
    "record": set(),
    "errors": set(),
    "metrics": set(),
    "stores": set(),
    "clock": set(),
    "validation": {"clock", "record", "stores"},
    "timing": {"validation"},
    "stores._wire": {"errors", "stores"},
    "stores.memory": {"clock", "errors", "record", "stores"},
    # The one way to the API server over the official client (the operator's too).
    "stores.kubeapi": {"errors", "stores", "stores._wire", "validation"},
    "stores.kubernetes": {"errors", "stores", "stores._wire", "stores.kubeapi", "validation"},
    "stores.pykube": {"errors", "stores", "stores._wire", "validation"},
    "lock": {"clock", "errors", "record", "stores"},
    "observer": {"clock", "errors", "record", "stores", "timing"},
    # The supervisor of run_while_leading sits beside the candidate: it uses only its public
    # surface (the stream, on_step_down, stop), and the candidate delegates to it.
    "supervisor": set(),
    "stream": set(),
    "twins": {"errors"},
    "candidate": {"clock", "errors", "lock", "metrics", "observer", "stores", "stream",
                  "supervisor", "timing", "twins", "validation"},
    "follower": {"clock", "errors", "observer", "stores", "validation"},
    "sync": {"candidate", "follower", "metrics", "stores", "timing"},
    "testing": {"candidate", "clock", "stores", "stores.memory"},
    # The second face: what tools built on the library use (the operator, status).
    "toolkit": {"clock", "observer", "record", "stores", "stores.kubeapi", "timing",
                "validation"},
}


def imported_modules(path: Path, package: str, root: str = "leadership",
                     source: Path = ROOT / "operator") -> set[str]:
    """The package's own modules that `path` imports (relative imports resolved), as names
    relative to the package `root`, which lives in the folder `source`."""
    import ast

    tree = ast.parse(path.read_text())
    here = package.split(".") if path.name == "__init__.py" else package.split(".")[:-1]
    found = set()

    def module_of(dotted: str) -> str | None:
        name = dotted.removeprefix(root).removeprefix(".")
        path = source / root / name.replace(".", "/")
        return name if name and (path.with_suffix(".py").exists() or path.is_dir()) else None

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = ".".join(here[:len(here) - node.level + 1])
            target = f"{base}.{node.module}" if node.module else base
            if node.module:
                names = [target]
            else:  # from . import x: a submodule, or a name from the package itself
                names = [f"{target}.{a.name}" if module_of(f"{target}.{a.name}") else target
                         for a in node.names]
            found.update(m for m in map(module_of, names) if m)
    return found


def test_imports_point_one_way() -> None:
    source = ROOT / "operator" / "leadership"
    for path in sorted(source.rglob("*.py")):
        relative = path.relative_to(source).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        module = ".".join(parts)
        if module == "":
            continue  # the public face re-exports everything
        assert module in LAYERS, f"{module}: add it to LAYERS with what it may import"
        imports = imported_modules(path, "leadership." + module if module else "leadership")
        assert imports <= LAYERS[module], f"{module} imports {imports - LAYERS[module]}"


# The operator's modules likewise: the API layer (`kube`) and the data (`contract`, `pods`,
# `services`) at the bottom, the Lease cache and the Events on them, the decision and the
# leader endpoint (`routes`) pure, the reconciler on those, and the process wiring (`app`),
# the sidecar, `status` and the command on top. No module reaches into another's data: each
# asks through methods (a test in tests/operator shows the reconciler runs on FakeKube
# through them alone).
OPERATOR_LAYERS = {
    "contract": set(),
    "metrics": set(),
    "kube": set(),
    "text": set(),
    "errors": {"text"},
    "kubeclient": {"errors", "text"},
    "storage": set(),
    "testing": set(),
    "http": {"errors"},
    "pods": {"contract", "text"},
    "decide": {"contract", "pods"},
    "services": {"contract", "pods", "text"},
    "routes": {"contract", "decide", "kube", "pods", "services"},
    "events": {"kube", "metrics", "text"},
    "leases": {"kube", "metrics", "pods", "text"},
    "workqueue": set(),
    "ownwrites": {"pods"},
    "report": {"contract", "decide", "events", "metrics", "pods", "text"},
    "reconcile": {"contract", "decide", "events", "kube", "leases", "metrics", "ownwrites",
                  "pods", "report", "routes", "services", "text", "workqueue"},
    "assembly": {"contract", "decide", "events", "kube", "leases", "metrics", "pods",
                 "reconcile", "services", "text"},
    "app": {"assembly", "contract", "errors", "http", "kube", "kubeclient", "leases",
            "metrics", "reconcile", "storage"},
    "gate": set(),
    "sidecar": {"gate", "http", "kubeclient"},
    "status": {"contract", "decide", "errors", "kube", "kubeclient", "pods", "text"},
    "cli": {"app", "contract", "errors", "sidecar", "status"},
    "": {"contract", "decide", "pods"},
}


def test_the_operators_imports_point_one_way() -> None:
    source = ROOT / "operator" / "leadership_operator"
    for path in sorted(source.glob("*.py")):
        module = "" if path.stem == "__init__" else path.stem
        assert module in OPERATOR_LAYERS, f"{module}: add it to OPERATOR_LAYERS"
        package = "leadership_operator" + (f".{module}" if module else "")
        imports = imported_modules(path, package, root="leadership_operator")
        assert imports <= OPERATOR_LAYERS[module], \
            f"{module or '__init__'} imports {imports - OPERATOR_LAYERS[module]}"


def test_the_operator_uses_only_the_library_face_and_the_library_never_the_operator() -> None:
    import ast

    for path in sorted((ROOT / "operator" / "leadership_operator").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert node.module in ("leadership", "leadership.toolkit") or (
                    not node.module.startswith("leadership.")), (
                    f"{path.name} imports {node.module}: use the public face, `leadership`, "
                    "or what tools use, `leadership.toolkit`")
    for path in sorted((ROOT / "operator" / "leadership").rglob("*.py")):
        assert "leadership_operator" not in path.read_text(), f"{path} imports the operator"
    assert loaded_after("import leadership_operator") == set()  # kopf only when it runs
    assert loaded_after("import leadership.toolkit") == set()
    assert loaded_after("from leadership.toolkit import KubeApi") >= {"kubernetes"}


def pins(text: str) -> dict[str, str]:
    """`name==version` lines of a requirements file, names normalised (PEP 503)."""
    import re

    found = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", line)
        if m:
            found[re.sub(r"[-_.]+", "-", m[1]).lower()] = m[2]
    return found


def test_the_image_lock_agrees_with_the_constraints_and_pins_every_hash() -> None:
    """The image installs image-lock.txt with --require-hashes; `make lock` writes it from
    pyproject.toml and constraints.txt. A drift between the two would ship an image whose
    versions no test ran against."""
    import re

    lock_text = (ROOT / "image-lock.txt").read_text()
    lock = pins(lock_text)
    constraints = pins((ROOT / "constraints.txt").read_text())
    drift = {name: (version, constraints[name]) for name, version in lock.items()
             if name in constraints and constraints[name] != version}
    assert not drift, f"image-lock.txt disagrees with constraints.txt: {drift}; run make lock"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["operator"]
    wanted = {re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", r)[0]).lower() for r in extras}
    assert wanted <= set(lock), f"not in image-lock.txt: {wanted - set(lock)}; run make lock"
    assert {"setuptools", "wheel"} <= set(lock)  # the build backend is hashed too
    requirements = [r for r in re.split(r"\n(?=\S)", lock_text) if r[:1].isalpha()]
    assert len(requirements) == len(lock)
    unhashed = [r.split()[0] for r in requirements if "--hash=sha256:" not in r]
    assert not unhashed, f"requirements without a hash: {unhashed}"
