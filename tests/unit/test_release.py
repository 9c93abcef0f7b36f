"""Release layout on a real directory with file:// sources: install, switch, prune, failure safety."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from customer_friendly.agent.release import (
    Layout,
    ReleaseError,
    current_release,
    install,
    is_installed,
    links,
    previous_release,
    prune,
    restore,
    switch,
)
from customer_friendly.contract.archive import Limits
from testbed.puma_app import publish, release_archive


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "code")


@pytest.fixture
def source(tmp_path: Path) -> str:
    for release in ("v1", "v2", "v3", "v4"):
        publish(tmp_path / "artifacts", release, release_archive(release))
    publish(tmp_path / "artifacts", "nosum", release_archive("nosum"), checksum=None)
    return f"file://{tmp_path / 'artifacts'}/{{release}}.tar.gz"


def test_install_then_switch_makes_a_relative_current_link(layout: Layout, source: str) -> None:
    assert install(layout, "v1", source) is True
    assert switch(layout, "v1") is None
    assert os.readlink(layout.current) == "releases/v1"
    assert (layout.current / "config.ru").read_text().startswith('RELEASE = "v1"')


def test_an_installed_release_is_not_fetched_again(layout: Layout, source: str, tmp_path: Path) -> None:
    install(layout, "v1", source)
    (tmp_path / "artifacts" / "v1.tar.gz").unlink()
    assert install(layout, "v1", source) is False


def test_switching_records_the_previous_release(layout: Layout, source: str) -> None:
    for release in ("v1", "v2"):
        install(layout, release, source)
        switch(layout, release)
    assert os.readlink(layout.previous) == "releases/v1"
    assert current_release(layout) == "v2"


def test_a_failed_install_leaves_current_and_no_partial_directory(layout: Layout, source: str,
                                                                  tmp_path: Path) -> None:
    install(layout, "v1", source)
    switch(layout, "v1")
    (tmp_path / "artifacts" / "v2.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(ReleaseError):
        install(layout, "v2", source)
    assert current_release(layout) == "v1"
    assert sorted(p.name for p in layout.releases.iterdir()) == ["v1"]
    assert not is_installed(layout, "v2")


def test_a_missing_checksum_is_refused_when_required(layout: Layout, source: str) -> None:
    with pytest.raises(ReleaseError, match="policy requires a checksum"):
        install(layout, "nosum", source, require_sha256=True)
    assert install(layout, "nosum", source) is True


def test_a_missing_artifact_says_not_found(layout: Layout, source: str) -> None:
    with pytest.raises(ReleaseError, match="not found"):
        install(layout, "v9", source)


def test_switching_to_a_release_that_is_not_installed_is_refused(layout: Layout) -> None:
    with pytest.raises(ReleaseError, match="not installed"):
        switch(layout, "v1")


def test_prune_keeps_the_newest_and_never_current_or_previous(layout: Layout, source: str) -> None:
    for release in ("v1", "v2", "v3", "v4"):
        install(layout, release, source)
        os.utime(layout.release_dir(release) / ".cfo-release.json", (0, {"v1": 100, "v2": 400, "v3": 300,
                                                                        "v4": 200}[release]))
    switch(layout, "v1")
    switch(layout, "v4")
    assert prune(layout, keep=1) == ["v3"]
    assert sorted(p.name for p in layout.releases.iterdir()) == ["v1", "v2", "v4"]


# --- the switch of current and previous as one step ------------------------------------------

def test_previous_is_recorded_before_current_moves_so_one_rename_switches_both(layout: Layout, source: str) -> None:
    for release in ("v1", "v2"):
        install(layout, release, source)
        switch(layout, release)
    assert (layout.release_dir("v2") / ".cfo-previous").read_text().strip() == "v1"
    # A crash after the rename of `current`, before the `previous` link was refreshed:
    layout.previous.unlink()
    layout.previous.symlink_to("releases/v9")
    assert (current_release(layout), previous_release(layout)) == ("v2", "v1")


def test_a_crash_before_current_moves_leaves_both_as_they_were(layout: Layout, source: str) -> None:
    for release in ("v1", "v2", "v3"):
        install(layout, release, source)
    switch(layout, "v1")
    switch(layout, "v2")
    # The record of v3 is written, then the agent dies before renaming `current`:
    (layout.release_dir("v3") / ".cfo-previous").write_text("v2\n")
    assert (current_release(layout), previous_release(layout)) == ("v2", "v1")


def test_restore_puts_back_exactly_what_was_there(layout: Layout, source: str) -> None:
    for release in ("v1", "v2", "v3"):
        install(layout, release, source)
    switch(layout, "v1")
    switch(layout, "v2")
    before, read_before = links(layout), (current_release(layout), previous_release(layout))
    switch(layout, "v3")
    assert (current_release(layout), previous_release(layout)) == ("v3", "v2")
    restore(layout, before)
    assert links(layout) == before and (current_release(layout), previous_release(layout)) == read_before
    assert read_before == ("v2", "v1")


def test_restore_of_the_first_release_removes_previous(layout: Layout, source: str) -> None:
    for release in ("v1", "v2"):
        install(layout, release, source)
    switch(layout, "v1")
    before = links(layout)
    switch(layout, "v2")
    restore(layout, before)
    assert before.previous is None and not layout.previous.is_symlink()
    assert (current_release(layout), previous_release(layout)) == ("v1", None)


def test_a_volume_from_before_the_record_reads_the_previous_link(layout: Layout, source: str) -> None:
    for release in ("v1", "v2"):
        install(layout, release, source)
    layout.current.symlink_to("releases/v2")
    layout.previous.symlink_to("releases/v1")
    assert previous_release(layout) == "v1"


# --- deep trees --------------------------------------------------------------------------------

def deep_member(levels: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo("d/" * levels + "leaf.txt")
    info.size = 4
    return info


def test_a_release_deeper_than_the_limit_is_refused_up_front(layout: Layout, tmp_path: Path) -> None:
    publish(tmp_path / "deep", "deep", release_archive("deep", extra=[deep_member(1000)]))
    with pytest.raises(ReleaseError, match=r"release deep refused: member 'd/d/.*leaf.txt' .* is 1001 directories "
                                           r"deep; the limit is 256") as caught:
        install(layout, "deep", f"file://{tmp_path / 'deep'}/{{release}}.tar.gz")
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in layout.releases.iterdir()) == []


def test_a_deep_release_the_limits_admit_installs_and_is_pruned(layout: Layout, source: str, tmp_path: Path) -> None:
    publish(tmp_path / "deep", "deep", release_archive("deep", extra=[deep_member(1000)]))
    limits = Limits(max_depth=1100)
    assert install(layout, "deep", f"file://{tmp_path / 'deep'}/{{release}}.tar.gz", limits=limits)
    assert (layout.release_dir("deep") / ("d/" * 1000 + "leaf.txt")).read_bytes() == b"xxxx"
    switch(layout, "deep")
    for release in ("v1", "v2"):
        install(layout, release, source)
        switch(layout, release)
    assert prune(layout, keep=0) == ["deep"]  # shutil.rmtree would raise RecursionError on 3.11
    assert sorted(p.name for p in layout.releases.iterdir()) == ["v1", "v2"]


def test_a_deep_partial_extraction_is_cleaned_up(layout: Layout, tmp_path: Path) -> None:
    """Writing fails once 1,000 directories exist (a name longer than the filesystem allows):
    the partial directory still goes, so the next attempt starts clean."""
    too_long = tarfile.TarInfo("d/" * 1000 + "n" * 300)
    too_long.size = 1
    publish(tmp_path / "deep", "deep", release_archive("deep", extra=[deep_member(1000), too_long]))
    with pytest.raises(ReleaseError, match=r"cannot install release deep .*File name too long"):
        install(layout, "deep", f"file://{tmp_path / 'deep'}/{{release}}.tar.gz", limits=Limits(max_depth=1100))
    assert sorted(p.name for p in layout.releases.iterdir()) == []
