"""Deterministic, streamed zip / tar / tar.gz archives of a generated tree.

The archive holds exactly the members it is given (the manifest), each re-read from the tree
through directory file descriptors opened with `O_NOFOLLOW`, so no symlink, special file or path
outside the tree can slip in, and each checked against its recorded size and SHA-256 while it is
streamed. The same members and bytes give the same archive bytes: entries in UTF-8 byte order of
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
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import queue
import re
import stat
import struct
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from zlib_ng import zlib_ng

if TYPE_CHECKING:
    from projectgen.generation.manifest import ProjectFile

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_MTIME",
    "FORMATS",
    "ArchiveError",
    "ArchiveFormat",
    "ArchiveMember",
    "ArchiveResult",
    "resolve_mtime",
    "validate_member_path",
    "validate_prefix",
    "write_archive",
]

ArchiveFormat = Literal["zip", "tar", "tar.gz"]
FORMATS: tuple[ArchiveFormat, ...] = ("zip", "tar", "tar.gz")

DEFAULT_LEVEL = 6
DEFAULT_MTIME = 315532800
"""1980-01-01T00:00:00Z: the earliest time a zip entry can hold."""

CHUNK = 1 << 20
"""Files are read, and the gzip stream is cut into blocks, in pieces of this size."""

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
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

    @classmethod
    def from_project_file(cls, f: ProjectFile) -> ArchiveMember:
        return cls(path=f.path, size=f.size, sha256=f.sha256, executable=f.executable)


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


def _windows_reserved(path: str) -> str | None:
    for segment in path.split("/"):
        stem = segment.split(".", 1)[0].rstrip(" ").upper()
        if stem in _WINDOWS_RESERVED:
            return segment
    return None


# --------------------------------------------------------------------------- output


class _Sink:
    """The temp file: bytes are counted, hashed and written on a thread of their own.

    Never read back: the SHA-256 is of the bytes as they went out. `write` takes ownership of its
    argument (the caller must not change it afterwards). An error on the writer thread (disk full)
    is raised by the next `write` or by `close`.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = 0
        self.hash = hashlib.sha256()
        self.queue: queue.Queue[bytes | bytearray | memoryview | None] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="archive-writer", daemon=True)
        self.thread.start()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.error is not None:
            raise self.error
        self.size += len(data)
        self.queue.put(data)

    def _run(self) -> None:
        while True:
            data = self.queue.get()
            if data is None:
                return
            if self.error is not None:
                continue
            try:
                self.hash.update(data)
                _write_all(self.fd, data)
            except BaseException as e:
                self.error = e

    def close(self) -> None:
        """Wait until every byte is written; raise the writer's error, if any."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if self.error is not None:
            raise self.error


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])


class _Out(Protocol):
    """Where a format writes its stream: `offset` counts the bytes written so far."""

    offset: int

    def write(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def flush(self) -> None: ...


class _Buffer:
    """Gathers small writes (headers, small files) so that the disk sees writes of about CHUNK."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.buf = bytearray()
        self.offset = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        self.offset += n
        if len(self.buf) + n < CHUNK:
            self.buf += data
            return
        if self.buf:
            self.sink.write(self.buf)
            self.buf = bytearray()
        if n >= CHUNK:
            self.sink.write(data)
        else:
            self.buf += data

    def flush(self) -> None:
        if self.buf:
            self.sink.write(self.buf)
            self.buf = bytearray()


_WINDOW = 32 * 1024
_FINAL_BLOCK = zlib_ng.compress(b"", 6, -15)
"""An empty final deflate block: ends a stream made of sync-flushed blocks."""


def _deflate_block(block: bytes, zdict: bytes, level: int) -> tuple[bytes, int, int]:
    """One block of a pigz-style stream: sync-flushed, primed with the previous 32 KiB.

    A fresh compressor each time: zlib-ng's output after `deflateReset` depends on what the
    compressor saw before (measured with zlib_ng's `_ParallelCompress`: 13 of 107 blocks differ),
    which would make the archive depend on which thread compressed which block.
    """
    crc = zlib_ng.crc32(block)
    if zdict:
        c = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -15, zdict=zdict)
    else:
        c = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -15)
    return c.compress(block) + c.flush(zlib_ng.Z_SYNC_FLUSH), crc, len(block)


