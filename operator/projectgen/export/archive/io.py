"""Bytes in and out: the hashed output thread and its buffer, and the tree reader.

Out: the archive goes to a temp file through one writer thread that counts and hashes what it
writes, so the SHA-256 is of the bytes as they went out, never re-read.

In: every member is re-read through directory descriptors opened with `O_NOFOLLOW`, and checked
against its recorded size and SHA-256 while it is streamed; a recorded symlink is read with
`readlink` (never followed) and checked against its recorded target.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import stat
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from projectgen.export.archive.model import CHUNK, ArchiveError, ArchiveMember


def common_depth(have: Sequence[str], want: Sequence[str]) -> int:
    """How many leading directory segments two paths share: what stays open from one file to the next."""
    keep = 0
    for a, b in zip(have, want, strict=False):
        if a != b:
            break
        keep += 1
    return keep


class Sink:
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


class Out(Protocol):
    """Where a format writes its stream: `offset` counts the bytes written so far."""

    offset: int

    def write(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def flush(self) -> None: ...


class Buffer:
    """Gathers small writes (headers, small files) so that the disk sees writes of about CHUNK."""

    def __init__(self, sink: Sink) -> None:
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


def _changed(path: str, what: str) -> ArchiveError:
    return ArchiveError(f"file {path} changed since generation ({what}); regenerate the project")


class TreeReader:
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
        keep = common_depth(self.names, parents)
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
                        "nothing is exported through a symlink, regenerate the project"
                    ) from e
                if e.errno == errno.ENOENT:
                    raise _changed(path, f"directory {where} is missing") from e
                raise ArchiveError(f"file {path}: cannot open directory {where}: {e.strerror}") from e
            self.fds.append(fd)
            self.names.append(name)
        self.current = parent
        return self.fds[-1] if self.fds else self.root

    def check_link(self, m: ArchiveMember, parent: str, name: str) -> None:
        """The member is a symlink on disk, to the recorded target (read, never followed)."""
        if parent == self.current:
            parent_fd = self.fds[-1] if self.fds else self.root
        else:
            parent_fd = self._enter(m.path, parent)
        try:
            target = os.readlink(name, dir_fd=parent_fd)
        except OSError as e:
            if e.errno == errno.EINVAL:
                raise _changed(m.path, "a symlink in the manifest, no longer one on disk") from e
            if e.errno == errno.ENOENT:
                raise _changed(m.path, "symlink is missing") from e
            raise ArchiveError(f"symlink {m.path} cannot be read: {e.strerror}") from e
        if target != m.target:
            raise _changed(m.path, f"symlink points to {target!r}, {m.target!r} recorded")

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
                    f"file {m.path} is a symlink on disk, a regular file in the manifest; regenerate the project"
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


def read_small(reader: TreeReader, m: ArchiveMember, parent: str, name: str) -> bytes:
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


def read_large(reader: TreeReader, m: ArchiveMember, parent: str, name: str) -> Iterator[bytes]:
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


def fsync_dir(path: Path) -> None:
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
