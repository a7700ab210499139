"""Where each resource's files live in the operator's volume, and how they change atomically.

```
<root>/projects/<namespace>/<name>/<uid>/<key>/{tree/, manifest.json}
<root>/exports/<namespace>/<name>/<uid>/<file>
<root>/.staging/      work in progress and trash; same file system, emptied at start-up
```
A result is built in a staging directory and renamed into place when complete, so a
reader sees a whole tree or none. Removal renames into `.staging/trash-*` first, then
deletes: readers never see half a tree. `<key>` is the content hash (or generation) of a
render; `<uid>` separates a recreated resource from the one deleted before it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PROJECTS = "projects"
EXPORTS = "exports"
STAGING = ".staging"
TREE = "tree"
MANIFEST = "manifest.json"

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_UID = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_]{0,126}[A-Za-z0-9])?$")
_KEY = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,127}$")
_PREFIX = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,63}$")


def _segment(value: str, pattern: re.Pattern[str], what: str) -> str:
    """A value used as one path segment: must match its pattern, so it cannot be '..', hold
    '/', or otherwise leave its directory."""
    if not isinstance(value, str) or not pattern.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"invalid {what} {value!r}")
    return value


def _filename(value: str) -> str:
    if (
        not isinstance(value, str)
        or value in ("", ".", "..")
        or "/" in value
        or "\x00" in value
        or "\\" in value
        or len(value.encode("utf-8", "surrogateescape")) > 255
    ):
        raise ValueError(f"invalid file name {value!r}")
    return value


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self.projects = self.root / PROJECTS
        self.exports = self.root / EXPORTS
        self.staging_root = self.root / STAGING
        for d in (self.projects, self.exports, self.staging_root):
            d.mkdir(parents=True, exist_ok=True)

    # -- staging ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def staging(self, prefix: str = "work") -> Iterator[Path]:
        """A fresh directory under `.staging`, removed on exit unless it was placed (renamed
        away) in the meantime."""
        path = Path(tempfile.mkdtemp(prefix=_segment(prefix, _PREFIX, "prefix") + "-", dir=self.staging_root))
        try:
            yield path
        finally:
            if os.path.lexists(path):
                self.discard(path)

    def clean_staging(self) -> int:
        """Remove everything in `.staging` (left by a crash); run at start-up, before any work.
        Returns how many entries were removed."""
        removed = 0
        with os.scandir(self.staging_root) as entries:
            names = [e.name for e in entries]
        for name in names:
            path = self.staging_root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            removed += 1
        return removed

    def discard(self, path: Path) -> None:
        """Remove a file or tree inside the volume: first renamed into `.staging/trash-*` (one
        atomic step for readers), then deleted. A missing path is fine."""
        path = Path(os.path.abspath(path))
        self._check_inside(path)
        if not os.path.lexists(path):
            return
        trash = self.staging_root / f"trash-{secrets.token_hex(8)}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                trash.unlink()

    # -- projects --------------------------------------------------------------------------------

    def place_project(self, staging_dir: Path, namespace: str, name: str, uid: str, key: str) -> Path:
        """Rename `staging_dir` (holding `tree/` and `manifest.json`) to the resource's `key`
        directory and return that. When `key` is already in place (same content) the existing
        directory is kept and `staging_dir` discarded. Then every other render of this uid, and
        every other uid of this name (a deleted and recreated resource), is removed."""
        staging_dir = Path(os.path.abspath(staging_dir))
        if staging_dir.parent != self.staging_root:
            raise ValueError(f"{staging_dir} is not a staging directory of {self.root}")
        if not (staging_dir / TREE).is_dir() or not (staging_dir / MANIFEST).is_file():
            raise ValueError(f"{staging_dir} must hold {TREE}/ and {MANIFEST}")
        target = self._uid_dir(self.projects, namespace, name, uid) / _segment(key, _KEY, "key")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            self.discard(staging_dir)
        else:
            for entry in os.listdir(staging_dir):
                if entry not in (TREE, MANIFEST):
                    self.discard(staging_dir / entry)
            try:
                os.rename(staging_dir, target)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                self.discard(staging_dir)
            else:
                _fsync_dir(target.parent)
        for other in target.parent.iterdir():
            if other.name != target.name:
                self.discard(other)
        name_dir = target.parent.parent
        for other in name_dir.iterdir():
            if other.name != uid:
                self.discard(other)
        return target

    def remove_project(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Remove the files of a resource: one uid, or every uid of the name."""
        self._remove(self.projects, namespace, name, uid)

    # -- exports ---------------------------------------------------------------------------------

    def export_path(self, namespace: str, name: str, uid: str, filename: str) -> Path:
        """Where an export's archive goes (parents created). Write it beside, then rename."""
        d = self._uid_dir(self.exports, namespace, name, uid)
        d.mkdir(parents=True, exist_ok=True)
        return d / _filename(filename)

    def export_file(self, namespace: str, name: str, uid: str, filename: str) -> Path:
        """Where an export's archive is (nothing created): for readers."""
        return self._uid_dir(self.exports, namespace, name, uid) / _filename(filename)

    def remove_export(self, namespace: str, name: str, uid: str | None = None) -> None:
        self._remove(self.exports, namespace, name, uid)

    # -- internals -------------------------------------------------------------------------------

    def _name_dir(self, base: Path, namespace: str, name: str) -> Path:
        return base / _segment(namespace, _NAMESPACE, "namespace") / _segment(name, _NAME, "name")

    def _uid_dir(self, base: Path, namespace: str, name: str, uid: str) -> Path:
        return self._name_dir(base, namespace, name) / _segment(uid, _UID, "uid")

    def _remove(self, base: Path, namespace: str, name: str, uid: str | None) -> None:
        name_dir = self._name_dir(base, namespace, name)
        if uid is None:
            self.discard(name_dir)
        else:
            self.discard(self._uid_dir(base, namespace, name, uid))
            with contextlib.suppress(OSError):
                name_dir.rmdir()
        with contextlib.suppress(OSError):
            name_dir.parent.rmdir()

    def _check_inside(self, path: Path) -> None:
        parent = os.path.realpath(path.parent)
        root = str(self.root)
        if (
            path.parent == self.root
            or os.path.commonpath([root, parent]) != root
            or path.name in ("", ".", "..")
        ):
            raise ValueError(f"{path} is not inside {self.root}")


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (the directory entry is what changed)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
