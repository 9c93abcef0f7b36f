"""Download a release artifact from s3://, https:// or file://.

S3 goes through boto3 and so honours the standard AWS credential chain, region and
endpoint settings (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, IRSA, instance roles): there is
no agent-specific way to point it elsewhere. Downloads are capped in size while streaming.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """The artifact could not be fetched; `not_found` tells a missing object from a failure."""

    def __init__(self, message: str, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


def _copy_capped(stream: BinaryIO, dest: Path, max_bytes: int, url: str) -> None:
    written = 0
    with dest.open("wb") as out:
        while chunk := stream.read(_CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise FetchError(f"{url} is larger than the {max_bytes}-byte cap")
            out.write(chunk)


def _open(url: str) -> BinaryIO:
    """A stream on `url`'s bytes, by its scheme; FetchError for any other scheme."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        return _open_file(url, parsed)
    if parsed.scheme == "s3":
        return _open_s3(url, parsed)
    if parsed.scheme == "https":
        return _open_https(url)
    raise FetchError(f"unsupported source scheme in {url}: use s3://, https:// or file://")


def _open_file(url: str, parsed: urllib.parse.SplitResult) -> BinaryIO:
    """file://: a missing file is `not_found`, so the caller can tell it from a read error."""
    path = Path(urllib.parse.unquote(parsed.path))
    try:
        return path.open("rb")
    except FileNotFoundError as err:
        raise FetchError(f"{url} not found", not_found=True) from err
    except OSError as err:
        raise FetchError(f"cannot read {url}: {err}") from err


def _open_s3(url: str, parsed: urllib.parse.SplitResult) -> BinaryIO:
    """s3://: boto3 is imported only here, so other schemes work without it installed."""
    import boto3
    import botocore.exceptions

    try:
        response = boto3.client("s3").get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
    except botocore.exceptions.ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise FetchError(f"{url} not found (S3 {code})", not_found=True) from err
        raise FetchError(f"cannot fetch {url}: S3 {code or err}") from err
    except botocore.exceptions.BotoCoreError as err:
        raise FetchError(f"cannot fetch {url}: {err}") from err
    return response["Body"]


def _open_https(url: str) -> BinaryIO:
    """https://: an HTTP 404 is `not_found`; every other failure is a plain FetchError."""
    try:
        return urllib.request.urlopen(url, timeout=30)
    except urllib.error.HTTPError as err:
        raise FetchError(f"{url}: HTTP {err.code}", not_found=err.code == 404) from err
    except (urllib.error.URLError, OSError) as err:
        raise FetchError(f"cannot fetch {url}: {err}") from err


def fetch(url: str, dest: Path, max_bytes: int) -> None:
    stream = _open(url)
    try:
        _copy_capped(stream, dest, max_bytes, url)
    except OSError as err:
        raise FetchError(f"cannot fetch {url}: {err}") from err
    finally:
        stream.close()


def fetch_optional_text(url: str, max_bytes: int = 4096) -> str | None:
    """A small text object such as a `.sha256` file, or None when it does not exist."""
    try:
        stream = _open(url)
    except FetchError as err:
        if err.not_found:
            return None
        raise
    try:
        return stream.read(max_bytes).decode("utf-8", errors="replace")
    finally:
        stream.close()