def _store_block(block: bytes) -> tuple[bytes, int, int]:
    return block, zlib_ng.crc32(block), len(block)


def _deflate_files(datas: list[bytes | None], level: int) -> list[tuple[int, int, bytes]]:
    """(crc, method, payload) for each small zip file: deflated, or stored when that is smaller."""
    out = []
    for data in datas:
        if not data:
            out.append((0, _STORED, b""))
            continue
        crc = zlib_ng.crc32(data)
        if level:
            packed = zlib_ng.compress(data, level, -15)
            if len(packed) < len(data):
                out.append((crc, _DEFLATED, packed))
                continue
        out.append((crc, _STORED, data))
    return out


class _Pipeline:
    """Compression jobs on a thread pool, their results used in the order they were submitted.

    zlib-ng releases the GIL while it deflates, so reading and hashing the next files overlaps
    the compression of the previous ones. Input waiting to be compressed is capped, so memory
    stays flat whatever the size of the project.
    """

    def __init__(self, threads: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="archive-deflate")
        self.queue: deque[tuple[Future[Any] | None, Callable[[Any], None], int]] = deque()
        self.waiting = 0
        self.limit = (2 * threads + 2) * CHUNK

    def submit(self, then: Callable[[Any], None], weight: int, job: Callable[..., Any], *args: Any) -> None:
        self.queue.append((self.pool.submit(job, *args), then, weight))
        self.waiting += weight
        while self.waiting > self.limit:
            self._pop()

    def then(self, fn: Callable[[Any], None]) -> None:
        """Call `fn(None)` once everything submitted before has been used."""
        if self.queue:
            self.queue.append((None, fn, 0))
        else:
            fn(None)

    def _pop(self) -> None:
        future, then, weight = self.queue.popleft()
        result = future.result() if future is not None else None
        self.waiting -= weight
        then(result)

    def drain(self) -> None:
        while self.queue:
            self._pop()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Gzip:
    """A gzip stream cut into CHUNK blocks at fixed offsets and deflated in parallel.

    Like pigz: every block is primed with the 32 KiB before it and sync-flushed, so the ratio is
    that of one stream. The output depends only on the input bytes: neither on the number of
    threads nor on how the writes were split. Header: no name, mtime 0, OS unknown.
    """

    def __init__(self, sink: _Sink, pipeline: _Pipeline, level: int) -> None:
        self.sink = sink
        self.pipeline = pipeline
        self.level = level
        self.buf = bytearray()
        self.offset = 0
        self.tail = b""
        self.crc = 0
        xfl = 2 if level == 9 else 4 if level == 1 else 0
        sink.write(struct.pack("<BBBBLBB", 0x1F, 0x8B, 8, 0, 0, xfl, 255))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.offset += len(data)
        self.buf += data
        if len(self.buf) < CHUNK:
            return
        full = len(self.buf) // CHUNK * CHUNK
        with memoryview(self.buf) as view:
            blocks = [bytes(view[i : i + CHUNK]) for i in range(0, full, CHUNK)]
        del self.buf[:full]
        for block in blocks:
            self._submit(block)

    def _submit(self, block: bytes) -> None:
        zdict, self.tail = self.tail, block[-_WINDOW:]
        self.pipeline.submit(self._emit, len(block), _deflate_block, block, zdict, self.level)

    def _emit(self, result: tuple[bytes, int, int]) -> None:
        compressed, crc, n = result
        self.sink.write(compressed)
        self.crc = zlib_ng.crc32_combine(self.crc, crc, n)

    def flush(self) -> None:
        if self.buf:
            self._submit(bytes(self.buf))
            self.buf = bytearray()

    def close(self) -> None:
        self.flush()
        self.pipeline.drain()
        self.sink.write(_FINAL_BLOCK + struct.pack("<LL", self.crc, self.offset & 0xFFFFFFFF))


# --------------------------------------------------------------------------- input


def _changed(path: str, what: str) -> ArchiveError:
    return ArchiveError(f"file {path} changed since generation ({what}); regenerate the project")


