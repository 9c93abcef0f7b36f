"""The rules a release archive's members must follow, pure: the one judge of what a release may
contain, shared by the agent (before it extracts anything) and `kubectl cfo publish` (before it
uploads anything), so that what publishes, installs.

`check_members` builds the archive's final tree (every member and the directories they imply),
resolves every link against that whole tree (`resolve`), and refuses with a one-line message
naming the member: absolute paths, `..`, NUL bytes, paths deeper than the limit, paths through a
link or a file, names the agent reserves, duplicates, device files, FIFOs and sparse files, links
that leave the release or loop, and archives over the caps. Why the whole tree at once: a chain of
links that each stay inside (`x -> y/..`, `y -> z/..`, `z -> w/..`, `w -> .`) reaches outside once
all exist, so no link can be judged alone.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

REGULAR, DIRECTORY, SYMLINK, HARDLINK, OTHER = "file", "dir", "symlink", "hardlink", "other"

MARKER = ".cfo-release.json"
"""Written last into a release directory: the release is complete."""
PREVIOUS_RECORD = ".cfo-previous"
"""In the current release's directory: the release that was current before it."""
RESERVED_PREFIX = ".cfo-"
"""Top-level names starting with this are the agent's; an archive may not bring one."""

MAX_LINK_HOPS = 40
"""Links followed while resolving one path; Linux gives up (ELOOP) after 40 as well."""
MAX_NAME_LENGTH = 4096
"""Longest member name: no program could open a longer path (PATH_MAX), and it bounds the checks' work."""

FILE_MODE, EXEC_MODE, DIR_MODE = 0o644, 0o755, 0o755


class UnsafeArchive(ValueError):
    """The archive is refused; the message names the member and the rule it breaks."""


class LinkError(ValueError):
    """A path cannot be resolved inside the release: it leaves it ("outside"), or links loop ("loop")."""

    def __init__(self, kind: str, reason: str, via: tuple[str, ...]) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.via = via
        """The links followed, in order."""


@dataclass(frozen=True)
class Member:
    """What the checks need of a tar header."""

    name: str
    kind: str
    size: int = 0
    linkname: str = ""
    mode: int = FILE_MODE
    """The header's permission bits; only "any exec bit" survives extraction."""

    @classmethod
    def from_tarinfo(cls, info: tarfile.TarInfo) -> Member:
        if info.issparse():
            kind = OTHER  # never needed for code, and its data layout is tarfile's business
        elif info.isreg():
            kind = REGULAR
        elif info.isdir():
            kind = DIRECTORY
        elif info.issym():
            kind = SYMLINK
        elif info.islnk():
            kind = HARDLINK
        else:
            kind = OTHER
        return cls(info.name, kind, info.size, info.linkname, info.mode)

    @property
    def path(self) -> str:
        """The name normalized: no `./`, no `//`, no trailing slash; "." is the release itself."""
        return normal(self.name)

    @property
    def extracted_mode(self) -> int:
        if self.kind == DIRECTORY:
            return DIR_MODE
        return EXEC_MODE if self.mode & 0o111 else FILE_MODE


@dataclass(frozen=True)
class Limits:
    """What an archive may hold. One place (AgentConfig.limits) decides them for both modes."""

    max_bytes: int = 2 * 1024**3
    """Largest download, and largest total size of the extracted files."""
    max_members: int = 200_000
    max_depth: int = 256
    """Most path components in a member's name. Real code trees stay far below; much deeper
    ones break tools that recurse (shutil.rmtree on 3.11, rm in some shells) and PATH_MAX."""


DEFAULT_LIMITS = Limits()


def normal(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return posixpath.normpath(name) if name else "."


def _parents(path: str) -> Iterator[str]:
    """The directories above a path, outermost first: `a/b/c` gives `a`, `a/b`."""
    parts = path.split("/")
    for depth in range(1, len(parts)):
        yield "/".join(parts[:depth])


def resolve(links: Mapping[str, str], path: str, max_hops: int = MAX_LINK_HOPS) -> str:
    """Where `path` ends up in a tree whose symlinks are `links` (path -> target), walked as the
    kernel walks it: component by component, a link's target taking its place, `..` going to
    the parent of the directory reached so far. Paths are relative to the release root.

    Returns the normalized result ("." for the root). Raises LinkError when the walk goes above
    the root or reaches an absolute target, or after `max_hops` links (a loop). Components that
    are not links count as directories, which can only let the walk reach more places.
    """
    pending = list(reversed(path.split("/")))  # a stack: the next component last
    reached: list[str] = []
    via: list[str] = []
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not reached:
                raise LinkError("outside", "goes above the release", tuple(via))
            reached.pop()
            continue
        candidate = "/".join([*reached, part])
        target = links.get(candidate)
        if target is None:
            reached.append(part)
            continue
        via.append(candidate)
        if len(via) > max_hops:
            raise LinkError("loop", f"follows more than {max_hops} links", tuple(via))
        if target.startswith("/"):
            raise LinkError("outside", f"reaches the absolute path {target!r}", tuple(via))
        pending.extend(reversed(target.split("/")))
    return "/".join(reached) or "."


def _shown(name: str) -> str:
    """A member name for a one-line message: quoted, and shortened when it is very long."""
    return repr(name) if len(name) <= 120 else f"{name[:60]!r}...{name[-40:]!r} ({len(name)} characters)"


def _check_name(member: Member, limits: Limits) -> str:
    """The member's normal path, once its name, type and link target pass every check."""
    name = member.name
    _check_spelling(name)
    path = normal(name)
    depth = path.count("/") + 1
    if depth > limits.max_depth:
        raise UnsafeArchive(f"member {_shown(name)} is {depth} directories deep; the limit is {limits.max_depth}")
    _check_kind(member, path)
    if member.kind in (SYMLINK, HARDLINK):
        _check_link_target(member)
    return path


def _check_spelling(name: str) -> None:
    """The raw name, before `normal` sees it: no NUL, not absolute, no '..', not too long."""
    if "\x00" in name:
        raise UnsafeArchive(f"member {name!r} contains a NUL byte")
    if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"member {name!r} has an absolute path")
    if ".." in name.split("/"):
        raise UnsafeArchive(f"member {name!r} contains '..'")
    if len(name) > MAX_NAME_LENGTH:
        raise UnsafeArchive(f"member {_shown(name)} is longer than {MAX_NAME_LENGTH} characters (PATH_MAX)")


