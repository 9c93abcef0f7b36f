"""Releases on the pod's code volume, laid out like a Capistrano deploy.

    <code>/releases/<id>/      one directory per complete, verified release
    <code>/releases/.<id>.partial   extraction in progress (never served, removed on failure)
    <code>/current  -> releases/<id>   what Puma serves (relative, so any mount path works)
    <code>/previous -> releases/<id>   what `rollback` returns to (a copy, for people)
    <code>/releases/<id>/.cfo-previous  the release that was current before <id>

The serving release is never touched until the new one is complete on disk: a release is
extracted beside it, renamed into place, and only then is `current` swapped by rename.

Why `.cfo-previous`: moving `current` and `previous` takes two renames, and a crash between
them would leave `previous` naming the wrong release. So the previous release is recorded in
the new release's directory *before* `current` moves, and read back through `current`: the
one rename of `current` switches both at once. The `previous` link is refreshed after it, for
people and older tools; the agent reads it only on volumes laid out before the record existed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from customer_friendly.agent.archive import extract
from customer_friendly.agent.fetch import FetchError, fetch, fetch_optional_text
from customer_friendly.agent.tree import remove_tree
from customer_friendly.contract import is_release_id
from customer_friendly.contract.archive import DEFAULT_LIMITS, MARKER, PREVIOUS_RECORD, Limits, UnsafeArchive
from customer_friendly.contract.artifact import ArtifactError, artifact_url, checksum_url, parse_checksum

logger = logging.getLogger(__name__)

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

    def previous_record(self, release: str) -> Path:
        return self.release_dir(release) / PREVIOUS_RECORD


def _read_link(link: Path) -> str | None:
    try:
        return os.readlink(link)
    except OSError:  # missing, or not a link
        return None


def _release_of(target: str | None) -> str | None:
    return Path(target).name if target else None


def current_release(layout: Layout) -> str | None:
    return _release_of(_read_link(layout.current))


def previous_release(layout: Layout) -> str | None:
    """Read through `current` (see the module docstring); the `previous` link only as a fallback."""
    current = current_release(layout)
    if current is not None:
        try:
            recorded = layout.previous_record(current).read_text().strip()
        except FileNotFoundError:
            pass
        except OSError:
            return None
        else:
            return recorded if is_release_id(recorded) else None
    return _release_of(_read_link(layout.previous))


@dataclass(frozen=True)
class Links:
    """What `current` and `previous` said before a switch, to put them back exactly."""

    current: str | None
    """The raw target of the `current` link (None: there was none)."""
    previous: str | None
    """The raw target of the `previous` link."""


def links(layout: Layout) -> Links:
    return Links(_read_link(layout.current), _read_link(layout.previous))


def is_installed(layout: Layout, release: str) -> bool:
    """A release directory counts only once its marker, written last, is there."""
    return (layout.release_dir(release) / MARKER).is_file()


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_verified(url: str, archive: Path, require_sha256: bool, limits: Limits) -> tuple[str, bool]:
    """Fetch `url` into `archive`; its sha256, and whether a `.sha256` beside it vouched for it."""
    try:
        expected_text = fetch_optional_text(checksum_url(url))
        if expected_text is None and require_sha256:
            raise ReleaseError(f"{checksum_url(url)} not found, and the policy requires a checksum")
        fetch(url, archive, limits.max_bytes)
        digest = _sha256_of(archive)
        if expected_text is None:
            return digest, False
        expected = parse_checksum(expected_text)
    except (FetchError, ArtifactError) as err:
        raise ReleaseError(str(err)) from err
    if digest != expected:
        raise ReleaseError(f"checksum mismatch for {url}: got {digest}, {checksum_url(url)} says {expected}")
    return digest, True


def install(layout: Layout, release: str, source_template: str, *, require_sha256: bool = False,
            limits: Limits = DEFAULT_LIMITS) -> bool:
    """Fetch, verify and extract a release beside the serving one. False if already there."""
    if is_installed(layout, release):
        return False
    try:
        url = artifact_url(source_template, release)
    except ArtifactError as err:
        raise ReleaseError(str(err)) from err
    layout.releases.mkdir(parents=True, exist_ok=True)
    partial = layout.partial_dir(release)
    _remove_quietly(partial)
    with tempfile.TemporaryDirectory(dir=layout.root, prefix=".download-") as tmp:
        archive = Path(tmp) / "release.tar.gz"
        digest, verified = _download_verified(url, archive, require_sha256, limits)
        try:
            partial.mkdir()
            size = extract(archive, partial, limits)
            _write_new(partial / MARKER, json.dumps(
                {"release": release, "source": url, "sha256": digest, "verified": verified,
                 "bytes": size, "installedAt": time.time()}))
            target = layout.release_dir(release)
            remove_tree(target)  # an unmarked leftover of an interrupted install, if any
            partial.rename(target)
        except UnsafeArchive as err:
            _remove_quietly(partial)
            raise ReleaseError(f"release {release} refused: {err}") from err
        except OSError as err:
            _remove_quietly(partial)
            raise ReleaseError(f"cannot install release {release} into {layout.releases}: {err}") from err
        except BaseException:
            _remove_quietly(partial)
            raise
    logger.info("installed release %s (%d bytes, sha256 %s)", release, size, digest[:12])
    return True


def _remove_quietly(path: Path) -> None:
    try:
        remove_tree(path)
    except OSError as err:
        logger.warning("could not remove %s: %s", path, err)


def _write_new(path: Path, text: str) -> None:
    """Write a file that must not exist yet, never through a link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _replace_file(path: Path, text: str) -> None:
    """Replace a small file atomically: a new file beside it, renamed over it."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    _write_new(tmp, text)
    os.replace(tmp, path)


def _swap_link(link: Path, target: str | None) -> None:
    """Point `link` at `target` atomically: a new link, renamed over the old one (None removes it)."""
    if target is None:
        link.unlink(missing_ok=True)
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def switch(layout: Layout, release: str) -> str | None:
    """Make `release` current; returns the release it replaced, now `previous`.

    The record of the previous release is written first, then `current` is renamed into place:
    that rename is the one step that switches both.
    """
    if not is_installed(layout, release):
        raise ReleaseError(f"release {release} is not installed")
    replaced = current_release(layout)
    if replaced == release:
        return previous_release(layout)
    _replace_file(layout.previous_record(release), f"{replaced or ''}\n")
    _swap_link(layout.current, f"releases/{release}")
    _swap_link(layout.previous, f"releases/{replaced}" if replaced else None)
    return replaced


def restore(layout: Layout, before: Links) -> None:
    """Put `current` and `previous` back exactly as `links()` found them.

    The release that becomes current again still holds its own record of its previous release
    (only the record of the release switched to was written), so after the rename of `current`
    the agent reads exactly the previous release it read before.
    """
    _swap_link(layout.current, before.current)
    _swap_link(layout.previous, before.previous)


def prune(layout: Layout, keep: int) -> list[str]:
    """Remove all but the newest `keep` releases; current and previous always stay."""
    protected = {current_release(layout), previous_release(layout)}
    marked = [d for d in layout.releases.iterdir() if (d / MARKER).is_file()] if layout.releases.exists() else []
    marked.sort(key=lambda d: (d / MARKER).stat().st_mtime, reverse=True)
    removed = []
    for directory in marked[keep:]:
        if directory.name not in protected:
            try:
                remove_tree(directory)
            except OSError as err:
                logger.warning("could not prune release %s: %s", directory.name, err)
                continue
            removed.append(directory.name)
    return removed
