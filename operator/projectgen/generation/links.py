"""Symlinks inside a project: which ones are kept, resolved over the project's own entries.

A project may hold a symlink (from a template with copier's `_preserve_symlinks: true`) only
when its target is relative and, following every link on the way as the kernel would, ends at a
file or directory of the project itself. Refused, each naming the link: an absolute target, a
target that climbs above the project root, a chain of links one of which does so, a link that
dangles (directly or at the end of a chain: its target was excluded or not rendered), a loop.

Resolution works on the project's entries (files, directories, links), never on the disk:
`os.path.realpath` would let `../<tree dir>/x` leave the tree and come back in, which breaks as
soon as the tree is extracted under another name, and would follow links out of the staging
directory. `..` at the project root is an escape, whatever lies above it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping

MAX_HOPS = 40
"""Links followed while resolving one target, as Linux's MAXSYMLINKS."""
MAX_TARGET = 1024
SYMLINK_TYPE = "symlink"
"""The manifest `type` of a link (identify's tag for one)."""


class LinkError(ValueError):
    """A link that cannot be part of a project: the message names it and says why."""


def target_problem(target: str) -> str | None:
    """Why a link target is refused on its own, before resolution, or None."""
    if not target:
        return "has an empty target"
    if "\x00" in target:
        return "has a NUL byte in its target"
    try:
        size = len(target.encode("utf-8"))
    except UnicodeEncodeError:
        return "has a target that is not valid UTF-8"
    if size > MAX_TARGET:
        return f"has a target longer than {MAX_TARGET} bytes"
    if target.startswith("/"):
        return "has an absolute target; only relative links inside the project are kept"
    if "\\" in target:
        return "has a '\\' in its target, which Windows reads as a separator"
    return None


def describe(path: str, target: str) -> str:
    return f"symlink {path!r} -> {target!r}"


class Tree:
    """The entries of a project: `files` (regular), `dirs` (every parent, '' excluded) and
    `links` (path -> target)."""

    def __init__(self, files: Collection[str], dirs: Collection[str], links: Mapping[str, str]) -> None:
        self.files = files
        self.dirs = dirs
        self.links = links

    @classmethod
    def of(cls, entries: Iterable[tuple[str, str | None]]) -> Tree:
        """From (path, target or None for a regular file), as a manifest lists them."""
        files: set[str] = set()
        dirs: set[str] = set()
        links: dict[str, str] = {}
        for path, target in entries:
            if target is None:
                files.add(path)
            else:
                links[path] = target
            parent = path.rpartition("/")[0]
            while parent and parent not in dirs:
                dirs.add(parent)
                parent = parent.rpartition("/")[0]
        return cls(files, dirs, links)

    def resolve(self, path: str) -> tuple[str, bool]:
        """(resolved path, is a directory) of the link at `path`; LinkError if it is refused."""
        target = self.links[path]
        problem = target_problem(target)
        if problem is not None:
            raise LinkError(f"{describe(path, target)} {problem}")
        where = path.rpartition("/")[0]
        parts = where.split("/") if where else []
        pending = deque(target.split("/"))
        hops = 0
        current = path
        while pending:
            segment = pending.popleft()
            if segment in ("", "."):
                continue
            if segment == "..":
                if not parts:
                    via = "" if current == path else f" (through {describe(current, self.links[current])})"
                    raise LinkError(f"{describe(path, target)} points outside the project{via}")
                parts.pop()
                continue
            candidate = "/".join((*parts, segment))
            if candidate in self.links:
                hops += 1
                if hops > MAX_HOPS:
                    raise LinkError(f"{describe(path, target)} is a loop of links (more than {MAX_HOPS})")
                current = candidate
                nested = self.links[candidate]
                problem = target_problem(nested)
                if problem is not None:
                    raise LinkError(
                        f"{describe(path, target)} leads to {describe(candidate, nested)}, which {problem}"
                    )
                pending.extendleft(reversed(nested.split("/")))
                continue
            if candidate in self.dirs:
                parts.append(segment)
                continue
            if candidate in self.files:
                if not pending:
                    return candidate, False
                raise LinkError(f"{describe(path, target)} dangles: {candidate!r} is a file, not a directory")
            raise LinkError(
                f"{describe(path, target)} dangles: {candidate!r} is not in the project "
                "(dangling links are not kept)"
            )
        return "/".join(parts), True

    def check(self, paths: Iterable[str] | None = None) -> None:
        """Resolve every link of `paths` (default: all); raise LinkError for the first refused one
        in path order."""
        for path in sorted(self.links if paths is None else paths):
            self.resolve(path)
