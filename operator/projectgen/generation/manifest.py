"""The file manifest: one record per regular file or symlink of a rendered tree.

`manifest.json` sits beside the tree in the volume and is the contract between
generation (which writes it) and export (which trusts nothing that is not in it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

from projectgen.generation.links import SYMLINK_TYPE

MANIFEST_VERSION = 1
PREVIEW_CHARS = 1000


@dataclass(frozen=True, slots=True)
class ProjectFile:
    path: str
    """POSIX path relative to the tree root."""
    name: str
    type: str
    size: int
    sha256: str
    executable: bool = False
    preview: str | None = None
    target: str | None = None
    """A symlink's target (type `symlink`; size and sha256 are those of the target's UTF-8
    bytes, as git stores a link); None for a regular file."""

    def status_record(self) -> dict[str, object]:
        """The record as it goes into `status.files` (no preview)."""
        record: dict[str, object] = {
            "path": self.path,
            "name": self.name,
            "type": self.type,
            "size": self.size,
            "sha256": self.sha256,
        }
        if self.target is not None:
            record["target"] = self.target
        return record


def content_hash(files: Iterable[ProjectFile]) -> str:
    """One SHA-256 over the sorted manifest: path, mode and content of every file.

    Two trees with the same hash have the same paths, executable bits and bytes, and the same
    links with the same targets (a link's line holds the SHA-256 of its target and the mode
    `link`, so a file whose content is a link's target hashes differently).
    """
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        mode = "link" if f.target is not None else "755" if f.executable else "644"
        h.update(f"{f.sha256} {mode} {f.path}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


@dataclass(slots=True)
class Manifest:
    files: list[ProjectFile] = field(default_factory=list)
    content_hash: str = ""
    total_files: int = 0
    total_size: int = 0
    skip_if_exists: list[str] = field(default_factory=list)
    """The templates' `_skip_if_exists` patterns (gitignore syntax): files a later delivery leaves
    to the team once the repository has them. Not part of contentHash: they change no file."""

    @classmethod
    def build(cls, files: Iterable[ProjectFile], *, skip_if_exists: Iterable[str] = ()) -> Manifest:
        ordered = sorted(files, key=lambda f: f.path)
        return cls(
            files=ordered,
            content_hash=content_hash(ordered),
            total_files=len(ordered),
            total_size=sum(f.size for f in ordered),
            skip_if_exists=list(dict.fromkeys(skip_if_exists)),
        )

    def _header(self) -> dict[str, object]:
        return {
            "version": MANIFEST_VERSION,
            "contentHash": self.content_hash,
            "totalFiles": self.total_files,
            "totalSize": self.total_size,
            # Only when there are any: a manifest without them keeps its bytes.
            **({"skipIfExists": self.skip_if_exists} if self.skip_if_exists else {}),
        }

    def to_json(self) -> dict[str, object]:
        return {**self._header(), "files": [_record(f) for f in self.files]}

    def dump(self, path: Path) -> None:
        """Write atomically: a reader sees the old manifest or the new one, never half of one.

        The bytes are those of `json.dumps(self.to_json(), ...)`, written a batch of records at a
        time, each encoded by json's C encoder: `json.dump` would use the pure-Python encoder (about
        twice the time for 20,000 files), `json.dumps` of the whole would hold it all in memory.
        """
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(_ENCODE(self._header())[:-1] + ',"files":[')
            for start in range(0, len(self.files), _BATCH):
                if start:
                    fh.write(",")
                fh.write(",".join(_ENCODE(_record(f)) for f in self.files[start : start + _BATCH]))
            fh.write("]}")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Manifest:
        raw = data.get("files")
        if not isinstance(raw, list):
            raise ValueError("manifest has no 'files' list")
        files = [ProjectFile(**item) for item in raw]
        for f in files:
            if (f.target is None) != (f.type != SYMLINK_TYPE):
                raise ValueError(f"manifest record {f.path!r}: type symlink and a target go together")
        skip = data.get("skipIfExists") or []
        if not isinstance(skip, list) or not all(isinstance(p, str) for p in skip):
            raise ValueError("manifest 'skipIfExists' is not a list of patterns")
        m = cls.build(files, skip_if_exists=skip)
        recorded = data.get("contentHash")
        if recorded and recorded != m.content_hash:
            raise ValueError("manifest contentHash does not match its files")
        return m

    @classmethod
    def load(cls, path: Path) -> Manifest:
        with open(path, encoding="utf-8") as fh:
            return cls.from_json(json.load(fh))


_FIELDS = tuple(f.name for f in fields(ProjectFile))
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_BATCH = 512


def _record(f: ProjectFile) -> dict[str, object]:
    """`dataclasses.asdict(f)` without its deep copy (every field is a str, int, bool or None);
    `target` only for a link."""
    record = {name: getattr(f, name) for name in _FIELDS}
    if f.target is None:
        del record["target"]
    return record
