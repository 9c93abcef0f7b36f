"""Archive member checks (pure, table-driven) and extraction of real tar.gz files."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from agent.archive import Limits, Member, UnsafeArchive, check_members, extract

CASES = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "archive_members.json").read_text())
LIMITS = Limits(max_bytes=1000, max_members=5)


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_member_checks(case: dict) -> None:
    members = [Member(m[0], m[1], m[2] if len(m) > 2 else 0, m[3] if len(m) > 3 else "") for m in case["members"]]
    if case["refused"] is None:
        assert check_members(members, LIMITS) == members
    else:
        with pytest.raises(UnsafeArchive, match=case["refused"]):
            check_members(members, LIMITS)


def make_tar(path: Path, entries: list[tuple[str, bytes | None, str]]) -> Path:
    """entries: (name, data, kind) with kind file, dir, symlink:<target>, fifo."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind.startswith("symlink:"):
                info.type, info.linkname = tarfile.SYMTYPE, kind.split(":", 1)[1]
                tar.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return path


def test_a_good_archive_is_extracted(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "r.tar.gz", [("config/", None, "dir"), ("config/puma.rb", b"workers 2\n", "file"),
                                                ("lib", None, "symlink:config")])
    out = tmp_path / "out"
    out.mkdir()
    assert extract(archive, out) == len(b"workers 2\n")
    assert (out / "config" / "puma.rb").read_text() == "workers 2\n"
    assert (out / "lib").is_symlink()


@pytest.mark.parametrize(("entries", "message"), [
    ([("../evil", b"x", "file")], "'..'"),
    ([("/abs", b"x", "file")], "absolute"),
    ([("pipe", None, "fifo")], "special file"),
    ([("out", None, "symlink:../../x")], "outside"),
])
def test_a_bad_archive_extracts_nothing(tmp_path: Path, entries: list, message: str) -> None:
    archive = make_tar(tmp_path / "bad.tar.gz", [("ok.txt", b"fine", "file"), *entries])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchive, match=message):
        extract(archive, out)
    assert list(out.iterdir()) == []


def test_a_corrupt_archive_is_refused(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    with pytest.raises(UnsafeArchive, match="cannot be read"):
        extract(corrupt, tmp_path)


def test_an_archive_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "big.tar.gz", [("zeros", b"\0" * 5000, "file")])
    with pytest.raises(UnsafeArchive, match="size cap"):
        extract(archive, tmp_path, Limits(max_bytes=4096))
