"""The public types of an archive and the checks every member and option must pass.

A member path is checked here once, before any byte is written, so that every format below
holds only relative, normalised UTF-8 paths that mean the same on every system.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from projectgen.generation.manifest import ProjectFile

DEFAULT_LEVEL = 6
DEFAULT_MTIME = 315532800
"""1980-01-01T00:00:00Z: the earliest time a zip entry can hold."""

CHUNK = 1 << 20
"""Files are read, and the gzip stream is cut into blocks, in pieces of this size."""

SHA256_RE = re.compile(r"[0-9a-f]{64}")
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_BAD_PATH_CHAR_RE = re.compile(r"[\x00-\x1f\x7f\\]")


class ArchiveError(ValueError):
    """The archive cannot be made from these members: the message names the file and what to do."""


@dataclass(frozen=True, slots=True)
class ArchiveMember:
    path: str
    """POSIX path relative to the tree root."""
    size: int
    sha256: str | None
    """Expected SHA-256 of the content, or None to check only the size."""
    executable: bool = False
    target: str | None = None
    """A symlink's target; `size` and `sha256` are then those of its UTF-8 bytes."""

    @classmethod
    def from_project_file(cls, f: ProjectFile) -> ArchiveMember:
        return cls(path=f.path, size=f.size, sha256=f.sha256, executable=f.executable, target=f.target)


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    path: Path
    size: int
    sha256: str
    """SHA-256 of the archive bytes, computed while they were written."""
    entries: int
    """Entries in the archive, directory entries included (what `tar -t | wc -l` counts)."""
    warnings: list[str] = field(default_factory=list)
    """Things that are valid but may bite a user, e.g. a zip entry Windows cannot extract."""


def resolve_mtime(mtime: int | None = None) -> int:
    """The timestamp of every entry: `mtime`, else `SOURCE_DATE_EPOCH`, else 1980-01-01."""
    if mtime is None:
        raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
        if not raw:
            return DEFAULT_MTIME
        try:
            mtime = int(raw)
        except ValueError:
            raise ArchiveError(
                f"SOURCE_DATE_EPOCH={raw!r} is not an integer number of seconds; fix or unset it"
            ) from None
    if isinstance(mtime, bool) or not isinstance(mtime, int) or mtime < 0:
        raise ArchiveError(f"mtime {mtime!r} must be a non-negative integer (seconds since 1970)")
    return mtime


def validate_prefix(prefix: str) -> str:
    """The top-level folder: one plain path segment."""
    if (
        not isinstance(prefix, str)
        or prefix in ("", ".", "..")
        or "/" in prefix
        or "\\" in prefix
        or _CONTROL_RE.search(prefix)
        or len(prefix.encode("utf-8", "surrogatepass")) > 255
    ):
        raise ArchiveError(
            f"archive prefix {prefix!r} must be one folder name: not empty, not '.' or '..', "
            "no '/', '\\' or control characters, at most 255 bytes"
        )
    _check_utf8(prefix, "archive prefix")
    return prefix


def validate_member_path(path: str) -> str:
    """A relative POSIX path that stays inside the tree and means the same on every system."""
    if not isinstance(path, str) or not path:
        raise ArchiveError(f"member path {path!r} is empty or not a string")
    bad = _BAD_PATH_CHAR_RE.search(path)
    if bad is not None:
        if bad.group() == "\\":
            raise ArchiveError(
                f"member path {path!r} contains a backslash, which Windows tools read as a separator; "
                "rename the file"
            )
        what = "a NUL byte" if bad.group() == "\x00" else "a control character"
        raise ArchiveError(f"member path {path!r} contains {what}")
    if path[0] == "/":
        raise ArchiveError(f"member path {path!r} is absolute; paths must be relative to the tree")
    if len(path) >= 2 and path[1] == ":" and path[0].isalpha():
        raise ArchiveError(f"member path {path!r} starts with a drive letter")
    wrapped = f"/{path}/"
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped:
        raise ArchiveError(
            f"member path {path!r} has an empty, '.' or '..' segment; "
            "use a normalised relative path such as 'src/app.py'"
        )
    if not path.isascii():
        _check_utf8(path, "member path")
    return path


def _check_utf8(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ArchiveError(f"{what} {text!r} is not valid UTF-8; rename the file") from None


def windows_reserved(path: str) -> str | None:
    """The first segment of `path` that Windows reserves for a device (CON, NUL, COM1 ...), if any."""
    for segment in path.split("/"):
        stem = segment.split(".", 1)[0].rstrip(" ").upper()
        if stem in _WINDOWS_RESERVED:
            return segment
    return None


class Format(Protocol):
    """One archive format: directories and files in archive order, then `finish`."""

    def add_dir(self, name: str) -> None: ...

    def add_file(self, name: str, m: ArchiveMember, content: bytes | Iterator[bytes]) -> None:
        """`content` is the whole file when it is at most CHUNK bytes, else an iterator of pieces."""

    def add_link(self, name: str, m: ArchiveMember) -> None:
        """A symlink to `m.target` (already checked against the tree and the disk)."""

    def finish(self) -> None: ...
