"""Safe extraction of a release archive.

The checks are a pure function over member headers, so every refusal is unit-tested without
writing a file: absolute paths, `..`, links that point outside the release, paths that pass
through a link, device files and FIFOs, and archives larger than the cap (in bytes or
members). Extraction then also runs with tarfile's own `data` filter as a second fence.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REGULAR, DIRECTORY, SYMLINK, HARDLINK, OTHER = "file", "dir", "symlink", "hardlink", "other"


class UnsafeArchive(ValueError):
    """The archive is refused; the message names the member and the rule it breaks."""


@dataclass(frozen=True)
class Member:
    """What the checks need of a tar header."""

    name: str
    kind: str
    size: int = 0
    linkname: str = ""

    @classmethod
    def from_tarinfo(cls, info: tarfile.TarInfo) -> Member:
        if info.isreg():
            kind = REGULAR
        elif info.isdir():
            kind = DIRECTORY
        elif info.issym():
            kind = SYMLINK
        elif info.islnk():
            kind = HARDLINK
        else:
            kind = OTHER
        return cls(info.name, kind, info.size, info.linkname)


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 2 * 1024**3
    """Largest total size of the extracted files."""
    max_members: int = 200_000


DEFAULT_LIMITS = Limits()


def _normal(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return posixpath.normpath(name) if name else "."


def _escapes(path: str) -> bool:
    return path == ".." or path.startswith("../") or path.startswith("/")


def check_members(members: Iterable[Member], limits: Limits = DEFAULT_LIMITS) -> list[Member]:
    """Return the members if every one is safe to extract under a release directory."""
    checked: list[Member] = []
    links: set[str] = set()
    total = 0
    for member in members:
        name = member.name
        if len(checked) >= limits.max_members:
            raise UnsafeArchive(f"archive has more than {limits.max_members} members")
        if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise UnsafeArchive(f"member {name!r} has an absolute path")
        if ".." in name.split("/"):
            raise UnsafeArchive(f"member {name!r} contains '..'")
        if "\x00" in name:
            raise UnsafeArchive(f"member {name!r} contains a NUL byte")
        path = _normal(name)
        if member.kind == OTHER:
            raise UnsafeArchive(f"member {name!r} is a device file, FIFO or other special file")
        parents = [path.rsplit("/", depth)[0] for depth in range(1, path.count("/") + 1)]
        through = next((p for p in parents if p in links), None)
        if through is not None:
            raise UnsafeArchive(f"member {name!r} passes through the link {through!r}")
        if member.kind == SYMLINK:
            target = member.linkname
            if target.startswith("/"):
                raise UnsafeArchive(f"symlink {name!r} points to the absolute path {target!r}")
            if _escapes(posixpath.normpath(posixpath.join(posixpath.dirname(path), target))):
                raise UnsafeArchive(f"symlink {name!r} -> {target!r} points outside the release")
            links.add(path)
        elif member.kind == HARDLINK:
            target = member.linkname
            if target.startswith("/") or _escapes(posixpath.normpath(target)):
                raise UnsafeArchive(f"hard link {name!r} -> {target!r} points outside the release")
            links.add(path)
        total += max(member.size, 0)
        if total > limits.max_bytes:
            raise UnsafeArchive(f"archive expands to more than {limits.max_bytes} bytes (the size cap)")
        checked.append(member)
    return checked


def extract(archive: Path, destination: Path, limits: Limits = DEFAULT_LIMITS) -> int:
    """Check every member, then extract into `destination`; returns the bytes written.

    Raises UnsafeArchive for a refused or unreadable archive; nothing is extracted unless
    every member passed.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            infos = []
            for info in tar:
                infos.append(info)
                if len(infos) > limits.max_members:
                    raise UnsafeArchive(f"archive has more than {limits.max_members} members")
            check_members((Member.from_tarinfo(i) for i in infos), limits)
            tar.extractall(destination, members=infos, filter="data")
            return sum(i.size for i in infos if i.isreg())
    except (tarfile.TarError, EOFError, OSError) as err:
        if isinstance(err, tarfile.FilterError):
            raise UnsafeArchive(f"refused by tarfile's data filter: {err}") from err
        raise UnsafeArchive(f"archive cannot be read: {err}") from err
