"""POSIX ustar headers built here: byte-identical to tarfile's, about 20 times faster.

A path over 100 bytes goes into ustar's prefix field when it can; only a path that ustar cannot
hold (over 255 bytes, or not ASCII) or a file of 8 GiB or more gets a pax extended header,
through tarfile. Records are padded to 10 KiB like GNU tar.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator

from projectgen.export.archive.io import Out
from projectgen.export.archive.model import ArchiveMember

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


class TarFormat:
    """POSIX tar: plain ustar headers, built here, for what ustar can hold; tarfile's pax otherwise.

    Building the 512 bytes directly is about 20 times faster than `TarInfo.tobuf` and gives the
    same bytes (a test checks it). A path over 100 bytes is split into ustar's prefix and name
    when it can be; a non-ASCII path, one that cannot be split, a size of 8 GiB or more, or a
    timestamp after 2242 go through tarfile's PAX_FORMAT, which adds a pax extended header (name
    `././@PaxHeader`, mtime 0).
    """

    def __init__(self, out: Out, mtime: int) -> None:
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

    def add_link(self, name: str, m: ArchiveMember) -> None:
        """ustar type '2', mode 0777 as GNU tar records a link, the target as linkname (a pax
        `linkpath` record when it is long or not ASCII): through tarfile, links are few."""
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = m.target or ""
        info.mode = 0o777
        info.mtime = self.mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self.out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict"))

    def finish(self) -> None:
        self.out.write(bytes(2 * tarfile.BLOCKSIZE))
        pad = -self.out.offset % tarfile.RECORDSIZE
        if pad:
            self.out.write(bytes(pad))
        self.out.flush()
