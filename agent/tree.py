"""Removing a directory tree of any depth, without following links.

Why not `shutil.rmtree`: on Python 3.11 it recurses once per directory level, so a release
1,000 directories deep raises RecursionError, and the partial or old release stays behind
for ever. This walk keeps one open directory at a time: it goes down into a child with
`openat(O_NOFOLLOW)` and back up through `..`, checking by inode that `..` is the directory
it came from. So neither the depth nor the open-file limit bounds it, and a symlink inside
the tree is removed, never followed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _first_subdirectory(fd: int) -> str | None:
    """Unlink every non-directory entry of the open directory; return one subdirectory, if any."""
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                return entry.name
            os.unlink(entry.name, dir_fd=fd)
    return None


def remove_tree(path: Path) -> None:
    """`rm -rf path`: iterative, link-safe. A missing path is not an error; others raise OSError."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        path.unlink()
        return
    top = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fd = -1
    try:
        fd = os.open(path.name, _DIR_FLAGS, dir_fd=top)
        names = [path.name]  # the path from `top` to the directory `fd` is open on
        chain = [_identity(fd)]
        while names:
            child = _first_subdirectory(fd)
            if child is not None:
                down = os.open(child, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = down
                names.append(child)
                chain.append(_identity(fd))
                continue
            # `fd` is empty now: step up and remove it.
            name = names.pop()
            chain.pop()
            if not names:
                os.close(fd)
                fd = -1
                os.rmdir(name, dir_fd=top)
                break
            up = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = up
            if _identity(fd) != chain[-1]:
                raise OSError(f"{path} changed while it was being removed")
            os.rmdir(name, dir_fd=fd)
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(top)
