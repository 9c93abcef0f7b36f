"""The images the real node runs, built without a Docker engine and cached by their inputs.

- `pause`: the pod sandbox, a static C program (images/pause.c), so nothing is ever pulled;
- `puma-app`: Debian's Ruby and Puma with no app code (the code comes from releases), in two
  tags that differ only in the image's USER (`root`, and `user` = 1000), sharing one layer;
- `webhook`, `controller`, `agent`: built by buildah from images/Dockerfile itself, the recipe
  users build from, on a Python base made from Debian packages by mmdebstrap and passed in as
  the Dockerfile's PYTHON_IMAGE build argument.

Each is an OCI image archive in ~/.cache/customer-friendly-operator/images/ whose file name
carries the hash of everything it is built from: a second run builds nothing, and a change to
the product's code rebuilds only the three product images.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from testbed.controlplane import ROOT, ControlPlaneError

logger = logging.getLogger(__name__)

SUITE = "bookworm"
PYTHON_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
APP_PACKAGES = ("ruby", "puma", "ruby-rack", "ca-certificates")
REGISTRY = "cfo.local"
"""Our images' registry name: `cfo-admin install --registry cfo.local` points the manifests at them."""
PRODUCT_TARGETS = ("webhook", "controller", "agent")
PRODUCT_TAG = "0.1.0"
PAUSE_IMAGE = f"{REGISTRY}/pause:1"
APP_IMAGE_ROOT = f"{REGISTRY}/puma-app:root"
APP_IMAGE_USER = f"{REGISTRY}/puma-app:user"
APP_UID = 1000
PRODUCT_SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "contract", "webhook", "controller", "certs",
                   "agent", "kubectl_cfo", "admin", "images/Dockerfile")


def cache_dir() -> Path:
    base = os.environ.get("CFO_CACHE") or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                              / "customer-friendly-operator")
    return Path(base) / "images"


