"""Archive member checks (pure, table-driven) and extraction of real tar.gz files."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from customer_friendly.agent import archive as archive_module
from customer_friendly.agent.archive import extract
from customer_friendly.contract.archive import (
    Limits,
    LinkError,
    Member,
    UnsafeArchive,
    check_members,
    plan_directories,
    resolve,
)

ROOT = Path(__file__).resolve().parents[2]
CASES = json.loads((ROOT / "tests" / "fixtures" / "archive_members.json").read_text())
LIMITS = Limits(max_bytes=1000, max_members=5)


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_member_checks(case: dict) -> None:
    members = [Member(m[0], m[1], m[2] if len(m) > 2 else 0, m[3] if len(m) > 3 else "") for m in case["members"]]
    if case["refused"] is None:
        assert check_members(members, LIMITS) == members
    else:
        with pytest.raises(UnsafeArchive, match=case["refused"]):
            check_members(members, LIMITS)


def sym(name: str, target: str) -> Member:
    return Member(name, "symlink", 0, target)


def hard(name: str, target: str) -> Member:
    return Member(name, "hardlink", 0, target)


def reg(name: str, size: int = 1) -> Member:
    return Member(name, "file", size)


def dir_(name: str) -> Member:
    return Member(name, "dir")


# (case, members, refused: a regex the one-line message must match, or None when accepted)
LINK_GRAPHS = [
    ("the chain from the issue: each link inside alone, x above the release with all",
     [sym("x", "y/.."), sym("y", "z/.."), sym("z", "w/.."), sym("w", ".")],
     r"symlink 'x' -> 'y/\.\.' points outside the release: it goes above the release through the links 'y', "
     r"'z', 'w'"),
    ("the same chain in the opposite order",
     [sym("w", "."), sym("z", "w/.."), sym("y", "z/.."), sym("x", "y/..")], r"symlink 'z' .* points outside"),
    ("only the harmless end of that chain", [sym("w", "."), reg("a")], None),
    ("a link to a directory's parent, which is the release", [dir_("d"), sym("d/up", "..")], None),
    ("a link two levels up from a directory one level down", [dir_("d"), sym("d/up", "../..")], "points outside"),
    ("a link that climbs through a link into a deeper directory and back",
     [dir_("app"), dir_("app/lib"), sym("vendor", "app/lib"), sym("top", "vendor/../..")], None),
    ("a link that climbs through a link to a shallow directory",
     [dir_("app"), sym("vendor", "app"), sym("top", "vendor/../..")], "points outside"),
    ("an escape hidden in a link inside a directory that a link names",
     [dir_("d"), sym("a", "b/c"), sym("b", "d"), sym("d/c", "../../..")], "points outside"),
    ("a loop of two links", [sym("a", "b"), sym("b", "a")], r"symlink 'a' -> 'b' loops"),
    ("a link to itself", [sym("a", "a")], "loops"),
    ("a link that grows itself", [sym("a", "a/x")], "loops"),
    ("a chain to an absolute path", [sym("a", "b/x"), sym("b", "/etc")], "absolute path '/etc'"),
    ("a dangling link that stays inside", [sym("log", "tmp/log")], None),
    ("a file under a link that comes later in the archive", [reg("app/x.rb"), sym("app", "lib")],
     r"member 'app/x.rb' passes through the link 'app'"),
    ("a directory under a link", [sym("app", "."), dir_("app/d/")], "passes through the link 'app'"),
    ("a file inside a file", [reg("a"), reg("a/b")], r"inside 'a', which is not a directory"),
    ("a file then a link with the same name", [reg("a"), sym("a", "b")], r"member 'a' appears twice"),
    ("a directory listed twice, as tar does with ./", [dir_("./"), dir_("d/"), dir_("./d")], None),
    ("a NUL byte in a link target", [sym("lib", "app\x00/../..")], r"symlink 'lib' has a NUL byte in its target"),
    ("a NUL byte in a hard link target", [reg("a"), hard("b", "a\x00")], "hard link 'b' has a NUL byte"),
    ("a NUL byte in a name", [reg("a\x00b")], r"member 'a\\x00b' contains a NUL byte"),
    ("an empty link target", [sym("a", "")], "symlink 'a' has an empty target"),
    ("our marker file", [reg(".cfo-release.json")], r"member '.cfo-release.json' collides with the agent's own files"),
    ("our marker file, spelled with ./", [reg("./.cfo-release.json")], "collides"),
    ("a link in place of our marker file", [sym(".cfo-release.json", "config.ru")], "collides"),
    ("a directory in place of our previous-release record", [dir_(".cfo-previous/")], "collides"),
    ("a file of that name deeper down is the app's business", [reg("app/.cfo-release.json")], None),
    ("the release directory itself as a link", [sym(".", "..")], r"member '.' names the release directory"),
    ("a hard link to a file", [reg("a"), hard("b", "./a"), hard("c", "b")], None),
    ("a hard link to a link", [sym("a", "b"), hard("c", "a")], "must name a regular file"),
    ("a hard link to nothing", [hard("c", "missing")], "no such file in the archive"),
    ("a hard link to itself", [hard("c", "c")], "hard link 'c' -> 'c' loops"),
    ("a hard link to a directory", [dir_("d"), hard("c", "d")], "must name a regular file"),
    ("a hard link out of the release", [hard("c", "d/../../x")], "points outside the release"),
]


@pytest.mark.parametrize(("members", "refused"), [c[1:] for c in LINK_GRAPHS], ids=[c[0] for c in LINK_GRAPHS])
def test_links_are_judged_against_the_whole_archive(members: list[Member], refused: str | None) -> None:
    if refused is None:
        assert check_members(members) == members
    else:
        with pytest.raises(UnsafeArchive, match=refused) as caught:
            check_members(members)
        assert "\n" not in str(caught.value)


def test_a_member_deeper_than_the_limit_is_refused_with_a_short_message() -> None:
    deep = "a/" * 1000 + "leaf.rb"
    with pytest.raises(UnsafeArchive, match="is 1001 directories deep; the limit is 256") as caught:
        check_members([reg(deep)])
    message = str(caught.value)
    assert message.startswith("member 'a/a/") and "leaf.rb" in message and len(message) < 300
    assert check_members([reg(deep)], Limits(max_depth=1001))


def test_a_member_name_longer_than_path_max_is_refused() -> None:
    with pytest.raises(UnsafeArchive, match=r"member 'xxx.*' \(5000 characters\) is longer than 4096 characters"):
        check_members([reg("x" * 5000)])


@pytest.mark.parametrize(("links", "path", "expected"), [
    ({}, "a/b/../c", "a/c"),
    ({}, ".", "."),
    ({"l": "d"}, "l/x", "d/x"),
    ({"l": "d/e", "d/e": ".."}, "l/x", "x"),  # `..` applies to where the link led, not to "l"
    ({"x": "y/..", "y": "z/..", "z": "w/..", "w": "."}, "w/a", "a"),
    ({"a": "b", "b": "c", "c": "."}, "a", "."),
])
def test_resolve_walks_links_as_the_kernel_does(links: dict, path: str, expected: str) -> None:
    assert resolve(links, path) == expected


@pytest.mark.parametrize(("links", "path", "kind", "via"), [
    ({}, "..", "outside", ()),
    ({"x": "y/..", "y": "z/..", "z": "w/..", "w": "."}, "x", "outside", ("x", "y", "z", "w")),
    ({"a": "/etc"}, "a/passwd", "outside", ("a",)),
    ({"a": "b", "b": "a"}, "a", "loop", ("a", "b") * 20 + ("a",)),
])
def test_resolve_refuses_escapes_and_loops(links: dict, path: str, kind: str, via: tuple) -> None:
    with pytest.raises(LinkError) as caught:
        resolve(links, path)
    assert (caught.value.kind, caught.value.via) == (kind, via)


def test_directories_are_planned_parents_first_including_implied_ones() -> None:
    members = [reg("a/b/c/file"), dir_("./z/"), sym("a/l", "b"), dir_("./")]
    assert plan_directories(members) == ["a", "z", "a/b", "a/b/c"]


# --- real archives ------------------------------------------------------------------------

def make_tar(path: Path, entries: list[tuple], fmt: int = tarfile.PAX_FORMAT) -> Path:
    """entries: (name, data, kind[, mode]) with kind file, dir, symlink:<target>, hardlink:<target>, fifo."""
    with tarfile.open(path, "w:gz", format=fmt) as tar:
        for name, data, kind, *mode in entries:
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.uname, info.gname = 4242, 4242, "someone", "someone"
            info.mtime = 1_500_000_000
            if mode:
                info.mode = mode[0]
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind.startswith("symlink:"):
                info.type, info.linkname = tarfile.SYMTYPE, kind.split(":", 1)[1]
                tar.addfile(info)
            elif kind.startswith("hardlink:"):
                info.type, info.linkname = tarfile.LNKTYPE, kind.split(":", 1)[1]
                tar.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return path


def snapshot(top: Path) -> dict[str, tuple]:
    """Everything under `top`, links not followed: type, mode, size, mtime, and file contents."""
    seen: dict[str, tuple] = {}
    for path in [top, *top.rglob("*")]:
        info = path.lstat()
        body = path.read_bytes() if stat.S_ISREG(info.st_mode) else os.readlink(path) if path.is_symlink() else None
        seen[str(path.relative_to(top))] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_size,
                                            info.st_mtime_ns, body)
    return seen


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path]:
    """A release directory to extract into, beside a sentinel directory that must never change."""
    sentinel = tmp_path / "outside"
    (sentinel / "deeper").mkdir(parents=True)
    (sentinel / "secret").write_text("do not touch")
    os.utime(sentinel / "deeper", ns=(1_000_000_000, 1_000_000_000))
    os.utime(sentinel, ns=(1_000_000_000, 1_000_000_000))
    releases = tmp_path / "releases"
    (releases / "r").mkdir(parents=True)
    return releases / "r", sentinel


def test_a_good_archive_is_extracted(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "r.tar.gz", [("config/", None, "dir"), ("config/puma.rb", b"workers 2\n", "file"),
                                                ("lib", None, "symlink:config")])
    out = tmp_path / "out"
    out.mkdir()
    assert extract(archive, out) == len(b"workers 2\n")
    assert (out / "config" / "puma.rb").read_text() == "workers 2\n"
    assert (out / "lib").is_symlink()


def test_modes_are_sane_and_owners_special_bits_are_dropped(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "r.tar.gz", [
        ("bin/", None, "dir", 0o7777), ("bin/rails", b"#!ruby", "file", 0o6755), ("secret.key", b"k", "file", 0o600),
        ("world", b"w", "file", 0o1777), ("bin/sticky/", None, "dir", 0o1700), ("hard", None, "hardlink:bin/rails"),
    ])
    out = tmp_path / "out"
    out.mkdir()
    extract(archive, out)
    modes = {p: stat.S_IMODE((out / p).lstat().st_mode) for p in ("bin", "bin/rails", "secret.key", "world",
                                                                  "bin/sticky")}
    assert modes == {"bin": 0o755, "bin/rails": 0o755, "secret.key": 0o644, "world": 0o755, "bin/sticky": 0o755}
    assert {(out / p).lstat().st_uid for p in ("bin", "bin/rails", "secret.key")} == {os.getuid()}
    assert (out / "hard").stat().st_ino == (out / "bin/rails").stat().st_ino
    assert (out / "bin/rails").stat().st_mtime == 1_500_000_000


CHAIN = [("w", None, "symlink:."), ("z", None, "symlink:w/.."), ("y", None, "symlink:z/.."),
         ("x", None, "symlink:y/..")]


@pytest.mark.parametrize(("entries", "message"), [
    (CHAIN, "symlink 'z' -> 'w/..' points outside the release"),
    # With directory members behind the chain, tarfile's deferred directory pass followed the
    # links and changed the mtime of a directory outside the code volume.
    ([*CHAIN, ("x/outside/deeper/", None, "dir", 0o777), ("x/outside/", None, "dir", 0o777)],
     "member 'x/outside/deeper' passes through the link 'x'"),
], ids=["links only", "links and directories behind them"])
def test_the_link_chain_from_the_issue_is_refused_and_touches_nothing(site: tuple[Path, Path], tmp_path: Path,
                                                                      entries: list, message: str) -> None:
    release, sentinel = site
    archive = make_tar(tmp_path / "chain.tar.gz", entries)
    before = snapshot(tmp_path / "outside"), snapshot(tmp_path / "releases")
    with pytest.raises(UnsafeArchive, match=re.escape(message)):
        extract(archive, release)
    assert (snapshot(tmp_path / "outside"), snapshot(tmp_path / "releases")) == before
    assert list(release.iterdir()) == []
    assert sentinel.stat().st_mtime_ns == 1_000_000_000


def test_a_link_planted_in_the_destination_is_never_followed(site: tuple[Path, Path], tmp_path: Path) -> None:
    release, sentinel = site
    (release / "app").symlink_to(sentinel)  # not from the archive: the writer must not trust the disk either
    before = snapshot(sentinel)
    for entries in ([("app/", None, "dir")], [("app/x.rb", b"evil", "file")], [("app", b"evil", "file")]):
        with pytest.raises(OSError):
            extract(make_tar(tmp_path / "a.tar.gz", entries), release)
    assert snapshot(sentinel) == before


@pytest.mark.parametrize(("entries", "message"), [
    ([("../evil", b"x", "file")], "'..'"),
    ([("/abs", b"x", "file")], "absolute"),
    ([("pipe", None, "fifo")], "special file"),
    ([("out", None, "symlink:../../x")], "outside"),
    ([("lib", None, "symlink:app\x00" + "/.." * 50)], "symlink 'lib' has a NUL byte in its target"),  # PAX
    ([(".cfo-release.json", b"{}", "file")], "member '.cfo-release.json' collides with the agent's own files"),
    ([("d", None, "symlink:."), ("d/.cfo-release.json", b"{}", "file")], "passes through the link 'd'"),
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


def test_a_truncated_archive_is_refused(tmp_path: Path) -> None:
    whole = make_tar(tmp_path / "whole.tar.gz", [("big", os.urandom(200_000), "file")]).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchive, match="cannot be read"):
        extract(cut, out)


def test_an_archive_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "big.tar.gz", [("zeros", b"\0" * 5000, "file")])
    with pytest.raises(UnsafeArchive, match="size cap"):
        extract(archive, tmp_path, Limits(max_bytes=4096))


def test_tarfile_extraction_is_never_used() -> None:
    """The extractor must work where `extractall(filter=...)` does not exist (3.11.0 to 3.11.3)."""
    tree = ast.parse(Path(archive_module.__file__).read_text())
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    assert not [c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr in ("extract", "extractall")]
    assert not [c for c in calls if any(k.arg == "filter" for k in c.keywords)]
    assert "data_filter" not in {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}


def _python_without_filters() -> str | None:
    for candidate in ("/usr/bin/python3.11", "/usr/bin/python3", shutil.which("python3.11")):
        if candidate and Path(candidate).exists():
            probe = subprocess.run([candidate, "-c", "import sys, tarfile; print(sys.version_info[:2] == (3, 11) "
                                    "and not hasattr(tarfile, 'data_filter'))"], capture_output=True, text=True)
            if probe.stdout.strip() == "True":
                return candidate
    return None


def test_extraction_works_on_a_python_311_without_tarfile_filters(tmp_path: Path) -> None:
    """Debian bookworm's Python 3.11.2, when present: what made cfo-fetch crash-loop."""
    python = _python_without_filters()
    if python is None:
        pytest.fail("no Python 3.11 without tarfile.data_filter here: make test installs Debian's python3 (3.11.2)")
    archive = make_tar(tmp_path / "r.tar.gz", [("config/puma.rb", b"workers 2\n", "file"), ("lib", None,
                                                                                         "symlink:config")])
    out = tmp_path / "out"
    out.mkdir()
    # The product's package layout, for an interpreter that has none of our venv.
    package = tmp_path / "path" / "customer_friendly"
    package.mkdir(parents=True)
    for part in ("agent", "contract"):
        (package / part).symlink_to(ROOT / part)
    done = subprocess.run([python, "-c", "import sys; from pathlib import Path; "
                           "from customer_friendly.agent.archive import extract; "
                           "print(extract(Path(sys.argv[1]), Path(sys.argv[2])))", str(archive), str(out)],
                          cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "path")}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "10" and (out / "lib" / "puma.rb").read_text() == "workers 2\n"