def _check_kind(member: Member, path: str) -> None:
    """No special files, the release root only as a directory, and nothing in the agent's own names."""
    name = member.name
    if member.kind == OTHER:
        raise UnsafeArchive(f"member {name!r} is a device file, FIFO, sparse or other special file")
    if path == "." and member.kind != DIRECTORY:
        raise UnsafeArchive(f"member {name!r} names the release directory itself but is not a directory")
    if path.split("/", 1)[0].startswith(RESERVED_PREFIX):
        raise UnsafeArchive(f"member {name!r} collides with the agent's own files ({RESERVED_PREFIX}* at the top "
                            f"of a release, such as {MARKER})")


def _check_link_target(member: Member) -> None:
    """A link's target on its own (where it leads is judged later, against the whole tree)."""
    name = member.name
    what = "symlink" if member.kind == SYMLINK else "hard link"
    if "\x00" in member.linkname:
        raise UnsafeArchive(f"{what} {name!r} has a NUL byte in its target {member.linkname!r}")
    if not member.linkname:
        raise UnsafeArchive(f"{what} {name!r} has an empty target")
    if member.linkname.startswith("/"):
        raise UnsafeArchive(f"{what} {name!r} points to the absolute path {member.linkname!r}")


def _check_tree(tree: Mapping[str, Member]) -> None:
    """Judge every path and link against the final tree: all members at once, in no order."""
    links = {path: m.linkname for path, m in tree.items() if m.kind == SYMLINK}
    for path, member in tree.items():
        for parent in _parents(path):
            above = tree.get(parent)
            if above is None or above.kind == DIRECTORY:
                continue
            if above.kind in (SYMLINK, HARDLINK):
                raise UnsafeArchive(f"member {member.name!r} passes through the link {parent!r}")
            raise UnsafeArchive(f"member {member.name!r} is inside {parent!r}, which is not a directory")
    for path, member in tree.items():
        if member.kind == SYMLINK:
            try:
                resolve(links, posixpath.join(posixpath.dirname(path), member.linkname))
            except LinkError as err:
                what = "points outside the release" if err.kind == "outside" else "loops"
                chain = list(dict.fromkeys(err.via))  # a loop repeats its links: name each once
                shown = ", ".join(map(repr, chain[:8])) + (", ..." if len(chain) > 8 else "")
                through = f" through the links {shown}" if chain else ""
                raise UnsafeArchive(f"symlink {member.name!r} -> {member.linkname!r} {what}: it {err.reason}"
                                    f"{through}") from err
        elif member.kind == HARDLINK:
            hardlink_source(tree, path)


def hardlink_source(tree: Mapping[str, Member], path: str) -> str:
    """The regular file a hard link (chain) names. Tar link names are relative to the archive root."""
    seen: list[str] = []
    current = path
    while tree[current].kind == HARDLINK:
        member = tree[current]
        target = normal(member.linkname)
        if target == ".." or target.startswith("../") or ".." in member.linkname.split("/"):
            raise UnsafeArchive(f"hard link {tree[path].name!r} -> {member.linkname!r} points outside the release")
        if target in seen or len(seen) > MAX_LINK_HOPS:
            raise UnsafeArchive(f"hard link {tree[path].name!r} -> {member.linkname!r} loops")
        seen.append(target)
        if target not in tree:
            raise UnsafeArchive(f"hard link {tree[path].name!r} -> {member.linkname!r}: no such file in the archive")
        if tree[target].kind not in (REGULAR, HARDLINK):
            raise UnsafeArchive(f"hard link {tree[path].name!r} -> {member.linkname!r} must name a regular file")
        current = target
    return current


def check_members(members: Iterable[Member], limits: Limits = DEFAULT_LIMITS) -> list[Member]:
    """Return the members if every one is safe to extract into an empty release directory.

    Every link is judged with all the others in place, so the order of members does not matter.
    """
    checked: list[Member] = []
    tree: dict[str, Member] = {}
    total = 0
    for member in members:
        if len(checked) >= limits.max_members:
            raise UnsafeArchive(f"archive has more than {limits.max_members} members")
        path = _check_name(member, limits)
        earlier = tree.get(path)
        if earlier is not None and not (earlier.kind == member.kind == DIRECTORY):
            raise UnsafeArchive(f"member {member.name!r} appears twice in the archive")
        tree[path] = member
        total += max(member.size, 0)
        if total > limits.max_bytes:
            raise UnsafeArchive(f"archive expands to more than {limits.max_bytes} bytes (the size cap)")
        checked.append(member)
    _check_tree(tree)
    return checked


def plan_directories(members: Iterable[Member]) -> list[str]:
    """Every directory to create, explicit or implied by a deeper member, parents first."""
    wanted: set[str] = set()
    for member in members:
        path = member.path
        wanted.update(_parents(path))
        if member.kind == DIRECTORY and path != ".":
            wanted.add(path)
    return sorted(wanted, key=lambda p: (p.count("/"), p))
