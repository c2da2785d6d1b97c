"""The node's images, built with BuildKit on this machine: no registry, no Docker.

- ``leadership:0.1.0`` (the name the Makefile and the manifests use) is built from the
  project's ``Dockerfile``, every instruction as written. The one difference from a build on
  a laptop is its base: no registry is reachable, so the Dockerfile's ``FROM`` image is made
  here from Debian's packages (`debootstrap`: Debian 12's Python 3.11, pip and setuptools in
  ``/usr/local`` as in the official image) and handed to BuildKit as a named build context
  for that very reference (``--opt context:<FROM ref>=oci-layout://...``). The base carries
  this machine's CA bundle, because the ``pip install`` of the Dockerfile's build stage
  reaches PyPI through this machine's TLS-intercepting egress; the image never leaves the
  machine.
- ``registry.k8s.io/pause`` (the pod sandbox) and ``registry.k8s.io/e2e-test-images/agnhost``
  (the example app's server), each one static binary built from the Kubernetes source of
  ``versions.env`` (`controlplane.build`), named with the tag that source declares.

Each image is an OCI archive in the cache (``<cache>/images``), keyed by a hash of its inputs
(the Dockerfile, the files its ``.dockerignore`` admits, the base; or the binary), so it is
rebuilt only when they change. `ensure_all` starts ``buildkitd`` only when something must be
built, with its own root (its layer cache, kept) and socket, and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from . import build, host
from .errors import ControlPlaneError
from .processes import die_with_parent, stop_process
from .waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
#: The project's image, as the Makefile's IMAGE and the manifests name it.
PROJECT_IMAGE = "leadership:0.1.0"
#: The cgroup parent of BuildKit's RUN steps (removed with the node's cgroups).
BUILDKIT_CGROUP = "leadership-buildkit"
#: What buildkitd and runc create whatever they are told (removed afterwards if they did).
BUILDKIT_PATHS = ("/run/buildkit", "/run/runc", "/run/mount")
#: Bumped when the recipe of the local base changes, so the cached base is rebuilt.
BASE_RECIPE = "debootstrap-minbase-2"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

Say = Callable[[str], None]


class ImageError(ControlPlaneError):
    """An image could not be built; the message has the builder's output."""


def _k8s_source() -> Path:
    versions = build.load_versions()
    out = subprocess.run(["go", "mod", "download", "-json",
                          f"k8s.io/kubernetes@v{versions.kubernetes}"], capture_output=True,
                         text=True, env={**os.environ, "GOTOOLCHAIN": "local"})
    if out.returncode != 0:
        raise ImageError(f"cannot read the Kubernetes source: {out.stderr.strip()}")
    return Path(json.loads(out.stdout)["Dir"])


def _declared_tags() -> tuple[str, str]:
    """The pause and agnhost tags that the Kubernetes source of versions.env declares."""
    source = _k8s_source()
    pause = re.search(r"^TAG \?= (\S+)$", (source / "build/pause/Makefile").read_text(), re.M)
    agnhost = (source / "test/images/agnhost/VERSION").read_text().strip()
    if not pause:
        raise ImageError("build/pause/Makefile declares no TAG")
    return pause.group(1), agnhost


PAUSE_TAG, AGNHOST_TAG = "3.10.1", "2.59"  # checked against the source by a test
PAUSE = f"registry.k8s.io/pause:{PAUSE_TAG}"
AGNHOST = f"registry.k8s.io/e2e-test-images/agnhost:{AGNHOST_TAG}"


def cache_dir() -> Path:
    return build.cache_root() / "images"


def buildkit_root() -> Path:
    return build.cache_root() / "buildkit"


def base_reference(dockerfile: Path = DOCKERFILE) -> str:
    """The image the Dockerfile builds FROM (its PYTHON_IMAGE argument's default)."""
    m = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile.read_text(), re.M)
    if not m:
        raise ImageError(f"{dockerfile} has no `ARG PYTHON_IMAGE=<image>` line")
    return m.group(1)


