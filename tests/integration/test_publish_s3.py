"""kubectl cfo publish against S3 (moto's server, reached through the standard AWS settings only):
multipart for a large artifact, upload progress, immutable ids, and the listing `releases` reads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from customer_friendly.contract.artifact import release_of
from customer_friendly.kubectl_cfo.publish import PUBLISHED, UNCHANGED, PublishError, publish
from customer_friendly.kubectl_cfo.stores import MULTIPART_BYTES, S3Store
from testbed.puma_app import MotoS3

BUCKET = "releases"
SOURCE = f"s3://{BUCKET}/web/{{release}}.tar.gz"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    server = MotoS3(tmp_path_factory.mktemp("moto")).start()
    saved = dict(os.environ)
    os.environ.update(server.env)
    try:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield server
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


def app(root: Path, release: str, noise_bytes: int = 0) -> Path:
    (root / "config").mkdir(parents=True)
    (root / "config.ru").write_text(f"run ->(env) {{ [200, {{}}, ['{release}']] }}\n")
    (root / "config" / "puma.rb").write_text("workers 2\n")
    if noise_bytes:  # incompressible, so the artifact is as large as this
        (root / "public").mkdir()
        (root / "public" / "bundle.bin").write_bytes(os.urandom(noise_bytes))
    return root


def test_a_large_release_goes_up_in_parts_with_progress(s3: MotoS3, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    published = publish(app(tmp_path / "big", "v1", 3 * MULTIPART_BYTES), "v1", SOURCE,
                        progress=lambda sent, total: seen.append((sent, total)))
    assert published.outcome == PUBLISHED and published.size > 3 * MULTIPART_BYTES
    head = boto3.client("s3").head_object(Bucket=BUCKET, Key="web/v1.tar.gz")
    assert head["ContentLength"] == published.size
    assert head["ETag"].strip('"').endswith("-4")  # S3's ETag of a 4-part multipart upload
    assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)
    assert seen[-1] == (published.size, published.size)
    checksum = boto3.client("s3").get_object(Bucket=BUCKET, Key="web/v1.tar.gz.sha256")["Body"].read()
    assert checksum.decode() == f"{published.sha256}  v1.tar.gz\n"
    assert S3Store().sha256("s3://releases/web/v1.tar.gz") == published.sha256


def test_ids_are_immutable_on_s3_and_a_rerun_is_a_no_op(s3: MotoS3, tmp_path: Path) -> None:
    first = publish(app(tmp_path / "a", "v2"), "v2", SOURCE)
    again = publish(app(tmp_path / "b", "v2"), "v2", SOURCE)  # another checkout of the same tree
    assert (first.outcome, again.outcome, again.sha256) == (PUBLISHED, UNCHANGED, first.sha256)
    with pytest.raises(PublishError, match="already published"):
        publish(app(tmp_path / "c", "v2-changed"), "v2", SOURCE)
    # Without its .sha256 (published by hand), the bytes themselves are compared.
    boto3.client("s3").delete_object(Bucket=BUCKET, Key="web/v2.tar.gz.sha256")
    assert publish(app(tmp_path / "d", "v2"), "v2", SOURCE).outcome == UNCHANGED
    with pytest.raises(PublishError, match=f"with sha256 {first.sha256}"):
        publish(app(tmp_path / "e", "v2-changed"), "v2", SOURCE)


def test_the_listing_finds_each_release_once(s3: MotoS3, tmp_path: Path) -> None:
    for release in ("v3", "v4"):
        publish(app(tmp_path / release, release), release, SOURCE)
    boto3.client("s3").put_object(Bucket=BUCKET, Key="web/notes.txt", Body=b"not a release")
    listed = {release_of(SOURCE, obj.url) for obj in S3Store().list("s3://releases/web/")} - {None}
    assert {"v3", "v4"} <= listed and "notes" not in listed
