"""Release layout on a real directory with file:// sources: install, switch, prune, failure safety."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.release import Layout, ReleaseError, current_release, install, is_installed, prune, switch
from tests.harness.puma_app import publish, release_archive


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
