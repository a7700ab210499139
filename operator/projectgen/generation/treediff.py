"""Two trees of files compared as a reviewer reads them: a stat, then a unified diff per file.

Pure over the file system (no git): `projectgen diff` compares a render with a directory or a
checkout of a repository. VCS metadata (`.git`, ...) is never part of a project, so it is not
compared. Text is UTF-8 without NUL bytes; anything else is reported as binary, as git does.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from projectgen.generation.template import VCS_METADATA


@dataclass(frozen=True)
class Entry:
    data: bytes
    mode: str
    """'100644', '100755' or '120000' (a symlink; data is its target), as git names them."""


@dataclass(frozen=True)
class Change:
    path: str
    before: Entry | None
    after: Entry | None

    @property
    def binary(self) -> bool:
        return any(
            e is not None and e.mode != "120000" and _binary(e.data) for e in (self.before, self.after)
        )

    def lines(self) -> tuple[list[str], list[str]]:
        return (_text(self.before), _text(self.after))


def _binary(data: bytes) -> bool:
    if b"\0" in data:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _text(entry: Entry | None) -> list[str]:
    return entry.data.decode("utf-8").splitlines(keepends=True) if entry is not None else []


def read_tree(root: Path) -> dict[str, Entry]:
    """Every file and symlink under `root` by '/'-separated path (VCS metadata left out)."""
    found: dict[str, Entry] = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d for d in dirs if d not in VCS_METADATA and not os.path.islink(os.path.join(directory, d))
        )
        links = [d for d in os.listdir(directory) if os.path.islink(os.path.join(directory, d))]
        for name in sorted(set(files) | set(links)):
            if name in VCS_METADATA:
                continue
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if os.path.islink(full):
                found[rel] = Entry(os.readlink(full).encode("utf-8", "surrogateescape"), "120000")
            elif os.path.isfile(full):
                mode = "100755" if os.stat(full).st_mode & 0o111 else "100644"
                found[rel] = Entry(Path(full).read_bytes(), mode)
    return found


def diff_trees(before: Path, after: Path) -> list[Change]:
    old, new = read_tree(before), read_tree(after)
    return [
        Change(path, old.get(path), new.get(path))
        for path in sorted(old.keys() | new.keys())
        if old.get(path) != new.get(path)
    ]


def _counts(change: Change) -> tuple[int, int]:
    if change.binary:
        return 0, 0
    a, b = change.lines()
    added = removed = 0
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op != "equal":
            removed += i2 - i1
            added += j2 - j1
    return added, removed


def stat(changes: list[Change], width: int = 40) -> str:
    """As `git diff --stat`: one line per file, then the totals."""
    if not changes:
        return ""
    counts = [_counts(c) for c in changes]
    name_width = max(len(c.path) for c in changes)
    most = max((a + r for a, r in counts), default=0) or 1
    lines = []
    for change, (added, removed) in zip(changes, counts, strict=True):
        if change.binary:
            size = lambda e: len(e.data) if e else 0  # noqa: E731
            lines.append(
                f" {change.path:<{name_width}} | Bin {size(change.before)} -> {size(change.after)} bytes"
            )
            continue
        scale = min(1.0, width / most)
        bar = "+" * round(added * scale) + "-" * round(removed * scale)
        lines.append(f" {change.path:<{name_width}} | {added + removed:>4} {bar}")
    total_added = sum(a for a, _ in counts)
    total_removed = sum(r for _, r in counts)
    summary = [_plural(len(changes), "file") + " changed"]
    if total_added:
        summary.append(_plural(total_added, "insertion") + "(+)")
    if total_removed:
        summary.append(_plural(total_removed, "deletion") + "(-)")
    lines.append(" " + ", ".join(summary))
    return "\n".join(lines) + "\n"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def patch(changes: list[Change]) -> str:
    """A unified diff (a/ the target, b/ the render), git's headers for new, deleted and mode changes."""
    out: list[str] = []
    for change in changes:
        before, after = change.before, change.after
        out.append(f"diff --git a/{change.path} b/{change.path}\n")
        if before is None and after is not None:
            out.append(f"new file mode {after.mode}\n")
        elif after is None and before is not None:
            out.append(f"deleted file mode {before.mode}\n")
        elif before is not None and after is not None and before.mode != after.mode:
            out.append(f"old mode {before.mode}\nnew mode {after.mode}\n")
        if change.binary:
            out.append(
                f"Binary files {_name('a', change.path, before)} and {_name('b', change.path, after)} differ\n"
            )
            continue
        a, b = change.lines()
        if a == b:
            continue
        for line in difflib.unified_diff(
            a, b, _name("a", change.path, before), _name("b", change.path, after)
        ):
            out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _name(side: str, path: str, entry: Entry | None) -> str:
    return f"{side}/{path}" if entry is not None else "/dev/null"