def context_files(root: Path = ROOT) -> list[Path]:
    """The files the build context holds: what the .dockerignore admits (it excludes `*` and
    re-admits a few paths; `__pycache__` is never part of it)."""
    admitted: list[str] = []
    for line in (root / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line.startswith("!"):
            admitted.append(line[1:].rstrip("/"))
        elif line and line not in ("*", "**/__pycache__") and not line.startswith("#"):
            raise ImageError(f".dockerignore line {line!r}: this hash understands only `*`, "
                             "`!<path>` and `**/__pycache__`; teach controlplane/images.py")
    files = []
    for name in admitted:
        path = root / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in path.rglob("*") if p.is_file()
                      and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return sorted(files)


def _digest(paths: list[Path], *extra: str, root: Path = ROOT) -> str:
    h = hashlib.sha256()
    for item in extra:
        h.update(item.encode() + b"\0")
    for path in paths:
        h.update(str(path.relative_to(root) if path.is_relative_to(root) else path).encode())
        h.update(b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


# --- BuildKit ------------------------------------------------------------------------------

class BuildKit:
    """A buildkitd of our own (OCI worker on our runc, host network for RUN steps)."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self.bin = build.ensure(["buildkitd", "buildctl", "runc"])
        self.tmp = Path(tempfile.mkdtemp(prefix="leadership-buildkit-"))
        self.addr = f"unix://{self.tmp / 'buildkitd.sock'}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.created = host.missing(BUILDKIT_PATHS)

    def __enter__(self) -> BuildKit:

        config = self.tmp / "buildkitd.toml"
        config.write_text(f'[worker.oci]\n  defaultCgroupParent = "{BUILDKIT_CGROUP}"\n'
                          '  gc = true\n  gckeepstorage = "4GB"\n')
        self.log = self.tmp / "buildkitd.log"
        env = {**os.environ,
               "PATH": f"{self.bin['runc'].parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        buildkit_root().mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(self.bin["buildkitd"]), f"--config={config}", f"--root={buildkit_root()}",
                 f"--addr={self.addr}", "--oci-worker=true", "--containerd-worker=false",
                 f"--oci-worker-binary={self.bin['runc']}", "--oci-worker-net=host",
                 "--oci-worker-snapshotter=overlayfs"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                preexec_fn=die_with_parent, start_new_session=True)
        proc = self.proc

        def answers() -> bool:
            if proc.poll() is not None:
                raise ImageError(f"buildkitd exited with {proc.returncode}:\n"
                                 + self.log.read_text()[-2000:])
            return self.buildctl("debug", "workers", check=False).returncode == 0

        eventually(answers, 30, "buildkitd answering", every=0.2,
                   fail=lambda _: ImageError("buildkitd did not start within 30 s:\n"
                                             + self.log.read_text()[-2000:]))
        return self

    def __exit__(self, *exc: object) -> None:

        if self.proc is not None:
            stop_process(self.proc, grace=10)
        shutil.rmtree(self.tmp, ignore_errors=True)
        host.remove_cgroups(BUILDKIT_CGROUP)  # its RUN steps' cgroups, empty by now
        host.remove_paths(self.created)

    def buildctl(self, *args: str, check: bool = True,
                 timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.bin["buildctl"]), f"--addr={self.addr}", *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise ImageError(f"`buildctl {' '.join(args[:2])} ...` failed:\n"
                             f"{proc.stderr[-4000:]}")
        return proc

    def build(self, context: Path, output: str, *extra: str) -> None:
        """`buildctl build` of `context`'s Dockerfile with the built-in frontend (a
        ``# syntax=`` line would need a registry) into `output` (an --output value)."""
        self.buildctl("build", "--frontend=dockerfile.v0", f"--local=context={context}",
                      f"--local=dockerfile={context}", f"--output={output}", *extra)


# --- the images ----------------------------------------------------------------------------

def _scratch_image(kit: BuildKit, binary: Path, name: str, out: Path) -> None:
    """An image of one static binary, its entrypoint, running as nobody (65535)."""
    with tempfile.TemporaryDirectory(prefix="leadership-image-") as tmp:
        shutil.copy2(binary, Path(tmp) / binary.name)
        (Path(tmp) / "Dockerfile").write_text(
            f"FROM scratch\nCOPY {binary.name} /{binary.name}\nUSER 65535:65535\n"
            f'ENTRYPOINT ["/{binary.name}"]\n')
        kit.build(Path(tmp), f"type=oci,dest={out},name={name}")


def _debootstrap(rootfs: Path, say: Say) -> None:
    say(f"debootstrap {DEBIAN_SUITE} ({', '.join(BASE_PACKAGES)}) into {rootfs} (about a "
        "minute, once)")
    proc = subprocess.run(["debootstrap", "--variant=minbase",
                           f"--include={','.join(BASE_PACKAGES)}", DEBIAN_SUITE, str(rootfs),
                           DEBIAN_MIRROR], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"debootstrap failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    # Make it look like the official python image where the Dockerfile relies on it: a
    # `python` on PATH, pip and setuptools in /usr/local (not Debian's, so `pip uninstall`
    # really removes them), and no PEP 668 marker (it would stop that uninstall).
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")
    # Debian disables ensurepip for its system Python; pip installs itself from the wheels
    # that python3-venv ships (run from the wheel, offline).
    wheels = {w.name.split("-")[0]: f"/{w.relative_to(rootfs)}"
              for w in (rootfs / "usr/share/python-wheels").glob("*.whl")}
    proc = subprocess.run(["chroot", str(rootfs), "/usr/bin/python3", f"{wheels['pip']}/pip",
                           "install", "--no-index", "--no-cache-dir", "--root-user-action=ignore",
                           "--disable-pip-version-check", wheels["pip"], wheels["setuptools"]],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"installing pip in the base failed:\n{proc.stdout[-2000:]}"
                         f"{proc.stderr[-2000:]}")
    shutil.copy2(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc",
                 "usr/share/man", "usr/share/locale", "dev"):
        target = rootfs / junk
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()


def _base_layout(kit: BuildKit, say: Say) -> tuple[Path, str]:
    """The local base as an OCI layout directory, and its manifest digest."""
    key = _digest([HOST_CA_BUNDLE], BASE_RECIPE, DEBIAN_SUITE, *BASE_PACKAGES, root=Path("/"))
    layout = cache_dir() / f"base-{key}"
    if not (layout / "index.json").exists():
        with tempfile.TemporaryDirectory(prefix="leadership-base-", dir=cache_dir()) as tmp:
            rootfs = Path(tmp) / "rootfs"
            _debootstrap(rootfs, say)
            context = Path(tmp) / "context"
            context.mkdir()
            with tarfile.open(context / "rootfs.tar", "w") as tar:
                tar.add(rootfs, arcname=".")
            shutil.rmtree(rootfs)
            (context / "Dockerfile").write_text(
                "FROM scratch\nADD rootfs.tar /\n"
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
                "LANG=C.UTF-8\nCMD [\"python3\"]\n")
            partial = Path(tmp) / "layout"
            kit.build(context, f"type=oci,dest={partial},tar=false")
            os.replace(partial, layout)
    index = json.loads((layout / "index.json").read_text())
    return layout, str(index["manifests"][0]["digest"])


def _project_image(kit: BuildKit, out: Path, layout: Path, digest: str) -> None:
    reference = base_reference()
    kit.build(ROOT, f"type=oci,dest={out},name=docker.io/library/{PROJECT_IMAGE}",
              f"--oci-layout=base={layout}",
              f"--opt=context:{reference}=oci-layout://base@{digest}")


def _cached(name: str, key: str) -> Path:
    slug = re.sub(r"[^a-zA-Z0-9.-]+", "_", name)
    return cache_dir() / f"{slug}-{key}.tar"


@contextlib.contextmanager
def _buildkit_when_needed(say: Say) -> Iterator[Callable[[], BuildKit]]:
    """A lazily started BuildKit, stopped on exit if it was started."""
    kit: BuildKit | None = None

    def get() -> BuildKit:
        nonlocal kit
        if kit is None:
            say("starting buildkitd to build images")
            kit = BuildKit(say).__enter__()
        return kit

    try:
        yield get
    finally:
        if kit is not None:
            kit.__exit__(None, None, None)


def ensure_all(say: Say) -> dict[str, Path]:
    """Image name -> OCI archive, for every image the node runs; builds what is missing."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    binaries = build.ensure(["pause", "agnhost"])
    wanted = {
        PAUSE: _cached(PAUSE, _digest([binaries["pause"]], PAUSE)),
        AGNHOST: _cached(AGNHOST, _digest([binaries["agnhost"]], AGNHOST)),
    }
    project_inputs = [DOCKERFILE, ROOT / ".dockerignore", *context_files()]
    base_key = _digest([HOST_CA_BUNDLE], BASE_RECIPE, DEBIAN_SUITE, *BASE_PACKAGES,
                       root=Path("/"))
    wanted[PROJECT_IMAGE] = _cached(PROJECT_IMAGE, _digest(project_inputs, base_key))
    with _buildkit_when_needed(say) as kit:
        for name, archive in wanted.items():
            if archive.exists():
                continue
            t0 = time.monotonic()
            partial = archive.with_name(f".{archive.name}.partial")
            try:
                if name == PAUSE:
                    _scratch_image(kit(), binaries["pause"], name, partial)
                elif name == AGNHOST:
                    _scratch_image(kit(), binaries["agnhost"], name, partial)
                else:
                    layout, digest = _base_layout(kit(), say)
                    _project_image(kit(), partial, layout, digest)
                partial.chmod(0o644)
                os.replace(partial, archive)
            finally:
                partial.unlink(missing_ok=True)
            say(f"built {name} in {time.monotonic() - t0:.0f} s ({archive})")
    return wanted
