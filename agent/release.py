"""Releases on the pod's code volume, laid out like a Capistrano deploy.

    <code>/releases/<id>/      one directory per complete, verified release
    <code>/releases/.<id>.partial   extraction in progress (never served, removed on failure)
    <code>/current  -> releases/<id>   what Puma serves (relative, so any mount path works)
    <code>/previous -> releases/<id>   what `rollback` returns to

The serving release is never touched until the new one is complete on disk: a release is
extracted beside it, renamed into place, and only then is `current` swapped by rename.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agent.archive import DEFAULT_LIMITS, Limits, extract
from agent.fetch import FetchError, fetch, fetch_optional_text
from contract import RELEASE_PLACEHOLDER, is_release_id

logger = logging.getLogger(__name__)

MARKER = ".cfo-release.json"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class ReleaseError(RuntimeError):
    """A release could not be fetched, verified or installed; the serving one is untouched."""


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def previous(self) -> Path:
        return self.root / "previous"

    def release_dir(self, release: str) -> Path:
        return self.releases / release

    def partial_dir(self, release: str) -> Path:
        return self.releases / f".{release}.partial"


def source_url(template: str, release: str) -> str:
    if not is_release_id(release):
        raise ReleaseError(f"invalid release id {release!r}")
    if RELEASE_PLACEHOLDER not in template:
        raise ReleaseError(f"source {template!r} has no {RELEASE_PLACEHOLDER} placeholder")
    return template.replace(RELEASE_PLACEHOLDER, release)


def parse_sha256_file(text: str) -> str:
    """The digest from a `.sha256` file: `<hex>` or `<hex>  <file name>` (sha256sum's format)."""
    token = text.strip().split()[0] if text.strip() else ""
    if not _SHA256.match(token):
        raise ReleaseError("the .sha256 file does not start with a 64-digit hex SHA-256 digest")
    return token.lower()


def _link_target(link: Path) -> str | None:
    try:
        target = os.readlink(link)
    except (FileNotFoundError, OSError):
        return None
    return Path(target).name


def current_release(layout: Layout) -> str | None:
    return _link_target(layout.current)


def previous_release(layout: Layout) -> str | None:
    return _link_target(layout.previous)


def is_installed(layout: Layout, release: str) -> bool:
    """A release directory counts only once its marker, written last, is there."""
    return (layout.release_dir(release) / MARKER).is_file()


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def install(layout: Layout, release: str, source_template: str, *, require_sha256: bool = False,
            limits: Limits = DEFAULT_LIMITS) -> bool:
    """Fetch, verify and extract a release beside the serving one. False if already there."""
    if is_installed(layout, release):
        return False
    url = source_url(source_template, release)
    layout.releases.mkdir(parents=True, exist_ok=True)
    partial = layout.partial_dir(release)
    shutil.rmtree(partial, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=layout.root, prefix=".download-") as tmp:
        archive = Path(tmp) / "release.tar.gz"
        try:
            expected_text = fetch_optional_text(url + ".sha256")
            if expected_text is None and require_sha256:
                raise ReleaseError(f"{url}.sha256 not found, and the policy requires a checksum")
            fetch(url, archive, limits.max_bytes)
        except FetchError as err:
            raise ReleaseError(str(err)) from err
        digest = _sha256_of(archive)
        if expected_text is not None:
            expected = parse_sha256_file(expected_text)
            if digest != expected:
                raise ReleaseError(f"checksum mismatch for {url}: got {digest}, {url}.sha256 says {expected}")
        try:
            partial.mkdir()
            size = extract(archive, partial, limits)
            (partial / MARKER).write_text(json.dumps(
                {"release": release, "source": url, "sha256": digest, "verified": expected_text is not None,
                 "bytes": size, "installedAt": time.time()}))
            target = layout.release_dir(release)
            if target.exists():  # an unmarked leftover of an interrupted install
                shutil.rmtree(target)
            partial.rename(target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    logger.info("installed release %s (%d bytes, sha256 %s)", release, size, digest[:12])
    return True


def _swap_link(link: Path, target: str) -> None:
    """Point `link` at `target` atomically: a new link, renamed over the old one."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def switch(layout: Layout, release: str) -> str | None:
    """Make `release` current; returns the release it replaced, now `previous`."""
    if not is_installed(layout, release):
        raise ReleaseError(f"release {release} is not installed")
    replaced = current_release(layout)
    if replaced == release:
        return previous_release(layout)
    _swap_link(layout.current, f"releases/{release}")
    if replaced is not None:
        _swap_link(layout.previous, f"releases/{replaced}")
    return replaced


def prune(layout: Layout, keep: int) -> list[str]:
    """Remove all but the newest `keep` releases; current and previous always stay."""
    protected = {current_release(layout), previous_release(layout)}
    marked = [d for d in layout.releases.iterdir() if (d / MARKER).is_file()] if layout.releases.exists() else []
    marked.sort(key=lambda d: (d / MARKER).stat().st_mtime, reverse=True)
    removed = []
    for directory in marked[keep:]:
        if directory.name not in protected:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory.name)
    return removed
