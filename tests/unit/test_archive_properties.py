"""Property tests of the archive checks over generated link graphs.

The oracle is the operating system, not our resolver: an accepted archive is extracted into a
real directory and every entry is resolved with os.path.realpath, which must stay inside the
release and agree with `resolve`; a sentinel directory beside it must not change at all.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customer_friendly.agent.archive import extract
from customer_friendly.contract.archive import Member, UnsafeArchive, check_members, resolve
from tests.unit.test_archive import make_tar, snapshot

NAMES = st.sampled_from(["a", "b", "c", "d"])
PATHS = st.one_of(NAMES, st.lists(NAMES, min_size=2, max_size=3).map("/".join))  # mostly shallow
TARGETS = st.one_of(
    st.lists(st.sampled_from(["a", "b", "c", "d", ".", ".."]), min_size=1, max_size=4).map("/".join),
    st.sampled_from(["/", "/etc", "a/../..", ".", ".."]),
)
SETTINGS = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@st.composite
def free_graphs(draw: st.DrawFn) -> list[Member]:
    """Up to 9 members on 4 names and 3 levels: links to each other, to parents, in loops."""
    paths = draw(st.lists(PATHS, min_size=1, max_size=9, unique=True))
    members = []
    for path in paths:
        kind = draw(st.sampled_from(["dir", "file", "symlink", "symlink", "symlink", "hardlink"]))
        if kind == "symlink":
            members.append(Member(path, "symlink", 0, draw(TARGETS)))
        elif kind == "hardlink":
            members.append(Member(path, "hardlink", 0, draw(st.sampled_from(paths))))
        elif kind == "file":
            members.append(Member(path, "file", 1, "", draw(st.sampled_from([0o644, 0o755, 0o4777]))))
        else:
            members.append(Member(path + "/", "dir"))
    return members


@st.composite
def chains(draw: st.DrawFn) -> list[Member]:
    """Links at the top that name each other, as in the issue (`x -> y/..`), ending anywhere,
    beside a directory that holds one more link: each looks harmless alone."""
    names = draw(st.lists(st.sampled_from(["x", "y", "z", "w", "v"]), min_size=1, max_size=5, unique=True))
    members = [Member("d/", "dir"), Member("d/e", "symlink", 0, draw(st.sampled_from(["..", "../x", "x", "."])))]
    for name, following in zip(names, [*names[1:], None], strict=True):
        step = draw(st.sampled_from(["{}", "{}/..", "{}/a", "d/{}", "../{}"])) if following else "{}"
        members.append(Member(name, "symlink", 0, step.format(following or draw(st.sampled_from([".", "d", "d/e"])))))
    return draw(st.permutations(members))


def link_graphs() -> st.SearchStrategy[list[Member]]:
    return st.one_of(free_graphs(), chains())


def verdict(members: list[Member]) -> str | None:
    try:
        check_members(members)
    except UnsafeArchive as err:
        return str(err)
    return None


@SETTINGS
@given(link_graphs(), st.randoms(use_true_random=False))
def test_the_verdict_does_not_depend_on_the_order_of_members(members: list[Member], rnd) -> None:
    shuffled = list(members)
    rnd.shuffle(shuffled)
    assert (verdict(members) is None) == (verdict(shuffled) is None)


@SETTINGS
@given(link_graphs())
def test_whatever_is_accepted_extracts_inside_and_nothing_outside_changes(members: list[Member]) -> None:
    accepted = verdict(members) is None
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        sentinel = top / "outside"
        (sentinel / "a" / "b").mkdir(parents=True)
        (sentinel / "a" / "c").write_text("do not touch")
        for path in (sentinel / "a" / "b", sentinel / "a", sentinel):
            os.utime(path, ns=(1_000_000_000, 1_000_000_000))
        release = top / "releases" / "r"
        release.mkdir(parents=True)
        os.utime(release.parent, ns=(1_000_000_000, 1_000_000_000))
        archive = make_tar(top / "r.tar.gz", [
            (m.name, b"x" * m.size if m.kind == "file" else None,
             m.kind if m.kind in ("file", "dir") else f"{m.kind}:{m.linkname}", m.mode) for m in members])
        before = snapshot(sentinel), os.stat(release.parent).st_mtime_ns, sorted(os.listdir(top))

        try:
            extract(archive, release)
        except UnsafeArchive:
            assert not accepted
            assert list(release.iterdir()) == []
        else:
            assert accepted
            real_release = os.path.realpath(release)
            links = {m.path: m.linkname for m in members if m.kind == "symlink"}
            for member in members:
                real = os.path.realpath(release / member.path)
                assert real == real_release or real.startswith(real_release + "/"), (member, real)
                if member.kind == "symlink":
                    ours = resolve(links, posixpath.join(posixpath.dirname(member.path), member.linkname))
                    assert real == os.path.normpath(os.path.join(real_release, ours)), (member, ours, real)
        assert (snapshot(sentinel), os.stat(release.parent).st_mtime_ns, sorted(os.listdir(top))) == before


@SETTINGS
@given(link_graphs())
def test_an_accepted_link_never_resolves_outside_through_the_others(members: list[Member]) -> None:
    """Pure restatement: with every link of an accepted archive in place, each one resolves inside."""
    if verdict(members) is not None:
        return
    links = {m.path: m.linkname for m in members if m.kind == "symlink"}
    for path, target in links.items():
        final = resolve(links, posixpath.join(posixpath.dirname(path), target))
        assert final == "." or not final.startswith(("../", "/"))
