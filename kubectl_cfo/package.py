"""A release directory packed into a reproducible `tar.gz`: the same tree gives the same bytes, so
the same sha256, on any machine and in any checkout.

What makes it reproducible: members sorted by path; every mtime the same (SOURCE_DATE_EPOCH when
the build sets it, the reproducible-builds convention, else 1980-01-01); owner 0:0 with no
names; modes reduced to what the agent restores (0644, 0755 for executables and directories);
hard links stored as plain files; and gzip's header without a file name or time. A checkout
sets every file's mtime to the moment of the checkout, so real mtimes would change the bytes of
every build. A fixed mtime is harmless to the app: each release is extracted into a directory of
its own, so nothing (bootsnap's cache included) compares one release's files to another's by time.

What is left out: `.cfoignore` rules (gitignore's syntax, a subset: see `parse_ignore`) after
the defaults, which leave out `.git` and `node_modules` anywhere and the contents of the app's
`log/` and `tmp/` (the directories themselves stay, empty, as Rails expects them to exist).
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import os
import stat
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from customer_friendly.contract import archive as checks

IGNORE_FILE = ".cfoignore"
DEFAULT_IGNORE = (".git", "node_modules", "/log/*", "/tmp/*")
"""Left out of every release; a `.cfoignore` adds rules after these, and `!rule` takes one back."""

DEFAULT_MTIME = 315532800
"""1980-01-01T00:00:00Z: the mtime of every member when SOURCE_DATE_EPOCH is not set."""


class PackError(ValueError):
    """The directory cannot be packed into a release; the message says which path and why."""


@dataclass(frozen=True)
class IgnoreRule:
    """One line of a `.cfoignore`: gitignore's syntax without `**`."""

    pattern: str
    negated: bool = False
    directory_only: bool = False
    anchored: bool = False
    """Matched against the whole path from the app's root, not against the name at any depth."""

    def matches(self, path: str, is_dir: bool) -> bool:
        if self.directory_only and not is_dir:
            return False
        if self.anchored:
            return fnmatch.fnmatchcase(path, self.pattern)
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], self.pattern)


def parse_ignore(lines: Iterable[str]) -> list[IgnoreRule]:
    """Rules from gitignore-style lines: `#` comments and blank lines skipped; `!` negates; a
    trailing `/` matches directories only; a `/` at the start or in the middle anchors the rule
    at the app's root; otherwise it matches a name at any depth. Wildcards are fnmatch's."""
    rules = []
    for raw in lines:
        line = raw.rstrip("\n").rstrip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line[1:] if negated else line
        directory_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        if line:
            rules.append(IgnoreRule(line.lstrip("/"), negated, directory_only, anchored))
    return rules


def is_ignored(path: str, is_dir: bool, rules: Iterable[IgnoreRule]) -> bool:
    """The last rule that matches decides, as in gitignore."""
    ignored = False
    for rule in rules:
        if rule.matches(path, is_dir):
            ignored = not rule.negated
    return ignored


@dataclass(frozen=True)
class Entry:
    """One member to pack: its path in the release, what it is, and where its data comes from."""

    path: str
    kind: str
    source: Path
    size: int = 0
    executable: bool = False
    linkname: str = ""

    def member(self) -> checks.Member:
        mode = checks.EXEC_MODE if self.executable else checks.FILE_MODE
        return checks.Member(self.path, self.kind, self.size, self.linkname, mode)


def _entry(path: str, source: Path, info: os.stat_result) -> Entry:
    if stat.S_ISLNK(info.st_mode):
        return Entry(path, checks.SYMLINK, source, linkname=os.readlink(source))
    if stat.S_ISDIR(info.st_mode):
        return Entry(path, checks.DIRECTORY, source)
    if stat.S_ISREG(info.st_mode):
        return Entry(path, checks.REGULAR, source, info.st_size, bool(info.st_mode & 0o111))
    return Entry(path, checks.OTHER, source)  # a socket, FIFO or device: the checks say so


