"""Build the real control-plane and node binaries from the official sources, cached by version.

etcd, kube-apiserver, kube-controller-manager and kubectl, and for a node kubelet,
kube-scheduler, kube-proxy and agnhost, are compiled from the Go module proxy through one
small helper module (``gomod/``), the way controller-runtime's envtest users do it without
Docker. The node's other parts (containerd and its shim, ``ctr``, runc, the CNI plugins,
BuildKit) are built from their own modules with their own ``go.mod``, as their releases are;
the sandbox image's ``pause`` is compiled with the C compiler from Kubernetes' own source.
Every pinned version lives in ``versions.env``; the helper module's ``go.mod`` is rendered
from it (``python -m controlplane.build --render``).

Binaries land in a cache directory outside the repository, keyed by the pinned versions:
``$LEADERSHIP_CONTROLPLANE_CACHE`` or ``~/.cache/leadership/controlplane``. A binary is built
only when it is missing; it is written under a temporary name and renamed, so an interrupted
build never leaves a half-written binary behind.

This module uses the standard library only: it runs before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ControlPlaneError

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.env"
MODULE_DIR = HERE / "gomod"
MODULE_PATH = "leadership.test/controlplane"

# binary name -> Go package it is built from (all resolved through the helper module).
KUBE_TARGETS = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    # The example app's image: `agnhost porter` answers every request with its pod's name.
    # Kubernetes' own e2e test image, built from the same tag's source.
    "agnhost": "k8s.io/kubernetes/test/images/agnhost",
}
ETCD_TARGET = {"etcd": "go.etcd.io/etcd/server/v3"}
# Test peers written in this repository, inside the helper module. Their cache key includes
# a hash of their sources, so editing a peer rebuilds it (and nothing else).
PEER_TARGETS = {"leaderpeer": "./leaderpeer", "leaseload": "./leaseload"}
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")


@dataclass(frozen=True)
class ToolTarget:
    """A binary built from a Go module of its own, inside that module (its own go.mod and
    go.sum, so its dependencies are exactly its release's), with its release's build tags."""

    version_key: str  # the versions.env entry that pins the module
    module: str
    package: str  # relative to the module's root
    cgo: bool = False
    tags: tuple[str, ...] = ()
    version_flags: tuple[str, ...] = ()  # -X flags; "{v}" is the version without its "v"


_CONTAINERD = "github.com/containerd/containerd/v2"
_CONTAINERD_FLAGS = (f"-X {_CONTAINERD}/version.Version=v{{v}}",
                     f"-X {_CONTAINERD}/version.Package={_CONTAINERD}")
_CNI = "github.com/containernetworking/plugins"
_CNI_FLAGS = (f"-X {_CNI}/pkg/utils/buildversion.BuildVersion=v{{v}}",)
_BUILDKIT_FLAGS = ("-X github.com/moby/buildkit/version.Version=v{v}",
                   "-X github.com/moby/buildkit/version.Package=github.com/moby/buildkit")
TOOL_TARGETS = {
    "containerd": ToolTarget("CONTAINERD_VERSION", _CONTAINERD, "./cmd/containerd",
                             tags=("urfave_cli_no_docs", "no_btrfs"),
                             version_flags=_CONTAINERD_FLAGS),
    "containerd-shim-runc-v2": ToolTarget("CONTAINERD_VERSION", _CONTAINERD,
                                          "./cmd/containerd-shim-runc-v2",
                                          tags=("urfave_cli_no_docs", "no_grpc"),
                                          version_flags=_CONTAINERD_FLAGS),
    "ctr": ToolTarget("CONTAINERD_VERSION", _CONTAINERD, "./cmd/ctr",
                      tags=("urfave_cli_no_docs", "no_btrfs"), version_flags=_CONTAINERD_FLAGS),
    # cgo for libseccomp (the pods' RuntimeDefault seccomp profile); without the libpathrs tag
    # runc uses its Go path-resolution code, as `make RUNC_BUILDTAGS=-libpathrs` does.
    "runc": ToolTarget("RUNC_VERSION", "github.com/opencontainers/runc", ".", cgo=True,
                       tags=("seccomp", "urfave_cli_no_docs"),
                       version_flags=("-X main.version={v}",)),
    "bridge": ToolTarget("CNI_PLUGINS_VERSION", _CNI, "./plugins/main/bridge",
                         version_flags=_CNI_FLAGS),
    "host-local": ToolTarget("CNI_PLUGINS_VERSION", _CNI, "./plugins/ipam/host-local",
                             version_flags=_CNI_FLAGS),
    "loopback": ToolTarget("CNI_PLUGINS_VERSION", _CNI, "./plugins/main/loopback",
                           version_flags=_CNI_FLAGS),
    "buildkitd": ToolTarget("BUILDKIT_VERSION", "github.com/moby/buildkit", "./cmd/buildkitd",
                            tags=("osusergo", "netgo", "static_build"),
                            version_flags=_BUILDKIT_FLAGS),
    "buildctl": ToolTarget("BUILDKIT_VERSION", "github.com/moby/buildkit", "./cmd/buildctl",
                           version_flags=_BUILDKIT_FLAGS),
}
# The pod sandbox's process: Kubernetes' own build/pause/linux/pause.c, linked statically.
C_TARGETS = {"pause": "build/pause/linux/pause.c"}
NODE = ("kubelet", "kube-scheduler", "kube-proxy", "containerd", "containerd-shim-runc-v2",
        "ctr", "runc", "bridge", "host-local", "loopback")
IMAGE_TOOLS = ("buildkitd", "buildctl", "agnhost", "pause")


class BuildError(ControlPlaneError):
    """The binaries could not be built; the message says what is missing."""


@dataclass(frozen=True)
class Versions:
    kubernetes: str  # "1.35.4"
    etcd: str  # "3.6.5"
    go_directive: str  # "1.25.0"
    tools: dict[str, str] = field(default_factory=dict)  # "CONTAINERD_VERSION" -> "2.4.2"

    @property
    def staging(self) -> str:
        """Staging modules (k8s.io/api, client-go, ...) are tagged v0.<minor>.<patch>."""
        _major, minor, patch = self.kubernetes.split(".")
        return f"0.{minor}.{patch}"

    @property
    def cache_key(self) -> str:
        return f"k8s-v{self.kubernetes}_etcd-v{self.etcd}"


def load_versions(path: Path = VERSIONS_FILE) -> Versions:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    tool_keys = sorted({t.version_key for t in TOOL_TARGETS.values()})
    try:
        v = Versions(values["KUBERNETES_VERSION"], values["ETCD_VERSION"], values["GO_DIRECTIVE"],
                     {key: values.get(key, "") for key in tool_keys})
    except KeyError as exc:
        raise BuildError(f"{path}: missing {exc.args[0]}") from None
    for name, value in (("KUBERNETES_VERSION", v.kubernetes), ("ETCD_VERSION", v.etcd),
                        ("GO_DIRECTIVE", v.go_directive), *v.tools.items()):
        if not value:
            raise BuildError(f"{path}: missing {name}")
        if not re.fullmatch(r"\d+\.\d+\.\d+", value):
            raise BuildError(f"{path}: {name}={value!r} is not a plain X.Y.Z version")
    return v


def cache_root() -> Path:
    override = os.environ.get("LEADERSHIP_CONTROLPLANE_CACHE")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "leadership" / "controlplane"


def bin_dir(versions: Versions | None = None) -> Path:
    return cache_root() / (versions or load_versions()).cache_key / "bin"


def _go_env(*, cgo: bool = False, mod: str = "mod") -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="1" if cgo else "0",
               GOFLAGS=f"-mod={mod} -buildvcs=false")
    return env


def _run_go(args: list[str], *, cwd: Path, what: str, timeout: float | None = None,
            env: dict[str, str] | None = None) -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the Go toolchain is missing: install Go >= the GO_DIRECTIVE in "
            f"{VERSIONS_FILE} (e.g. `apt-get install golang-go` or from go.dev) and retry")
    try:
        proc = subprocess.run([go, *args], cwd=cwd, env=env or _go_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what}: `go {' '.join(args)}` timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        out = proc.stdout.strip()
        hint = ""
        if re.search(r"dial tcp|no such host|connection refused|i/o timeout|proxy|TLS handshake",
                     out, re.IGNORECASE):
            proxy = subprocess.run([go, "env", "GOPROXY"], text=True, capture_output=True,
                                   env=_go_env()).stdout.strip()
            hint = (f"\nThe Go module proxy ({proxy}) looks unreachable: the modules in "
                    f"{MODULE_DIR / 'go.mod'} must be downloadable (or already in the module "
                    "cache, `go env GOMODCACHE`).")
        raise BuildError(f"{what} failed (`go {' '.join(args)}`):\n{out[-4000:]}{hint}")
    return proc.stdout


def _check_go_version(need: str, who: str = "the helper module") -> None:
    out = _run_go(["env", "GOVERSION"], cwd=HERE, what="reading the Go version").strip()
    m = re.match(r"go(\d+)\.(\d+)(?:\.(\d+))?", out)
    if not m:
        return  # a development toolchain: let the build itself tell
    have = tuple(int(x or 0) for x in m.groups())
    wanted = tuple(int(x) for x in [*need.split("."), "0", "0"][:3])
    if have < wanted:
        raise BuildError(f"Go {out} is too old: {who} needs go >= {need} "
                         "(GOTOOLCHAIN=local, so no automatic download)")


# --- rendering the helper module -------------------------------------------------------

def staging_modules(versions: Versions) -> list[str]:
    """The authoritative staging-module list: the replace block of k8s.io/kubernetes' go.mod."""
    out = _run_go(["mod", "download", "-json", f"k8s.io/kubernetes@v{versions.kubernetes}"],
                  cwd=HERE, what="downloading k8s.io/kubernetes' go.mod", timeout=900)
    gomod = Path(json.loads(out)["GoMod"]).read_text()
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", gomod, re.M)))


def render_go_mod(versions: Versions, staging: list[str]) -> str:
    minor = versions.go_directive.rsplit(".", 1)[0]
    tools = "\n".join(f"\t{pkg}" for pkg in [*ETCD_TARGET.values(), *KUBE_TARGETS.values()])
    replaces = "\n".join(f"\t{m} => {m} v{versions.staging}" for m in staging)
    return (
        "// Generated from versions.env by `python -m controlplane.build --render`.\n"
        "// It pins the official Kubernetes and etcd modules so that their commands build\n"
        "// outside the kubernetes repository (whose go.mod points staging modules at ./staging).\n"
        f"module {MODULE_PATH}\n\n"
        f"go {versions.go_directive}\n\n"
        f"godebug default=go{minor}\n\n"
        f"tool (\n{tools}\n)\n\n"
        "require (\n"
        f"\tgo.etcd.io/etcd/server/v3 v{versions.etcd}\n"
        f"\tk8s.io/kubernetes v{versions.kubernetes}\n"
        ")\n\n"
        f"replace (\n{replaces}\n)\n"
    )


def check_go_mod(versions: Versions, text: str | None = None) -> list[str]:
    """Return the disagreements between the committed go.mod and versions.env (none = ok)."""
    text = text if text is not None else (MODULE_DIR / "go.mod").read_text()
    problems = []
    m = re.search(r"^go (\S+)$", text, re.M)
    if not m or m.group(1) != versions.go_directive:
        found = m and m.group(1)
        problems.append(f"go directive {found!r} != GO_DIRECTIVE {versions.go_directive}")
    m = re.search(r"^\s*k8s\.io/kubernetes v(\S+)", text, re.M)
    if not m or m.group(1) != versions.kubernetes:
        problems.append(f"k8s.io/kubernetes {m and m.group(1)!r} != {versions.kubernetes}")
    m = re.search(r"^\s*go\.etcd\.io/etcd/server/v3 v(\S+)", text, re.M)
    if not m or m.group(1) != versions.etcd:
        problems.append(f"etcd server {m and m.group(1)!r} != {versions.etcd}")
    replaced = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \1 v(\S+)$", text, re.M)
    if not replaced:
        problems.append("no staging-module replace directives")
    problems += [f"{mod} pinned at v{ver}, want v{versions.staging}"
                 for mod, ver in replaced if ver != versions.staging]
    return problems


def render(versions: Versions) -> None:
    _check_go_version(versions.go_directive)
    (MODULE_DIR / "go.mod").write_text(render_go_mod(versions, staging_modules(versions)))
    print(f"rendered {MODULE_DIR / 'go.mod'}; resolving go.sum (go mod tidy) ...", flush=True)
    _run_go(["mod", "tidy"], cwd=MODULE_DIR, what="go mod tidy", timeout=1800)
    print("done", flush=True)


# --- building -------------------------------------------------------------------------

def _peer_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(MODULE_DIR.rglob("*")):
        if path.is_file() and path.suffix in {".go", ".mod", ".sum"}:
            h.update(path.relative_to(MODULE_DIR).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def target_path(name: str, versions: Versions | None = None) -> Path:
    versions = versions or load_versions()
    if name in TOOL_TARGETS:
        tool = TOOL_TARGETS[name]
        stem = tool.version_key.removesuffix("_VERSION").lower().replace("_", "-")
        return cache_root() / f"{stem}-v{versions.tools[tool.version_key]}" / "bin" / name
    d = bin_dir(versions)
    if name in PEER_TARGETS:
        return d / f"{name}-{_peer_hash()}"
    return d / name


def _ldflags(versions: Versions) -> str:
    """Stamp the real version, as Kubernetes' own release build does (hack/lib/version.sh)."""
    major, minor, _ = versions.kubernetes.split(".")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion=v{versions.kubernetes}", f"-X {pkg}.gitMajor={major}",
                  f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean"]
    flags.append(f"-X go.etcd.io/etcd/api/v3/version.GitSHA=v{versions.etcd}")
    return " ".join(flags)


class _Ticker:
    """Prints the elapsed time every `every` seconds while a long step runs."""

    def __init__(self, label: str, every: float = 30.0) -> None:
        self.label, self.every = label, every
        self.start = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.every):
            print(f"  ... still {self.label}: {self.elapsed():.0f}s elapsed", file=sys.stderr,
                  flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def __enter__(self) -> _Ticker:
        print(f"==> {self.label}", file=sys.stderr, flush=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


ALL_TARGETS = (*ETCD_TARGET, *KUBE_TARGETS, *PEER_TARGETS, *TOOL_TARGETS, *C_TARGETS)


def _module_dir(module: str, version: str) -> Path:
    """Download `module@version` (its zip: the source its tag names) and return its directory."""
    out = _run_go(["mod", "download", "-json", f"{module}@{version}"], cwd=HERE,
                  what=f"downloading {module}@{version}", timeout=900)
    return Path(json.loads(out)["Dir"])


def _build_helper(name: str, out: Path, versions: Versions) -> None:
    package = {**ETCD_TARGET, **KUBE_TARGETS, **PEER_TARGETS}[name]
    _run_go(["build", "-trimpath", "-ldflags", _ldflags(versions), "-o", str(out), package],
            cwd=MODULE_DIR, what=f"building {name}")


def _build_tool(name: str, out: Path, versions: Versions) -> None:
    tool = TOOL_TARGETS[name]
    version = versions.tools[tool.version_key]
    source = _module_dir(tool.module, f"v{version}")
    need = re.search(r"^go (\S+)$", (source / "go.mod").read_text(), re.M)
    if need:
        _check_go_version(need.group(1), f"{tool.module} v{version}")
    flags = " ".join(["-s", "-w", *(f.format(v=version) for f in tool.version_flags)])
    args = ["build", "-trimpath", "-ldflags", flags]
    if tool.tags:
        args += ["-tags", " ".join(tool.tags)]
    if tool.cgo and shutil.which("gcc") is None:
        raise BuildError(f"{name} needs a C compiler (cgo): `apt-get install gcc libseccomp-dev`")
    # Read-only: the module cache is, and the module's own go.sum must be enough.
    _run_go([*args, "-o", str(out), tool.package], cwd=source, what=f"building {name}",
            env=_go_env(cgo=tool.cgo, mod="readonly"), timeout=1800)


def _build_c(name: str, out: Path, versions: Versions) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise BuildError(f"{name} is C: install a C compiler (`apt-get install gcc`)")
    source = _module_dir("k8s.io/kubernetes", f"v{versions.kubernetes}") / C_TARGETS[name]
    proc = subprocess.run([cc, "-Os", "-Wall", "-static", f"-DVERSION=v{versions.kubernetes}",
                           "-o", str(out), str(source)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"compiling {source} failed:\n{proc.stderr[-2000:]}")
    subprocess.run(["strip", str(out)], check=False, capture_output=True)


def ensure(names: tuple[str, ...] | list[str] = CONTROL_PLANE) -> dict[str, Path]:
    """Return name -> path of each binary, building the missing ones first."""
    versions = load_versions()
    unknown = [n for n in names if n not in ALL_TARGETS]
    if unknown:
        raise BuildError(f"unknown binaries {unknown}; known: {sorted(ALL_TARGETS)}")
    paths = {n: target_path(n, versions) for n in names}
    missing = [n for n in names if not paths[n].is_file()]
    if not missing:
        return paths
    helper = [n for n in missing if n not in TOOL_TARGETS and n not in C_TARGETS]
    if helper:
        problems = check_go_mod(versions)
        if problems:
            raise BuildError(f"{MODULE_DIR / 'go.mod'} disagrees with {VERSIONS_FILE}: "
                             + "; ".join(problems) + ". Run `make gomod` to re-render it.")
    if not all(n in C_TARGETS for n in missing):
        _check_go_version(versions.go_directive)
    total = time.monotonic()
    if helper:
        with _Ticker(f"downloading Go modules for {', '.join(helper)}"):
            _run_go(["mod", "download"], cwd=MODULE_DIR, what="downloading the Go modules",
                    timeout=1800)
    for n in missing:
        paths[n].parent.mkdir(parents=True, exist_ok=True)
        tmp = paths[n].with_name(f".{paths[n].name}.tmp{os.getpid()}")
        build_one = (_build_tool if n in TOOL_TARGETS else _build_c if n in C_TARGETS
                     else _build_helper)
        with _Ticker(f"building {n}") as t:
            try:
                build_one(n, tmp, versions)
                os.replace(tmp, paths[n])
            finally:
                tmp.unlink(missing_ok=True)
            print(f"    built {paths[n]} in {t.elapsed():.0f}s", file=sys.stderr, flush=True)
    print(f"==> built {len(missing)} binaries in {time.monotonic() - total:.0f}s "
          f"(cache: {cache_root()})", file=sys.stderr, flush=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controlplane.build", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*",
                   help=f"binaries to ensure (default: {' '.join(CONTROL_PLANE)}); `node` "
                        "names every binary a node and its images need")
    p.add_argument("--render", action="store_true", help="re-render gomod/go.mod from versions.env")
    p.add_argument("--print-dir", action="store_true", help="print the cache directory and exit")
    args = p.parse_args(argv)
    try:
        if args.print_dir:
            print(bin_dir())
            return 0
        if args.render:
            render(load_versions())
            return 0
        names: list[str] = []
        for name in args.names or CONTROL_PLANE:
            names += [*NODE, *IMAGE_TOOLS] if name == "node" else [name]
        for name, path in ensure(names).items():
            print(f"{name}: {path}")
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
