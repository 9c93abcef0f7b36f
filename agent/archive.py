"""Safe extraction of a release archive, written by us rather than by tarfile.

Why our own extractor: tarfile's `extractall(filter=...)` does not exist before Python
3.11.4 (Debian bookworm ships 3.11.2, where it raises TypeError), and even where it exists
it judges each link alone, before the next one is created (see contract/archive.py).
tarfile is used here only to read headers and file data.

`contract.archive.check_members` judges the members first (the same rules `kubectl cfo publish`
applies). `extract` then writes only what passed, through directory file descriptors under the
destination, never following a link: directories first, then files (created with
O_EXCL | O_NOFOLLOW, mode and mtime set on the open file), then hard links, and symlinks
last, so no link exists while anything is written. Owners, setuid/setgid/sticky bits and
directory mtimes are not restored: there is no deferred pass over paths.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from customer_friendly.contract.archive import (
    DEFAULT_LIMITS,
    DIR_MODE,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Limits,
    Member,
    UnsafeArchive,
    check_members,
    hardlink_source,
    plan_directories,
)

# --- I/O: writing through directory descriptors ----------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
# What reading a damaged archive raises (gzip's BadGzipFile is an OSError).
_UNREADABLE: tuple[type[Exception], ...] = (tarfile.TarError, EOFError, zlib.error, OSError)
try:
    import lzma

    _UNREADABLE += (lzma.LZMAError,)
except ImportError:  # an interpreter built without lzma cannot open .tar.xz at all
    pass


class _Writer:
    """Creates entries under one root descriptor. Every path component is opened with
    O_NOFOLLOW, so nothing here can be redirected by a link, whatever is on disk."""

    def __init__(self, root: Path) -> None:
        self.root = os.open(root, _DIR_FLAGS)
        self._cached: tuple[str, int] | None = None  # the last directory used: members come grouped

    def close(self) -> None:
        self._forget()
        os.close(self.root)

    def _forget(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _open(self, path: str) -> int:
        """A new descriptor on the directory `path` (relative to the root); the caller closes it."""
        start, rest = self.root, path
        if self._cached is not None and path.startswith(self._cached[0] + "/"):
            start, rest = self._cached[1], path[len(self._cached[0]) + 1:]
        fd = os.dup(start)
        for part in rest.split("/") if rest != "." else ():
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            finally:
                os.close(fd)
            fd = child
        return fd

    def directory(self, path: str) -> int:
        """A descriptor on the directory `path`, valid until the next call (do not close it)."""
        if self._cached is None or self._cached[0] != path:
            fd = self._open(path)
            self._forget()
            self._cached = (path, fd)
        return self._cached[1]

    def mkdir(self, path: str) -> None:
        parent, name = posixpath.split(path)
        parent_fd = self.directory(parent or ".")
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        os.fchmod(fd, DIR_MODE)  # on the open directory: umask-proof, and never through a link
        self._forget()
        self._cached = (path, fd)  # the next directory is usually inside this one

    def file(self, path: str, chunks: Iterator[bytes], mode: int, mtime: float) -> None:
        parent, name = posixpath.split(path)
        fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=self.directory(parent or "."))
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fchmod(out.fileno(), mode)
            if 0 <= mtime < 2**33:
                os.utime(out.fileno(), (mtime, mtime))

    def hardlink(self, path: str, source: str) -> None:
        parent, name = posixpath.split(path)
        source_parent, source_name = posixpath.split(source)
        src = self._open(source_parent or ".")
        try:
            os.link(source_name, name, src_dir_fd=src, dst_dir_fd=self.directory(parent or "."),
                    follow_symlinks=False)
        finally:
            os.close(src)

    def symlink(self, path: str, target: str) -> None:
        parent, name = posixpath.split(path)
        os.symlink(target, name, dir_fd=self.directory(parent or "."))


def _unreadable(err: BaseException) -> UnsafeArchive:
    return UnsafeArchive(f"archive cannot be read: {str(err) or type(err).__name__}")


def _headers(tar: tarfile.TarFile, limits: Limits) -> list[tarfile.TarInfo]:
    infos = []
    try:
        for info in tar:
            infos.append(info)
            if len(infos) > limits.max_members:
                raise UnsafeArchive(f"archive has more than {limits.max_members} members")
    except _UNREADABLE as err:
        raise _unreadable(err) from err
    return infos


def _data(tar: tarfile.TarFile, info: tarfile.TarInfo) -> Iterator[bytes]:
    """A member's data in chunks; a damaged or truncated archive is UnsafeArchive, not OSError."""
    try:
        stream = tar.extractfile(info)
        if stream is None:
            raise UnsafeArchive(f"member {info.name!r} has no data")
        left = info.size
        while left > 0:
            chunk = stream.read(min(_CHUNK, left))
            if not chunk:
                raise UnsafeArchive(f"member {info.name!r} is shorter than its header says (truncated archive)")
            left -= len(chunk)
            yield chunk
    except _UNREADABLE as err:
        raise _unreadable(err) from err


def extract(archive: Path, destination: Path, limits: Limits = DEFAULT_LIMITS) -> int:
    """Check every member, then write them into the empty directory `destination`; returns the
    bytes of file data written.

    Raises UnsafeArchive for a refused or unreadable archive (before anything is written when
    the headers are to blame), OSError when writing fails. On any error the caller removes
    `destination`.
    """
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115  # closed by `with tar` below
    except _UNREADABLE as err:
        raise _unreadable(err) from err
    with tar:
        infos = _headers(tar, limits)
        members = check_members([Member.from_tarinfo(i) for i in infos], limits)
        tree = {m.path: m for m in members}
        writer = _Writer(destination)
        try:
            for path in plan_directories(members):
                writer.mkdir(path)
            written = 0
            for info, member in zip(infos, members, strict=True):  # archive order: the data streams forward
                if member.kind == REGULAR:
                    writer.file(member.path, _data(tar, info), member.extracted_mode, float(info.mtime))
                    written += info.size
            for member in members:
                if member.kind == HARDLINK:
                    writer.hardlink(member.path, hardlink_source(tree, member.path))
            for member in members:  # last: no link exists while anything else is written
                if member.kind == SYMLINK:
                    writer.symlink(member.path, member.linkname)
            return written
        finally:
            writer.close()
