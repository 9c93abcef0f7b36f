"""remove_tree on real directories: any depth, few descriptors, links removed and never followed."""

from __future__ import annotations

import os
import resource
import shutil
import sys
from pathlib import Path

import pytest

from customer_friendly.agent.tree import remove_tree
from tests.unit.test_archive import snapshot


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "dir" / "keep").write_text("keep")
    return outside


def deep_tree(top: Path, levels: int) -> Path:
    """`levels` nested directories, built through descriptors (the path grows past PATH_MAX)."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(levels):
            os.mkdir("directory-with-a-long-name", dir_fd=fd)
            with open(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w") as fh:
                fh.write(str(level))
            child = os.open("directory-with-a-long-name", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return top


def test_a_tree_deeper_than_recursion_and_path_max_is_removed(tmp_path: Path) -> None:
    top = deep_tree(tmp_path / "release", 2000)  # 2000 * 27 characters: far past PATH_MAX (4096)
    if sys.version_info < (3, 12):  # why remove_tree exists: 3.12 made rmtree iterative
        with pytest.raises(RecursionError):
            shutil.rmtree(top)
    remove_tree(top)
    assert not top.exists()


def test_removal_needs_no_descriptor_per_level(tmp_path: Path) -> None:
    top = deep_tree(tmp_path / "release", 300)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    try:
        remove_tree(top)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not top.exists()


def test_links_inside_are_removed_not_followed(tmp_path: Path, sentinel: Path) -> None:
    top = tmp_path / "release"
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "up").symlink_to(sentinel)
    (top / "a" / "b" / "file").symlink_to(sentinel / "dir" / "keep")
    (top / "dirlink").symlink_to(sentinel / "dir", target_is_directory=True)
    before = snapshot(sentinel)
    remove_tree(top)
    assert not top.exists() and snapshot(sentinel) == before


def test_a_link_given_as_the_tree_is_removed_itself(tmp_path: Path, sentinel: Path) -> None:
    link = tmp_path / "release"
    link.symlink_to(sentinel)
    before = snapshot(sentinel)
    remove_tree(link)
    assert not link.is_symlink() and snapshot(sentinel) == before


def test_a_missing_path_is_not_an_error_and_a_file_is_removed(tmp_path: Path) -> None:
    remove_tree(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    remove_tree(tmp_path / "file")
    assert list(tmp_path.iterdir()) == []