class _TreeReader:
    """Opens members below `tree` without following any symlink, parents included.

    Members come in sorted order, so the files of one directory are contiguous: the chain of open
    directory descriptors is kept and only the part that differs from the previous file's is
    reopened. Every directory is opened with O_NOFOLLOW|O_DIRECTORY relative to its parent, and
    the file with O_NOFOLLOW (and O_NONBLOCK, so a FIFO cannot hang us) and then fstat-ed: the
    path cannot resolve outside the tree, and only a regular file is read.
    """

    _DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    _FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

    def __init__(self, tree: Path) -> None:
        try:
            self.root = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise ArchiveError(f"tree {str(tree)!r} cannot be opened as a directory: {e.strerror}") from e
        self.current = ""
        self.names: list[str] = []
        self.fds: list[int] = []

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self.names.clear()
        os.close(self.root)

    def _enter(self, path: str, parent: str) -> int:
        parents = parent.split("/") if parent else []
        keep = 0
        for have, want in zip(self.names, parents, strict=False):
            if have != want:
                break
            keep += 1
        while len(self.fds) > keep:
            os.close(self.fds.pop())
            self.names.pop()
        self.current = "/".join(self.names)
        for i in range(keep, len(parents)):
            name = parents[i]
            parent_fd = self.fds[-1] if self.fds else self.root
            try:
                fd = os.open(name, self._DIR_FLAGS, dir_fd=parent_fd)
            except OSError as e:
                where = "/".join(parents[: i + 1])
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ArchiveError(
                        f"file {path}: its parent {where} is a symlink or not a directory; "
                        "symlinks are not exported, regenerate the project"
                    ) from e
                if e.errno == errno.ENOENT:
                    raise _changed(path, f"directory {where} is missing") from e
                raise ArchiveError(f"file {path}: cannot open directory {where}: {e.strerror}") from e
            self.fds.append(fd)
            self.names.append(name)
        self.current = parent
        return self.fds[-1] if self.fds else self.root

    def open(self, m: ArchiveMember, parent: str, name: str) -> int:
        """An fd of the member's regular file, after checking its size against the record."""
        if parent == self.current:
            parent_fd = self.fds[-1] if self.fds else self.root
        else:
            parent_fd = self._enter(m.path, parent)
        try:
            fd = os.open(name, self._FILE_FLAGS, dir_fd=parent_fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ArchiveError(
                    f"file {m.path} is a symlink; symlinks are not exported, regenerate the project"
                ) from e
            if e.errno == errno.ENOENT:
                raise _changed(m.path, "file is missing") from e
            raise ArchiveError(f"file {m.path} cannot be opened: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ArchiveError(
                    f"file {m.path} is not a regular file on disk; only regular files are exported"
                )
            if st.st_size != m.size:
                raise _changed(m.path, f"size mismatch: {st.st_size} bytes on disk, {m.size} recorded")
        except BaseException:
            os.close(fd)
            raise
        return fd


def _read_small(reader: _TreeReader, m: ArchiveMember, parent: str, name: str) -> bytes:
    """The whole content of a member of at most CHUNK bytes, checked against its record."""
    fd = reader.open(m, parent, name)
    try:
        # Ask for one byte more than recorded: getting it means the file grew.
        data = os.read(fd, m.size + 1)
        if len(data) > m.size:
            raise _changed(m.path, "it grew while being archived")
        if len(data) < m.size:
            data = _read_rest(fd, data, m.size, m.path)
            if os.read(fd, 1):
                raise _changed(m.path, "it grew while being archived")
    finally:
        os.close(fd)
    if m.sha256 is not None and hashlib.sha256(data).hexdigest() != m.sha256:
        raise _changed(m.path, "sha256 mismatch")
    return data


def _read_large(reader: _TreeReader, m: ArchiveMember, parent: str, name: str) -> Iterator[bytes]:
    """The member's content in pieces of exactly CHUNK bytes (the last one excepted).

    The SHA-256 is known only after the last piece has been used: the caller must consume the
    whole iterator, and throws the archive away when it raises.
    """
    fd = reader.open(m, parent, name)
    try:
        h = hashlib.sha256() if m.sha256 is not None else None
        remaining = m.size
        while remaining:
            want = min(remaining, CHUNK)
            data = os.read(fd, want)
            if len(data) < want:
                data = _read_rest(fd, data, want, m.path)
            remaining -= want
            if h is not None:
                h.update(data)
            yield data
        if os.read(fd, 1):
            raise _changed(m.path, "it grew while being archived")
        if h is not None and h.hexdigest() != m.sha256:
            raise _changed(m.path, "sha256 mismatch")
    finally:
        os.close(fd)


def _read_rest(fd: int, first: bytes, want: int, path: str) -> bytes:
    pieces = [first]
    got = len(first)
    while got < want:
        data = os.read(fd, want - got)
        if not data:
            raise _changed(path, "it shrank while being archived")
        pieces.append(data)
        got += len(data)
    return b"".join(pieces)


# --------------------------------------------------------------------------- formats


class _Format(Protocol):
    def add_dir(self, name: str) -> None: ...

    def add_file(self, name: str, m: ArchiveMember, content: bytes | Iterator[bytes]) -> None:
        """`content` is the whole file when it is at most CHUNK bytes, else an iterator of pieces."""

    def finish(self) -> None: ...


_OCTAL_ZERO = b"0000000\0"
_ZEROS = bytes(tarfile.BLOCKSIZE)


def _ustar_split(raw: bytes) -> tuple[bytes, bytes] | None:
    """ustar's prefix/name split of a long path, as tarfile does it: the shortest prefix that fits."""
    i = raw.find(b"/")
    while 0 < i <= 155:
        if len(raw) - i - 1 <= 100 and i + 1 < len(raw):
            return raw[:i], raw[i + 1 :]
        i = raw.find(b"/", i + 1)
    return None


class _TarFormat:
    """POSIX tar: plain ustar headers, built here, for what ustar can hold; tarfile's pax otherwise.

    Building the 512 bytes directly is about 20 times faster than `TarInfo.tobuf` and gives the
    same bytes (a test checks it). A path over 100 bytes is split into ustar's prefix and name
    when it can be; a non-ASCII path, one that cannot be split, a size of 8 GiB or more, or a
    timestamp after 2242 go through tarfile's PAX_FORMAT, which adds a pax extended header (name
    `././@PaxHeader`, mtime 0).
    """

    def __init__(self, out: _Out, mtime: int) -> None:
        self.out = out
        self.mtime = mtime
        self.ustar_mtime = mtime < 8**11
        self.templates: dict[tuple[bytes, int], tuple[bytes, bytes, bytes, int]] = {}

    def _template(self, kind: bytes, mode: int) -> tuple[bytes, bytes, bytes, int]:
        """The fixed parts of a ustar header before and after the checksum, and their byte sum.

        Size, checksum and the path's name and prefix fields are filled in per entry.
        """
        before = b"%07o\0" % mode + _OCTAL_ZERO + _OCTAL_ZERO
        mtime = b"%011o\0" % self.mtime
        after = kind + bytes(100) + tarfile.POSIX_MAGIC + bytes(80)
        template = (before, mtime, after, sum(before) + sum(mtime) + sum(b"        ") + sum(after))
        self.templates[kind, mode] = template
        return template

    def _header(self, name: str, kind: bytes, mode: int, size: int) -> bytes:
        raw = name.encode("utf-8")
        if raw.isascii() and size < 8**11 and self.ustar_mtime:
            if len(raw) <= 100:
                prefix = b""
            else:
                split = _ustar_split(raw)
                prefix, raw = split if split is not None else (b"", b"")
            if raw:
                before, mtime, after, base = self.templates.get((kind, mode)) or self._template(kind, mode)
                size_field = b"%011o\0" % size
                checksum = b"%06o\0 " % (base + sum(raw) + sum(prefix) + sum(size_field))
                return b"".join(
                    (
                        raw.ljust(100, b"\0"),
                        before,
                        size_field,
                        mtime,
                        checksum,
                        after,
                        prefix.ljust(167, b"\0"),
                    )
                )
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.size = size
        info.mtime = self.mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")

    def add_dir(self, name: str) -> None:
        self.out.write(self._header(name + "/", tarfile.DIRTYPE, 0o755, 0))

    def add_file(self, name: str, m: ArchiveMember, content: bytes | Iterator[bytes]) -> None:
        header = self._header(name, tarfile.REGTYPE, 0o755 if m.executable else 0o644, m.size)
        pad = _ZEROS[: -m.size % tarfile.BLOCKSIZE]
        if isinstance(content, bytes):
            self.out.write(b"".join((header, content, pad)))
            return
        self.out.write(header)
        for data in content:
            self.out.write(data)
        self.out.write(pad)

    def finish(self) -> None:
        self.out.write(bytes(2 * tarfile.BLOCKSIZE))
        pad = -self.out.offset % tarfile.RECORDSIZE
        if pad:
            self.out.write(bytes(pad))
        self.out.flush()


_ZIP64_LIMIT = (1 << 31) - 1
_ZIP_COUNT_LIMIT = 0xFFFF
_ZIP_VERSION = 20
_ZIP64_VERSION = 45
_ZIP_MADE_BY_UNIX = 3
_ZIP64_MADE_BY = (_ZIP_MADE_BY_UNIX << 8) | _ZIP64_VERSION
_FLAG_DATA_DESCRIPTOR = 0x08
_FLAG_UTF8 = 0x800
_STORED = 0
_DEFLATED = 8
_LOCAL = struct.Struct("<4sHHHHHLLLHH")
_CENTRAL = struct.Struct("<4sBBHHHHHLLLHHHHHLL")
_END = struct.Struct("<4sHHHHLLH")
_END64 = struct.Struct("<4sQHHLLQQQQ")
_END64_LOCATOR = struct.Struct("<4sLQL")
_BATCH_BYTES = 256 * 1024
_BATCH_FILES = 256


def _dos_datetime(mtime: int) -> tuple[int, int]:
    """Zip's local-time fields, taken as UTC so that the result does not depend on the host's zone.

    Zip cannot say before 1980 or after 2107, and counts seconds in twos: the time is clamped and
    rounded down.
    """
    t = time.gmtime(mtime)
    year = min(max(t.tm_year, 1980), 2107)
    if year != t.tm_year:
        month, day, hour, minute, second = (1, 1, 0, 0, 0) if year == 1980 else (12, 31, 23, 59, 58)
    else:
        month, day, hour, minute, second = t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec
    dos_time = (hour << 11) | (minute << 5) | (second // 2)
    dos_date = ((year - 1980) << 9) | (month << 5) | day
    return dos_time, dos_date


@dataclass(slots=True)
class _ZipEntry:
    raw: bytes
    flags: int
    attr: int
    zip64: bool
    data: bytes | None = None
    """Content of a small file; None for a directory."""
    offset: int = 0
    crc: int = 0
    csize: int = 0


class _ZipFormat:
    """Zip written by hand, so that zlib-ng does the deflating, in parallel, file by file.

    Small files (up to CHUNK) go in batches to the pipeline and come back with CRC, method and
    payload, so their headers carry the real sizes. A larger file is cut into CHUNK blocks
    deflated like a pigz stream and followed by a data descriptor.
    """

    def __init__(self, out: _Out, pipeline: _Pipeline, mtime: int, level: int) -> None:
        self.out = out
        self.pipeline = pipeline
        self.level = level
        self.dos_time, self.dos_date = _dos_datetime(mtime)
        self.central: list[bytes] = []
        self.batch: list[_ZipEntry] = []
        self.batch_bytes = 0

    def _local(self, e: _ZipEntry, method: int, crc: int, csize: int, usize: int) -> None:
        e.offset = self.out.offset
        extra = b""
        if e.zip64:
            extra = struct.pack("<HHQQ", 1, 16, usize, csize)
            csize = usize = 0xFFFFFFFF
        version = _ZIP64_VERSION if e.zip64 else _ZIP_VERSION
        header = _LOCAL.pack(
            b"PK\x03\x04",
            version,
            e.flags,
            method,
            self.dos_time,
            self.dos_date,
            crc,
            csize,
            usize,
            len(e.raw),
            len(extra),
        )
        self.out.write(header + e.raw + extra)

    def _central(self, e: _ZipEntry, method: int, crc: int, csize: int, usize: int) -> None:
        fields: list[int] = []
        offset = e.offset
        if e.zip64 or usize > _ZIP64_LIMIT or csize > _ZIP64_LIMIT:
            fields += [usize, csize]
            usize = csize = 0xFFFFFFFF
        if offset > _ZIP64_LIMIT:
            fields.append(offset)
            offset = 0xFFFFFFFF
        extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
        version = _ZIP64_VERSION if fields else _ZIP_VERSION
        record = _CENTRAL.pack(
            b"PK\x01\x02",
            version,
            _ZIP_MADE_BY_UNIX,
            version,
            e.flags,
            method,
            self.dos_time,
            self.dos_date,
            crc,
            csize,
            usize,
            len(e.raw),
            len(extra),
            0,
            0,
            0,
            e.attr,
            offset,
        )
        self.central.append(record + e.raw + extra)

    def _entry(self, name: str, attr: int, zip64: bool, data: bytes | None) -> _ZipEntry:
        raw = name.encode("utf-8")
        return _ZipEntry(raw, 0 if raw.isascii() else _FLAG_UTF8, attr, zip64, data)

    def add_dir(self, name: str) -> None:
        attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10  # 0x10: the MS-DOS directory bit
        self.batch.append(self._entry(name + "/", attr, False, None))

    def add_file(self, name: str, m: ArchiveMember, content: bytes | Iterator[bytes]) -> None:
        attr = (stat.S_IFREG | (0o755 if m.executable else 0o644)) << 16
        zip64 = m.size > _ZIP64_LIMIT
        if isinstance(content, bytes):
            self.batch.append(self._entry(name, attr, zip64, content))
            self.batch_bytes += len(content)
            if self.batch_bytes >= _BATCH_BYTES or len(self.batch) >= _BATCH_FILES:
                self._submit_batch()
            return
        self._submit_batch()
        e = self._entry(name, attr, zip64, None)
        e.flags |= _FLAG_DATA_DESCRIPTOR
        method = _DEFLATED if self.level else _STORED
        self.pipeline.then(lambda _: self._local(e, method, 0, 0, 0))
        tail = b""
        for block in content:
            if method == _DEFLATED:
                zdict, tail = tail, block[-_WINDOW:]
                self.pipeline.submit(
                    lambda r: self._stream_block(e, r), len(block), _deflate_block, block, zdict, self.level
                )
            else:
                self.pipeline.submit(lambda r: self._stream_block(e, r), len(block), _store_block, block)
        self.pipeline.then(lambda _: self._stream_end(e, method, m.size))

    def _submit_batch(self) -> None:
        if not self.batch:
            return
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        weight = sum(len(e.data) for e in batch if e.data)
        self.pipeline.submit(
            lambda results: self._write_batch(batch, results),
            weight,
            _deflate_files,
            [e.data for e in batch],
            self.level,
        )

    def _write_batch(self, batch: list[_ZipEntry], results: list[tuple[int, int, bytes]]) -> None:
        for e, (crc, method, payload) in zip(batch, results, strict=True):
            usize = len(e.data) if e.data is not None else 0
            self._local(e, method, crc, len(payload), usize)
            if payload:
                self.out.write(payload)
            self._central(e, method, crc, len(payload), usize)

    def _stream_block(self, e: _ZipEntry, result: tuple[bytes, int, int]) -> None:
        payload, crc, n = result
        self.out.write(payload)
        e.csize += len(payload)
        e.crc = zlib_ng.crc32_combine(e.crc, crc, n)

    def _stream_end(self, e: _ZipEntry, method: int, usize: int) -> None:
        if method == _DEFLATED:
            self.out.write(_FINAL_BLOCK)
            e.csize += len(_FINAL_BLOCK)
        fmt = "<4sLQQ" if e.zip64 else "<4sLLL"
        self.out.write(struct.pack(fmt, b"PK\x07\x08", e.crc, e.csize, usize))
        self._central(e, method, e.crc, e.csize, usize)

    def finish(self) -> None:
        self._submit_batch()
        self.pipeline.drain()
        start = self.out.offset
        for record in self.central:
            self.out.write(record)
        size = self.out.offset - start
        count = len(self.central)
        if count >= _ZIP_COUNT_LIMIT or size > _ZIP64_LIMIT or start > _ZIP64_LIMIT:
            end64 = self.out.offset
            self.out.write(
                _END64.pack(
                    b"PK\x06\x06", 44, _ZIP64_MADE_BY, _ZIP64_VERSION, 0, 0, count, count, size, start
                )
            )
            self.out.write(_END64_LOCATOR.pack(b"PK\x06\x07", 0, end64, 1))
            # All three to -1, as Go's archive/zip does: unzip reads the zip64 record only then.
            count, size, start = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF
        self.out.write(_END.pack(b"PK\x05\x06", 0, 0, count, count, size, start, 0))
        self.out.flush()


# --------------------------------------------------------------------------- entry point


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
        if m.sha256 is not None and not (isinstance(m.sha256, str) and _SHA256_RE.fullmatch(m.sha256)):
            raise ArchiveError(f"file {path}: recorded sha256 {m.sha256!r} is not 64 lowercase hex digits")
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
    return result


def write_archive(
    tree: Path,
    members: Iterable[ArchiveMember],
    fmt: ArchiveFormat,
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
    a symlink (itself or a parent directory), not a regular file, missing, or a different size or
    SHA-256. OSError from writing `target` passes through. Either way no target and no temp file
    is left.
    """
    if fmt not in FORMATS:
        raise ArchiveError(f"archive format {fmt!r} is not one of {', '.join(FORMATS)}")
    prefix = validate_prefix(prefix)
    stamp = resolve_mtime(mtime)
    if level is None:
        level = DEFAULT_LEVEL
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
        raise ArchiveError(f"compression level {level!r} must be an integer from 0 to 9")
    planned = _plan(members)

    warnings: list[str] = []
    if fmt == "zip":
        if _windows_reserved(prefix):
            warnings.append(
                f"archive prefix {prefix!r} is a reserved device name on Windows; "
                "the zip cannot be extracted there as is"
            )
        for m, _, _ in planned:
            reserved = _windows_reserved(m.path)
            if reserved is not None:
                warnings.append(
                    f"file {m.path}: {reserved!r} is a reserved device name on Windows; "
                    "the zip cannot be extracted there as is"
                )

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    sink = _Sink(fd)
    reader: _TreeReader | None = None
    pipeline: _Pipeline | None = None
    try:
        reader = _TreeReader(tree)
        if fmt == "tar":
            entries = _write_entries(_TarFormat(_Buffer(sink), stamp), reader, planned, prefix)
        elif fmt == "tar.gz":
            pipeline = _Pipeline(_threads())
            gz = _Gzip(sink, pipeline, level)
            entries = _write_entries(_TarFormat(gz, stamp), reader, planned, prefix)
            gz.close()
        else:
            pipeline = _Pipeline(_threads())
            zip_format = _ZipFormat(_Buffer(sink), pipeline, stamp, level)
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
    _fsync_dir(target.parent)
    return ArchiveResult(
        path=target, size=sink.size, sha256=sink.hash.hexdigest(), entries=entries, warnings=warnings
    )


def _write_entries(
    writer: _Format, reader: _TreeReader, planned: list[tuple[ArchiveMember, str, str]], prefix: str
) -> int:
    """Every file in order, each directory just before its first file; returns the entry count."""
    writer.add_dir(prefix)
    entries = 1
    open_dirs: list[str] = []
    current = ""
    for m, parent, name in planned:
        if parent != current:
            parents = parent.split("/") if parent else []
            keep = 0
            for have, want in zip(open_dirs, parents, strict=False):
                if have != want:
                    break
                keep += 1
            del open_dirs[keep:]
            for segment in parents[keep:]:
                open_dirs.append(segment)
                writer.add_dir(prefix + "/" + "/".join(open_dirs))
                entries += 1
            current = parent
        if m.size <= CHUNK:
            writer.add_file(prefix + "/" + m.path, m, _read_small(reader, m, parent, name))
        else:
            writer.add_file(prefix + "/" + m.path, m, _read_large(reader, m, parent, name))
        entries += 1
    writer.finish()
    return entries


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
