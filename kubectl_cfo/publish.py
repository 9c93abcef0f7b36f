"""Publish a release from CI: pack the app directory, check it as the agent will, and put the
artifact and its `.sha256` where the Deployments' source template says.

    from customer_friendly.kubectl_cfo.publish import publish
    published = publish(Path("."), "v42", "s3://acme-releases/web/{release}.tar.gz")
    print(published.url, published.sha256, published.outcome)

The same as `kubectl cfo publish . v42 --source s3://acme-releases/web/{release}.tar.gz`.

Release ids are immutable, because pods that fetched a release keep it on their volume and a
rollback goes back to those bytes: publishing an id that exists is refused unless `force`, and
the existing checksum is always compared and reported. Publishing the same bytes again (a
re-run pipeline) changes nothing and succeeds: outcome "unchanged".
The checksum is written before the artifact, so an agent never installs an artifact that no
checksum vouches for: between the two writes, it finds no artifact yet and tries again.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from customer_friendly.contract import is_release_id
from customer_friendly.contract.artifact import ArtifactError, artifact_url, checksum_text, checksum_url, parse_checksum
from customer_friendly.contract.policy import Policy
from customer_friendly.contract.settings import Refusal, check_source
from customer_friendly.kubectl_cfo.package import Packed, pack
from customer_friendly.kubectl_cfo.stores import ArtifactStore, Progress, StoreError, store_for

PUBLISHED, UNCHANGED, REPLACED = "published", "unchanged", "replaced"


class PublishError(RuntimeError):
    """Nothing was published (or replaced); the message says why and what to do."""


@dataclass(frozen=True)
class Published:
    release: str
    url: str
    sha256: str
    size: int
    files: int
    outcome: str
    """published (new), unchanged (the same bytes were there) or replaced (--force over others)."""
    previous_sha256: str | None = None
    """The checksum of what was there before, when something was."""


def _existing_sha256(store: ArtifactStore, url: str) -> str | None:
    """The checksum of the artifact already at `url` (its `.sha256`, or its bytes when that is
    missing or unreadable), or None when there is none."""
    if not store.exists(url):
        return None
    text = store.read_text(checksum_url(url))
    if text is not None:
        try:
            return parse_checksum(text)
        except ArtifactError:
            pass  # a damaged checksum file: the bytes decide
    return store.sha256(url)


def _target(release: str, source: str) -> str:
    if not is_release_id(release):
        raise PublishError(f"invalid release id {release!r}: letters, digits, '.', '_' and '-', at most 63 "
                           "characters, starting with a letter or digit")
    try:
        check_source(source, Policy(), annotation="--source")
        return artifact_url(source, release)
    except (Refusal, ArtifactError) as err:
        raise PublishError(str(err)) from err


def publish(directory: Path, release: str, source: str, *, force: bool = False,
            progress: Callable[[int, int], None] | None = None,
            say: Callable[[str], None] | None = None) -> Published:
    """Pack `directory` as `release` and put it at `source` (a URI template with `{release}`).

    `progress(sent, total)` follows the upload; `say` gets one line per step. Raises
    PublishError (or PackError, StoreError: both say what and where) when nothing was published.
    """
    url = _target(release, source)
    store = store_for(url)
    with tempfile.TemporaryDirectory(prefix="cfo-publish-") as tmp:
        packed = pack(directory, Path(tmp) / f"{release}.tar.gz", on_progress=say)
        if say:
            say(f"{release}: {packed.files} files, {packed.content_bytes} bytes -> {packed.size} bytes, "
                f"sha256 {packed.sha256}")
        previous = _existing_sha256(store, url)
        if previous == packed.sha256:
            return _result(release, url, packed, UNCHANGED, previous)
        if previous is not None and not force:
            raise PublishError(
                f"release {release} is already published at {url} with sha256 {previous}, and {directory} packs "
                f"to {packed.sha256}: release ids are immutable (pods that fetched {release} keep those bytes). "
                "Publish under a new id, or pass --force to replace it")
        _upload(store, url, packed, progress)
    return _result(release, url, packed, REPLACED if previous else PUBLISHED, previous)


def _upload(store: ArtifactStore, url: str, packed: Packed, progress: Callable[[int, int], None] | None) -> None:
    sent = 0

    def advance(chunk: int) -> None:
        nonlocal sent
        sent += chunk
        if progress:
            progress(sent, packed.size)

    callback: Progress | None = advance if progress else None
    try:
        store.put_text(checksum_url(url), checksum_text(packed.sha256, url))
        store.put_file(url, packed.archive, callback)
    except StoreError as err:
        raise PublishError(f"upload failed, release not published (publish again; its .sha256 may already be "
                           f"written, and no agent installs an artifact its .sha256 does not match): {err}") from err


def _result(release: str, url: str, packed: Packed, outcome: str, previous: str | None) -> Published:
    return Published(release, url, packed.sha256, packed.size, packed.files, outcome, previous)
