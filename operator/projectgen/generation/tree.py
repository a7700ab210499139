"""The one place that writes files of a generated tree, and records them as it goes.

Every write goes through `TreeWriter`: parents are created one segment at a time and
checked (a real directory, resolving inside the root), the file is opened with
O_CREAT|O_EXCL|O_NOFOLLOW (an earlier source's file at the same path is removed
first), and size, SHA-256, type and preview come from the same bytes that are
written, so nothing is read back. Template output is hard-linked in (same file
system) and read once.

A symlink (`add_symlink`, from a template that preserves them) is created with `os.symlink`,
never followed, and recorded with its target; `check_links` resolves the links over the
project's own entries (`links.py`) and refuses any that leaves it or dangles.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import unicodedata
from collections import defaultdict
from pathlib import Path

from projectgen.generation.errors import GenerationError
from projectgen.generation.filetype import SNIFF_BYTES, classify, preview, preview_bytes
from projectgen.generation.links import SYMLINK_TYPE, LinkError, Tree, describe, target_problem
from projectgen.generation.manifest import PREVIEW_CHARS, Manifest, ProjectFile
from projectgen.generation.paths import is_within

_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EACCES})


def file_mode(executable: bool) -> int:
    return 0o755 if executable else 0o644


class TreeWriter:
    """Writes files under `root` (an existing directory) by relative path.

    `where` names the spec entry a file comes from ("sources[1].configMap: key 'x'");
    it is used in error messages. Paths must already be checked with `paths.check_path`.
    """

    def __init__(self, root: Path, *, max_preview: int = PREVIEW_CHARS) -> None:
        self.root = os.path.realpath(root)
        self.max_preview = max_preview
        self._head_size = max(SNIFF_BYTES, preview_bytes(max_preview))
        self._files: dict[str, ProjectFile] = {}
        self._origin: dict[str, str] = {}
        self._dirs: dict[str, str] = {}
        """Directory -> the first file that needed it (for conflict messages)."""
        self._source: set[str] = set()
        self.skip_if_exists: list[str] = []
        """The templates' `_skip_if_exists` patterns (copier's update semantics: the team's files
        once they exist), recorded in the manifest for the export's merge."""

    # -- sources ---------------------------------------------------------------------------------

    def start_source(self) -> None:
        """Paths written from now on belong to a new source: they may override earlier ones,
        but not each other."""
        self._source = set()

    # -- writing ---------------------------------------------------------------------------------

    def write_bytes(self, path: str, data: bytes, *, executable: bool, where: str) -> ProjectFile:
        full = self._prepare(path, where)
        mode = file_mode(executable)
        fd = self._create(full, path, mode, where)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return self._record(
            path, where, len(data), hashlib.sha256(data).hexdigest(), executable, data[: self._head_size]
        )

    def add_file(self, path: str, source: str, *, executable: bool, where: str) -> ProjectFile:
        """Take the regular file at `source` (outside the tree, e.g. copier's output) into the
        tree at `path`: a hard link when possible, else a copy; then one read for the record."""
        full = self._prepare(path, where)
        mode = file_mode(executable)
        try:
            os.link(source, full, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise self._exists_error(path, where) from exc
            if exc.errno not in _NO_LINK:
                raise
            return self._copy(source, full, path, mode, executable, where)
        fd = os.open(full, _READ_FLAGS)
        try:
            os.fchmod(fd, mode)
            h = hashlib.sha256()
            head = b""
            size = 0
            while chunk := os.read(fd, _CHUNK):
                h.update(chunk)
                size += len(chunk)
                if len(head) < self._head_size:
                    head += chunk[: self._head_size - len(head)]
        finally:
            os.close(fd)
        return self._record(path, where, size, h.hexdigest(), executable, head)

    def add_symlink(self, path: str, target: str, *, where: str) -> ProjectFile:
        """A symlink at `path` to `target`, checked on its own (relative, sane); where it leads is
        checked by `check_links` once the source's entries are all in."""
        problem = target_problem(target)
        if problem is not None:
            raise GenerationError(f"{where}: {describe(path, target)} {problem}")
        full = self._prepare(path, where)
        try:
            os.symlink(target, full)
        except FileExistsError as exc:
            raise self._exists_error(path, where) from exc
        raw = target.encode("utf-8")
        record = ProjectFile(
            path=path,
            name=path.rpartition("/")[2],
            type=SYMLINK_TYPE,
            size=len(raw),
            sha256=hashlib.sha256(raw).hexdigest(),
            target=target,
        )
        self._files[path] = record
        self._origin[path] = where
        return record

    def check_links(self, paths: list[str] | None = None) -> None:
        """Every link of `paths` (default: all) resolves, over the entries written so far, to a
        file or directory of the project; else a GenerationError naming the link's source."""
        links = {p: f.target for p, f in self._files.items() if f.target is not None}
        if not links:
            return
        files = {p for p, f in self._files.items() if f.target is None}
        tree = Tree(files, self._dirs, links)
        for path in sorted(links if paths is None else paths):
            try:
                tree.resolve(path)
            except LinkError as exc:
                raise GenerationError(f"{self._origin[path]}: {exc}") from None

    def _copy(
        self, source: str, full: str, path: str, mode: int, executable: bool, where: str
    ) -> ProjectFile:
        src = os.open(source, _READ_FLAGS)
        try:
            fd = self._create(full, path, mode, where)
            try:
                h = hashlib.sha256()
                head = b""
                size = 0
                while chunk := os.read(src, _CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    if len(head) < self._head_size:
                        head += chunk[: self._head_size - len(head)]
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        finally:
            os.close(src)
        return self._record(path, where, size, h.hexdigest(), executable, head)

    # -- results ---------------------------------------------------------------------------------

    def manifest(self) -> Manifest:
        return Manifest.build(self._files.values(), skip_if_exists=self.skip_if_exists)

    def case_collisions(self) -> list[str]:
        """Paths (files or directories) that differ only in case, or in Unicode normalisation
        (NFC 'é' versus NFD 'e' + U+0301): fine here, but one overwrites the other on a file system
        that ignores the difference (macOS ignores both, Windows case)."""
        groups: defaultdict[str, list[str]] = defaultdict(list)
        for p in self._files:
            groups[unicodedata.normalize("NFC", p).lower()].append(p)
        for p in self._dirs:
            groups[unicodedata.normalize("NFC", p).lower()].append(p + "/")
        warnings = []
        for g in groups.values():
            if len(g) < 2:
                continue
            if len({unicodedata.normalize("NFC", p) for p in g}) < len(g):
                warnings.append(
                    "paths differ only in Unicode normalisation (NFC/NFD): "
                    + ", ".join(ascii(p) for p in sorted(g))
                    + " (they collide on macOS, whose file systems do not tell them apart)"
                )
            else:
                warnings.append(
                    "paths differ only in case: "
                    + ", ".join(repr(p) for p in sorted(g))
                    + " (they collide on case-insensitive file systems such as macOS and Windows)"
                )
        return warnings

    # -- internals -------------------------------------------------------------------------------

    def _prepare(self, path: str, where: str) -> str:
        if path in self._source:
            raise GenerationError(
                f"{where}: path {path!r} is written twice by this source (also by {self._origin[path]})"
            )
        if path in self._dirs:
            first = self._dirs[path]
            raise GenerationError(
                f"{where}: cannot write file {path!r}: it is a directory, holding {first!r} "
                f"from {self._origin.get(first, 'an earlier source')}"
            )
        parent, _, _ = path.rpartition("/")
        if parent and parent not in self._dirs:
            self._make_parents(parent, path, where)
        full = f"{self.root}/{path}"
        if path in self._files:
            os.unlink(full)
            del self._files[path]
        self._source.add(path)
        return full

    def _make_parents(self, parent: str, path: str, where: str) -> None:
        segments = parent.split("/")
        for i in range(1, len(segments) + 1):
            d = "/".join(segments[:i])
            if d in self._dirs:
                continue
            if d in self._files:
                what = "a symlink" if self._files[d].target is not None else "a file"
                raise GenerationError(
                    f"{where}: cannot write {path!r}: {d!r} is {what}, written by {self._origin[d]}"
                )
            full = f"{self.root}/{d}"
            try:
                os.mkdir(full, 0o755)
            except FileExistsError as exc:
                if not stat.S_ISDIR(os.lstat(full).st_mode):
                    raise GenerationError(
                        f"{where}: cannot write {path!r}: {d!r} exists and is not a directory"
                    ) from exc
            if not is_within(self.root, full):
                raise GenerationError(f"{where}: cannot write {path!r}: {d!r} resolves outside the project")
            self._dirs[d] = path

    def _create(self, full: str, path: str, mode: int, where: str) -> int:
        try:
            return os.open(full, _WRITE_FLAGS, mode)
        except FileExistsError as exc:
            raise self._exists_error(path, where) from exc

    def _exists_error(self, path: str, where: str) -> GenerationError:
        # Only reachable on a case-insensitive file system, where `path` and an earlier path
        # that differs in case are one file.
        return GenerationError(
            f"{where}: cannot write {path!r}: a file of the same name (differing in case?) already "
            "exists, and this file system does not tell them apart"
        )

    def _record(
        self, path: str, where: str, size: int, digest: str, executable: bool, head: bytes
    ) -> ProjectFile:
        name = path.rpartition("/")[2]
        kind, is_text = classify(name, head, executable)
        record = ProjectFile(
            path=path,
            name=name,
            type=kind,
            size=size,
            sha256=digest,
            executable=executable,
            preview=preview(head, self.max_preview) if is_text else None,
        )
        self._files[path] = record
        self._origin[path] = where
        return record
