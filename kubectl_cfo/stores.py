"""Where `kubectl cfo publish` puts a release and `kubectl cfo releases` finds them: an S3 bucket
or a directory, behind one small interface.

S3 goes through boto3 and so honours the standard credential chain, region and endpoint settings
(AWS_PROFILE, AWS_ENDPOINT_URL, web identity in CI, instance roles); uploads over 8 MiB are
multipart. A directory is written atomically: a reader sees the whole file or none.
https:// sources are read-only here: publish the artifact to the server behind them yourself.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

MULTIPART_BYTES = 8 * 1024**2
"""Artifacts larger than this go up in parts of this size (S3's minimum part is 5 MiB)."""

MAX_TEXT_BYTES = 4096
_CHUNK = 1 << 20

_RAISE = object()
"""S3Store._call's default: a missing object is an error too."""

Progress = Callable[[int], None]
"""Called with the bytes sent since the last call."""


class StoreError(RuntimeError):
    """A store could not be read or written; the message names the URI and the cause."""


@dataclass(frozen=True)
class Stored:
    """An object found under a prefix."""

    url: str
    size: int
    modified: float
    """Seconds since the epoch."""


class ArtifactStore(Protocol):
    def exists(self, url: str) -> bool: ...
    def read_text(self, url: str) -> str | None: ...
    def sha256(self, url: str) -> str: ...
    def put_file(self, url: str, path: Path, progress: Progress | None = None) -> None: ...
    def put_text(self, url: str, text: str) -> None: ...
    def list(self, prefix: str) -> list[Stored]: ...


def store_for(url: str) -> ArtifactStore:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "file":
        return FileStore()
    if scheme == "s3":
        return S3Store()
    raise StoreError(f"cannot publish to or list {url}: only s3:// and file:// sources are writable and "
                     "listable here (an https:// source is served by your own server: upload the artifact "
                     "and its .sha256 there)")


def _hash_stream(read: Callable[[int], bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


class FileStore:
    @staticmethod
    def path(url: str) -> Path:
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))

    def exists(self, url: str) -> bool:
        return self.path(url).is_file()

    def read_text(self, url: str) -> str | None:
        try:
            with self.path(url).open("rb") as fh:
                return fh.read(MAX_TEXT_BYTES).decode("utf-8", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreError(f"cannot read {url}: {err.strerror or err}") from err

    def sha256(self, url: str) -> str:
        try:
            with self.path(url).open("rb") as fh:
                return _hash_stream(fh.read)
        except OSError as err:
            raise StoreError(f"cannot read {url}: {err.strerror or err}") from err

    def _write(self, url: str, fill: Callable[[Any], None]) -> None:
        target = self.path(url)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            try:
                with os.fdopen(fd, "wb") as out:
                    fill(out)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as err:
            raise StoreError(f"cannot write {url}: {err.strerror or err}") from err

    def put_file(self, url: str, path: Path, progress: Progress | None = None) -> None:
        def copy(out: Any) -> None:
            with path.open("rb") as data:
                for chunk in iter(lambda: data.read(_CHUNK), b""):
                    out.write(chunk)
                    if progress:
                        progress(len(chunk))
        self._write(url, copy)

    def put_text(self, url: str, text: str) -> None:
        self._write(url, lambda out: out.write(text.encode()))

    def list(self, prefix: str) -> list[Stored]:
        """Files whose path starts with `prefix` (a directory, or a directory and a name's start)."""
        base = self.path(prefix)
        top = base if prefix.endswith("/") else base.parent
        found = []
        for directory, _, names in os.walk(top):
            for name in names:
                path = Path(directory) / name
                if str(path).startswith(str(base)) and not name.startswith("."):
                    info = path.stat()
                    found.append(Stored(f"file://{path}", info.st_size, info.st_mtime))
        return found


class S3Store:
    def __init__(self) -> None:
        import boto3  # here, so file:// works without boto3 configured

        self.client = boto3.client("s3")

    @staticmethod
    def _where(url: str) -> tuple[str, str]:
        parts = urllib.parse.urlsplit(url)
        return parts.netloc, parts.path.lstrip("/")  # as the agent reads it: the key as written

    @staticmethod
    def _call(url: str, call: Callable[[], Any], missing: Any = _RAISE) -> Any:
        """`call()`'s answer; `missing` when S3 says there is no such object (unless _RAISE);
        every other failure a StoreError naming `url`."""
        import boto3.exceptions
        import botocore.exceptions

        try:
            return call()
        except botocore.exceptions.ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if missing is not _RAISE and code in ("404", "NoSuchKey", "NotFound"):
                return missing
            raise StoreError(f"{url}: S3 {code or type(err).__name__}: {err}") from err
        except (botocore.exceptions.BotoCoreError, boto3.exceptions.S3UploadFailedError) as err:
            raise StoreError(f"{url}: S3 {type(err).__name__}: {err}") from err

    def exists(self, url: str) -> bool:
        bucket, key = self._where(url)
        return self._call(url, lambda: self.client.head_object(Bucket=bucket, Key=key), missing=None) is not None

    def _body(self, url: str, **extra: Any) -> Any:
        bucket, key = self._where(url)
        answer = self._call(url, lambda: self.client.get_object(Bucket=bucket, Key=key, **extra), missing=None)
        return None if answer is None else answer["Body"]

    def read_text(self, url: str) -> str | None:
        body = self._body(url, Range=f"bytes=0-{MAX_TEXT_BYTES - 1}")
        return None if body is None else body.read().decode("utf-8", errors="replace")

    def sha256(self, url: str) -> str:
        body = self._body(url)
        if body is None:
            raise StoreError(f"{url} not found")
        return _hash_stream(body.read)

    def put_file(self, url: str, path: Path, progress: Progress | None = None) -> None:
        import boto3.s3.transfer

        bucket, key = self._where(url)
        config = boto3.s3.transfer.TransferConfig(multipart_threshold=MULTIPART_BYTES,
                                                  multipart_chunksize=MULTIPART_BYTES)
        self._call(url, lambda: self.client.upload_file(str(path), bucket, key, Config=config, Callback=progress,
                                                        ExtraArgs={"ContentType": "application/gzip"}))

    def put_text(self, url: str, text: str) -> None:
        bucket, key = self._where(url)
        self._call(url, lambda: self.client.put_object(Bucket=bucket, Key=key, Body=text.encode(),
                                                       ContentType="text/plain"))

    def list(self, prefix: str) -> list[Stored]:
        bucket, key = self._where(prefix)

        def pages() -> list[Stored]:
            return [Stored(f"s3://{bucket}/{obj['Key']}", obj["Size"], obj["LastModified"].timestamp())
                    for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
                    for obj in page.get("Contents", [])]

        found: list[Stored] = self._call(prefix, pages)
        return found