def collect(root: Path, rules: list[IgnoreRule]) -> list[Entry]:
    """Every entry under `root` that no rule leaves out, sorted by path; links are not followed."""
    if not root.is_dir():
        raise PackError(f"{root} is not a directory")
    entries: list[Entry] = []
    pending = [""]
    while pending:
        relative = pending.pop()
        directory = root / relative if relative else root
        try:
            children = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as err:
            raise PackError(f"cannot read {directory}: {err.strerror or err}") from err
        for child in children:
            path = f"{relative}/{child.name}" if relative else child.name
            info = child.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(info.st_mode)
            if is_ignored(path, is_dir, rules):
                continue
            entries.append(_entry(path, Path(child.path), info))
            if is_dir:
                pending.append(path)
    return sorted(entries, key=lambda e: e.path)


def _tarinfo(entry: Entry, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
    if entry.kind == checks.DIRECTORY:
        info.type, info.mode = tarfile.DIRTYPE, checks.DIR_MODE
    elif entry.kind == checks.SYMLINK:
        info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, entry.linkname
    else:
        info.type, info.size = tarfile.REGTYPE, entry.size
        info.mode = checks.EXEC_MODE if entry.executable else checks.FILE_MODE
    return info


def write_archive(entries: Iterable[Entry], out: BinaryIO, mtime: int) -> None:
    """The entries as a gzip'd tar whose bytes depend only on the entries' paths, kinds and data."""
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = _tarinfo(entry, mtime)
            if entry.kind != checks.REGULAR:
                tar.addfile(info)
                continue
            with entry.source.open("rb") as data:
                if os.fstat(data.fileno()).st_size != entry.size:
                    raise PackError(f"{entry.path} changed while it was being packed")
                tar.addfile(info, data)


class _Hashing:
    """A file the archive is written to, hashed as it is written: no second read of it."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.digest = file, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


@dataclass(frozen=True)
class Packed:
    """A packed release: where its archive is, and what it holds."""

    archive: Path
    sha256: str
    size: int
    """Bytes of the archive."""
    files: int
    content_bytes: int
    """Bytes of the files in it, unpacked."""


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH when the build sets it (e.g. the commit's time), else DEFAULT_MTIME."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not value:
        return DEFAULT_MTIME
    if not value.isdigit():
        raise PackError(f"SOURCE_DATE_EPOCH must be a whole number of seconds, not {value!r}")
    return int(value)


def ignore_rules(root: Path) -> list[IgnoreRule]:
    """The defaults, then the app's own `.cfoignore`, if it has one."""
    rules = parse_ignore(DEFAULT_IGNORE)
    own = root / IGNORE_FILE
    if own.is_file():
        rules += parse_ignore(own.read_text(encoding="utf-8").splitlines())
    return rules


def pack(root: Path, archive: Path, *, mtime: int | None = None, limits: checks.Limits = checks.DEFAULT_LIMITS,
         on_progress: Callable[[str], None] | None = None) -> Packed:
    """Pack `root` into `archive` after the agent's own member checks (so what publishes,
    installs); PackError names the first path the agent would refuse."""
    entries = collect(root, ignore_rules(root))
    if not entries:
        raise PackError(f"{root} has nothing to release (empty, or every path is ignored)")
    try:
        checks.check_members([e.member() for e in entries], limits)
    except checks.UnsafeArchive as err:
        raise PackError(f"the agent would refuse this release: {err}") from err
    if on_progress:
        on_progress(f"packing {len(entries)} entries from {root}")
    with archive.open("wb") as file:
        out = _Hashing(file)
        write_archive(entries, out, source_date_epoch() if mtime is None else mtime)  # type: ignore[arg-type]
    digest = out.digest
    regular = [e for e in entries if e.kind == checks.REGULAR]
    return Packed(archive, digest.hexdigest(), archive.stat().st_size, len(regular), sum(e.size for e in regular))

