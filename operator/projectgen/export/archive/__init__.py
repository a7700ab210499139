"""Deterministic, streamed zip / tar / tar.gz archives of a generated tree.

The archive holds exactly the members it is given (the manifest), each re-read from the tree
through directory file descriptors opened with `O_NOFOLLOW`, so no symlink, special file or path
outside the tree can slip in, and each checked against its recorded size and SHA-256 while it is
streamed. A member recorded as a symlink (from a template with `_preserve_symlinks`) must resolve
inside the members (`generation/links.py`) and is read with `readlink` relative to its parent's
descriptor, never followed; its target must be the recorded one. It goes in as a link: tar type
'2' with the target as linkname, zip mode 0120777 in the external attributes with the target as
content (as Info-ZIP's `zip -y`). The same members and bytes give the same archive bytes: entries in UTF-8 byte order of
their path, one fixed timestamp, modes 0644/0755, owner 0:0 with no names, gzip header without
name or time. The archive is written to a hidden temp file beside the target and renamed into
place only when complete; on any failure nothing is left behind.

Layout: every entry lives under `<prefix>/`, and each directory gets its own entry (mode 0755)
just before its first file, top-level folder included, as in a GitHub source archive.

Formats:
- tar: POSIX ustar headers, built here (byte-identical to tarfile's, about 20 times faster); a
  path over 100 bytes goes into ustar's prefix field when it can, and only a path that ustar
  cannot hold (over 255 bytes, or not ASCII) or a file of 8 GiB or more gets a pax extended
  header, through tarfile. Records padded to 10 KiB like GNU tar.
- tar.gz: the tar stream cut at fixed offsets into 1 MiB blocks deflated in parallel by zlib-ng,
  pigz-style (each block primed with the previous 32 KiB and sync-flushed), each by a fresh
  compressor: the bytes depend neither on the thread count nor on the machine's cores.
  `zlib_ng.gzip_ng_threaded` is not used because it is not deterministic: it reuses one
  compressor per thread, and zlib-ng's output after `deflateReset` depends on earlier blocks, so
  the archive changed with the number of threads.
- zip: written here, not with `zipfile`, so that zlib-ng deflates (about twice as fast as zlib at
  level 6), in parallel, and each small file's CRC is known before its header: files up to 1 MiB
  are deflated in one piece, in batches, and stored instead when deflate does not make them
  smaller (as Info-ZIP does); a larger file is deflated in blocks like tar.gz and followed by a
  data descriptor. Zip64 records for files of 2 GiB or more, and when offsets or the entry count
  need them. No extra fields (no extended timestamps); times are UTC.

The output is hashed and written on a thread of its own; the SHA-256 is of the bytes written,
never re-read. Memory stays flat: a few MiB of blocks in flight, plus one small record per entry
(the zip central directory and the sorted member list).

Modules, each on one seam: `model` (public types and checks), `io` (output thread and buffer,
tree reader), `deflate` (the parallel pipeline and gzip), `tar`, `zip`; this one is the entry
point that plans the members and drives a format.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable
from operator import itemgetter
from pathlib import Path

from projectgen.api.v1alpha1.repositoryexport import ARCHIVE_TYPES, ExportType
from projectgen.export.archive.deflate import Gzip, Pipeline
from projectgen.export.archive.io import (
    Buffer,
    Sink,
    TreeReader,
    common_depth,
    fsync_dir,
    read_large,
    read_small,
)
from projectgen.export.archive.model import (
    CHUNK,
    DEFAULT_LEVEL,
    DEFAULT_MTIME,
    SHA256_RE,
    ArchiveError,
    ArchiveMember,
    ArchiveResult,
    Format,
    resolve_mtime,
    validate_member_path,
    validate_prefix,
    windows_reserved,
)
from projectgen.export.archive.tar import TarFormat
from projectgen.export.archive.zip import ZipFormat
from projectgen.generation.links import LinkError, Tree, target_problem

__all__ = [
    "ARCHIVE_TYPES",
    "DEFAULT_LEVEL",
    "DEFAULT_MTIME",
    "ArchiveError",
    "ArchiveMember",
    "ArchiveResult",
    "resolve_mtime",
    "validate_member_path",
    "validate_prefix",
    "write_archive",
]


def _threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def _plan(members: Iterable[ArchiveMember]) -> list[tuple[ArchiveMember, str, str]]:
    """Validate every member and sort them by the UTF-8 bytes of their path.

    For valid UTF-8 text, code point order is UTF-8 byte order, so plain `str` sorting does it.
    Returns (member, parent directory, file name) in archive order.
    """
    planned: list[tuple[str, ArchiveMember]] = []
    for m in members:
        path = validate_member_path(m.path)
        if isinstance(m.size, bool) or not isinstance(m.size, int) or m.size < 0:
            raise ArchiveError(f"file {path}: recorded size {m.size!r} is not a non-negative integer")
        if m.sha256 is not None and not (isinstance(m.sha256, str) and SHA256_RE.fullmatch(m.sha256)):
            raise ArchiveError(f"file {path}: recorded sha256 {m.sha256!r} is not 64 lowercase hex digits")
        if m.target is not None:
            _check_link_record(path, m)
        planned.append((path, m))
    planned.sort(key=itemgetter(0))
    dirs: set[str] = set()
    previous = None
    result: list[tuple[ArchiveMember, str, str]] = []
    for path, m in planned:
        if path == previous:
            raise ArchiveError(f"file {m.path} is listed twice")
        previous = path
        parent, _, name = path.rpartition("/")
        if parent and parent not in dirs:
            i = parent.find("/")
            while i != -1:
                dirs.add(parent[:i])
                i = parent.find("/", i + 1)
            dirs.add(parent)
        result.append((m, parent, name))
    clash = dirs.intersection(path for path, _ in planned)
    if clash:
        first = min(clash)
        raise ArchiveError(f"{first} is listed both as a file and as a directory of other files")
    links = {path: m.target for path, m in planned if m.target is not None}
    if links:
        tree = Tree({path for path, m in planned if m.target is None}, dirs, links)
        try:
            tree.check()
        except LinkError as exc:
            raise ArchiveError(f"{exc}; regenerate the project") from None
    return result


def _check_link_record(path: str, m: ArchiveMember) -> None:
    target = m.target or ""
    problem = target_problem(target) if isinstance(m.target, str) else "has a target that is not a string"
    if problem is not None:
        raise ArchiveError(f"symlink {path} {problem}")
    raw = target.encode("utf-8")
    if m.size != len(raw) or (m.sha256 is not None and m.sha256 != hashlib.sha256(raw).hexdigest()):
        raise ArchiveError(f"symlink {path}: recorded size or sha256 is not that of its target {target!r}")


def write_archive(
    tree: Path,
    members: Iterable[ArchiveMember],
    fmt: ExportType,
    target: Path,
    *,
    prefix: str,
    mtime: int | None = None,
    level: int | None = None,
) -> ArchiveResult:
    """Pack `members` of `tree` into `target` as `fmt`, every entry under `prefix/`.

    `level` is the deflate level for zip and tar.gz, 0 (no compression) to 9; the default 6 is
    gzip's, the usual trade of speed for size. Plain tar ignores it. `mtime` (seconds since 1970)
    stamps every entry; default `SOURCE_DATE_EPOCH`, else 1980-01-01.

    Raises ArchiveError (a ValueError) when a member is unsafe or no longer matches its record:
    a symlink where a file is recorded (itself or a parent directory), not a regular file,
    missing, or a different size or SHA-256; a link that is not a link on disk, has another
    target than recorded, or does not resolve inside the members (absolute, climbing out, through
    a chain that leaves, dangling). OSError from writing `target` passes through. Either way no target and no temp file
    is left.
    """
    if fmt not in ARCHIVE_TYPES:
        raise ArchiveError(f"archive format {str(fmt)!r} is not one of {', '.join(ARCHIVE_TYPES)}")
    prefix = validate_prefix(prefix)
    stamp = resolve_mtime(mtime)
    if level is None:
        level = DEFAULT_LEVEL
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
        raise ArchiveError(f"compression level {level!r} must be an integer from 0 to 9")
    planned = _plan(members)

    warnings: list[str] = []
    if fmt == ExportType.ZIP:
        if windows_reserved(prefix):
            warnings.append(
                f"archive prefix {prefix!r} is a reserved device name on Windows; "
                "the zip cannot be extracted there as is"
            )
        for m, _, _ in planned:
            reserved = windows_reserved(m.path)
            if reserved is not None:
                warnings.append(
                    f"file {m.path}: {reserved!r} is a reserved device name on Windows; "
                    "the zip cannot be extracted there as is"
                )

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    sink = Sink(fd)
    reader: TreeReader | None = None
    pipeline: Pipeline | None = None
    try:
        reader = TreeReader(tree)
        if fmt == ExportType.TAR:
            entries = _write_entries(TarFormat(Buffer(sink), stamp), reader, planned, prefix)
        elif fmt == ExportType.TAR_GZ:
            pipeline = Pipeline(_threads())
            gz = Gzip(sink, pipeline, level)
            entries = _write_entries(TarFormat(gz, stamp), reader, planned, prefix)
            gz.close()
        else:
            pipeline = Pipeline(_threads())
            zip_format = ZipFormat(Buffer(sink), pipeline, stamp, level)
            entries = _write_entries(zip_format, reader, planned, prefix)
        sink.close()
        os.fchmod(fd, 0o644)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(BaseException):
            sink.close()
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if reader is not None:
            reader.close()
        if pipeline is not None:
            pipeline.close()
    fsync_dir(target.parent)
    return ArchiveResult(
        path=target, size=sink.size, sha256=sink.hash.hexdigest(), entries=entries, warnings=warnings
    )


def _write_entries(
    writer: Format, reader: TreeReader, planned: list[tuple[ArchiveMember, str, str]], prefix: str
) -> int:
    """Every file in order, each directory just before its first file; returns the entry count."""
    writer.add_dir(prefix)
    entries = 1
    open_dirs: list[str] = []
    current = ""
    for m, parent, name in planned:
        if parent != current:
            parents = parent.split("/") if parent else []
            keep = common_depth(open_dirs, parents)
            del open_dirs[keep:]
            for segment in parents[keep:]:
                open_dirs.append(segment)
                writer.add_dir(prefix + "/" + "/".join(open_dirs))
                entries += 1
            current = parent
        if m.target is not None:
            reader.check_link(m, parent, name)
            writer.add_link(prefix + "/" + m.path, m)
        elif m.size <= CHUNK:
            writer.add_file(prefix + "/" + m.path, m, read_small(reader, m, parent, name))
        else:
            writer.add_file(prefix + "/" + m.path, m, read_large(reader, m, parent, name))
        entries += 1
    writer.finish()
    return entries
