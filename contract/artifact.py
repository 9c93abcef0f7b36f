"""Where a release's artifact lives and how its checksum is written: one rule for the agent that
fetches it and for `kubectl cfo publish` that puts it there.

A source is a URI template (`s3://bucket/web/{release}.tar.gz`); the artifact of release R is
the template with R in place of the placeholder, and its checksum is a `.sha256` object beside
it in sha256sum's format (`<hex>  <file name>`; the hex alone is accepted too).
"""

from __future__ import annotations

import re

from customer_friendly.contract import RELEASE_PLACEHOLDER, is_release_id

CHECKSUM_SUFFIX = ".sha256"
"""Appended to an artifact's URI: where its checksum is."""

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class ArtifactError(ValueError):
    """A release id, source template or checksum file that cannot be used; the message says why."""


def artifact_url(template: str, release: str) -> str:
    """The URI of `release`'s artifact under the source `template`."""
    if not is_release_id(release):
        raise ArtifactError(f"invalid release id {release!r}")
    if RELEASE_PLACEHOLDER not in template:
        raise ArtifactError(f"source {template!r} has no {RELEASE_PLACEHOLDER} placeholder")
    return template.replace(RELEASE_PLACEHOLDER, release)


def checksum_url(url: str) -> str:
    return url + CHECKSUM_SUFFIX


def parse_checksum(text: str) -> str:
    """The digest from a `.sha256` file: `<hex>` or `<hex>  <file name>` (sha256sum's format)."""
    token = text.strip().split()[0] if text.strip() else ""
    if not _SHA256.match(token):
        raise ArtifactError("the .sha256 file does not start with a 64-digit hex SHA-256 digest")
    return token.lower()


def checksum_text(digest: str, url: str) -> str:
    """A `.sha256` file for the artifact at `url`, as `sha256sum` would write it (so `sha256sum -c`
    checks a downloaded copy of the same name)."""
    return f"{digest}  {url.rsplit('/', 1)[-1]}\n"


def release_of(template: str, url: str) -> str | None:
    """The release id whose artifact `url` is under `template`, or None (another object, a
    checksum file, or a name that is no release id)."""
    before, _, after = template.partition(RELEASE_PLACEHOLDER)
    if not (url.startswith(before) and url.endswith(after)) or len(url) < len(before) + len(after):
        return None
    release = url[len(before):len(url) - len(after)]
    return release if is_release_id(release) else None