def product_image(target: str) -> str:
    return f"{REGISTRY}/{target}:{PRODUCT_TAG}"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hash_inputs(parts: Iterable[str | bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _tree_files(paths: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for name in paths:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        else:
            files += sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def _run(args: list[str], log: Path, what: str, **kwargs: object) -> None:
    with log.open("ab") as fh:
        fh.write(f"$ {' '.join(args)}\n".encode())
        fh.flush()
        result = subprocess.run(args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise ControlPlaneError(f"{what} failed (exit {result.returncode}); log {log}:\n{tail}")


# --- OCI archives written directly (pause, app) --------------------------------------------

@dataclass(frozen=True)
class ImageConfig:
    name: str
    cmd: tuple[str, ...]
    user: str = ""
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
    workdir: str = "/"


def write_oci_archive(archive: Path, layer: Path, images: Iterable[ImageConfig]) -> None:
    """An OCI image-layout tar holding one uncompressed layer and one manifest per image name.

    containerd (`ctr images import`) takes the name from the `io.containerd.image.name`
    annotation. The layer is streamed, never read whole into memory.
    """
    layer_digest = hashlib.sha256()
    with layer.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            layer_digest.update(chunk)
    layer_id, layer_size = "sha256:" + layer_digest.hexdigest(), layer.stat().st_size
    blobs: dict[str, bytes] = {}
    index: list[dict[str, object]] = []
    for image in images:
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
            "config": {"Env": list(image.env), "Cmd": list(image.cmd), "User": image.user,
                       "WorkingDir": image.workdir},
            "rootfs": {"type": "layers", "diff_ids": [layer_id]},
        }, sort_keys=True).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_id,
                        "size": layer_size}],
        }, sort_keys=True).encode()
        blobs[_digest(config)], blobs[_digest(manifest)] = config, manifest
        index.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _digest(manifest),
                      "size": len(manifest), "annotations": {"io.containerd.image.name": image.name,
                                                             "org.opencontainers.image.ref.name":
                                                             image.name.rsplit(":", 1)[1]}})
    tmp = archive.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        def add_bytes(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes("index.json", json.dumps({"schemaVersion": 2, "manifests": index}).encode())
        for digest, data in blobs.items():
            add_bytes(f"blobs/sha256/{digest.split(':')[1]}", data)
        tar.add(layer, arcname=f"blobs/sha256/{layer_id.split(':')[1]}")
    tmp.rename(archive)


def _cached(name: str, key: str) -> tuple[Path, bool]:
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{key}.oci.tar"
    return path, path.is_file()


KEEP_BUILDS = 3
"""Builds of one image kept in the cache: a second checkout on the machine (a worktree, another
CI job) builds its own, and must not find the one it is about to import pruned."""


def _prune(name: str, keep: Path) -> None:
    """Older builds of the same image are dead weight in the cache, beyond the last few."""
    builds = sorted(cache_dir().glob(f"{name}-*.oci.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [b for b in builds if b != keep][KEEP_BUILDS - 1:]:
        old.unlink(missing_ok=True)


def pause_image() -> Path:
    source = ROOT / "images" / "pause.c"
    archive, done = _cached("pause", _hash_inputs([source.read_bytes()]))
    if done:
        return archive
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "rootfs").mkdir()
        _run(["gcc", "-static", "-Os", "-o", str(work / "rootfs" / "pause"), str(source)], work / "build.log",
             "gcc -static images/pause.c")
        with tarfile.open(work / "layer.tar", "w") as tar:
            tar.add(work / "rootfs" / "pause", arcname="pause")
        write_oci_archive(archive, work / "layer.tar", [ImageConfig(PAUSE_IMAGE, ("/pause",))])
    _prune("pause", archive)
    return archive


def debian_rootfs(packages: tuple[str, ...], out: Path, log: Path) -> None:
    """A minimal Debian root filesystem as a tar (mmdebstrap, from Debian's packages)."""
    started = time.monotonic()
    print(f"images: mmdebstrap {SUITE} with {', '.join(packages)} (about 1 to 2 minutes, once) ...",
          file=sys.stderr, flush=True)
    _run(["mmdebstrap", "--variant=minbase", "--include=" + ",".join(packages),
          "--aptopt=Acquire::Check-Valid-Until \"false\"", "--dpkgopt=path-exclude=/usr/share/doc/*",
          "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
          SUITE, str(out)], log, "mmdebstrap")
    print(f"images: rootfs built in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


def app_image() -> Path:
    """Ruby and Puma from Debian, no code: the code comes from releases on the code volume."""
    archive, done = _cached("puma-app", _hash_inputs([SUITE, *APP_PACKAGES, str(APP_UID), "v1"]))
    if done:
        return archive
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        debian_rootfs(APP_PACKAGES, work / "rootfs.tar", work / "build.log")
        cmd = ("puma", "-C", "/app/current/config/puma.rb")
        write_oci_archive(archive, work / "rootfs.tar", [
            ImageConfig(APP_IMAGE_ROOT, cmd),
            ImageConfig(APP_IMAGE_USER, cmd, user=f"{APP_UID}:{APP_UID}"),
        ])
    _prune("puma-app", archive)
    return archive


# --- the product's images, from images/Dockerfile, by buildah ------------------------------

class Buildah:
    """buildah with its own storage under the cache, the overlay driver and chroot isolation."""

    def __init__(self, log: Path) -> None:
        self.root = cache_dir() / "buildah"
        self.log = log

    def __call__(self, *args: str, what: str = "buildah") -> None:
        _run(["buildah", "--root", str(self.root / "storage"), "--runroot", str(self.root / "run"),
              "--storage-driver", "overlay", *args], self.log, what, cwd=ROOT)

    def cleanup(self) -> None:
        """No working containers or mounts are left behind by a build."""
        for args in (("rm", "--all"), ("umount", "--all")):
            try:
                self(*args)
            except ControlPlaneError as err:
                logger.warning("buildah %s: %s", args[0], err)


def python_base(buildah: Buildah) -> str:
    """The Dockerfile's PYTHON_IMAGE: Debian's python3 (3.11.2 on bookworm), as a local image."""
    key = _hash_inputs([SUITE, *PYTHON_PACKAGES, "v1"])
    name = f"{REGISTRY}/python-base:{key}"
    marker = buildah.root / f"python-base-{key}.done"
    if marker.is_file():
        return name
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        debian_rootfs(PYTHON_PACKAGES, rootfs, buildah.log)
        container = f"cfo-python-base-{key}"
        buildah("from", "--name", container, "scratch", what="buildah from scratch")
        try:
            buildah("add", container, str(rootfs), "/", what="buildah add rootfs")
            buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--env", "LANG=C.UTF-8", container, what="buildah config")
            buildah("commit", "--rm", container, name, what="buildah commit")
        except BaseException:
            buildah.cleanup()
            raise
    marker.write_text(name)
    return name


def product_images() -> dict[str, Path]:
    """webhook, controller and agent built from images/Dockerfile; cached by the hash of its inputs."""
    files = _tree_files(PRODUCT_SOURCES)
    key = _hash_inputs([SUITE, *PYTHON_PACKAGES] + [f"{p.relative_to(ROOT)}" for p in files]
                       + [p.read_bytes() for p in files])
    archives = {target: _cached(target, key) for target in PRODUCT_TARGETS}
    if all(done for _, done in archives.values()):
        return {target: path for target, (path, _) in archives.items()}
    log = cache_dir() / "buildah.log"
    log.write_text("")
    buildah = Buildah(log)
    base = python_base(buildah)
    # pip inside the build needs this machine's pip configuration and CA bundle; mounted read-only
    # for the RUN steps, they do not end up in the image.
    mounts: list[str] = []
    for path in ("/etc/pip.conf", "/etc/ssl/certs/ca-certificates.crt"):
        if Path(path).is_file():
            mounts += ["--volume", f"{path}:{path}:ro"]
    try:
        for target in PRODUCT_TARGETS:
            started = time.monotonic()
            print(f"images: building {target} from images/Dockerfile with buildah ...", file=sys.stderr, flush=True)
            image = product_image(target)
            buildah("bud", "--isolation", "chroot", "--layers", "--pull=never", "--build-arg",
                    f"PYTHON_IMAGE={base}", *mounts, "--target", target, "-f", "images/Dockerfile", "-t", image,
                    ".", what=f"buildah bud --target {target}")
            archive = archives[target][0]
            tmp = archive.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            buildah("push", image, f"oci-archive:{tmp}:{image}", what=f"buildah push {target}")
            tmp.rename(archive)
            _prune(target, archive)
            print(f"images: {target} built in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    finally:
        buildah.cleanup()
    return {target: path for target, (path, _) in archives.items()}


def all_images() -> list[Path]:
    """Every archive the node imports, built when missing. One build at a time per machine:
    buildah's storage is shared, and its clean-up after one build unmounts another's."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "build.lock", "w") as lock:
        if not _try_lock(lock):
            print("images: another build holds the lock; waiting for it", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        return [pause_image(), app_image(), *product_images().values()]


def _try_lock(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def main() -> int:
    started = time.monotonic()
    for path in all_images():
        print(path)
    print(f"images: ready in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    shutil.which("buildah") or sys.exit("images: buildah is missing (make test installs it as root)")
    sys.exit(main())
