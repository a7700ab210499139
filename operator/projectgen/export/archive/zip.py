"""Zip written here, not with `zipfile`, so that zlib-ng deflates, in parallel, file by file.

Files up to CHUNK are deflated in one piece, in batches, so each small file's CRC is known before
its header, and stored instead when deflate does not make them smaller (as Info-ZIP does); a
larger file is deflated in blocks like tar.gz and followed by a data descriptor. Zip64 records
for files of 2 GiB or more, and when offsets or the entry count need them. No extra fields (no
extended timestamps); times are UTC.
"""

from __future__ import annotations

import stat
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from zlib_ng import zlib_ng

from projectgen.export.archive.deflate import FINAL_BLOCK, WINDOW, Pipeline, deflate_block, store_block
from projectgen.export.archive.io import Out
from projectgen.export.archive.model import ArchiveMember

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


class ZipFormat:
    """Zip written by hand, so that zlib-ng does the deflating, in parallel, file by file.

    Small files (up to CHUNK) go in batches to the pipeline and come back with CRC, method and
    payload, so their headers carry the real sizes. A larger file is cut into CHUNK blocks
    deflated like a pigz stream and followed by a data descriptor.
    """

    def __init__(self, out: Out, pipeline: Pipeline, mtime: int, level: int) -> None:
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
                zdict, tail = tail, block[-WINDOW:]
                self.pipeline.submit(
                    lambda r: self._stream_block(e, r), len(block), deflate_block, block, zdict, self.level
                )
            else:
                self.pipeline.submit(lambda r: self._stream_block(e, r), len(block), store_block, block)
        self.pipeline.then(lambda _: self._stream_end(e, method, m.size))

    def add_link(self, name: str, m: ArchiveMember) -> None:
        """Info-ZIP's way (`zip -y`): mode S_IFLNK|0777 in the external attributes, the target as
        the entry's content. unzip and Python's zipfile-based tools recreate the link."""
        attr = (stat.S_IFLNK | 0o777) << 16
        data = (m.target or "").encode("utf-8")
        self.batch.append(self._entry(name, attr, False, data))
        self.batch_bytes += len(data)

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
            self.out.write(FINAL_BLOCK)
            e.csize += len(FINAL_BLOCK)
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
