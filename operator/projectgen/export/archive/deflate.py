"""Deflate on a thread pool, pigz-style, so that the bytes do not depend on the thread count.

A stream is cut at fixed offsets into CHUNK blocks; each block is primed with the 32 KiB before
it, sync-flushed, and deflated by a fresh compressor. `zlib_ng.gzip_ng_threaded` is not used:
it reuses one compressor per thread, and zlib-ng's output after `deflateReset` depends on the
blocks before, so its archive changed with the number of threads.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from zlib_ng import zlib_ng

from projectgen.export.archive.io import Sink
from projectgen.export.archive.model import CHUNK

WINDOW = 32 * 1024
FINAL_BLOCK = zlib_ng.compress(b"", 6, -15)
"""An empty final deflate block: ends a stream made of sync-flushed blocks."""


def deflate_block(block: bytes, zdict: bytes, level: int) -> tuple[bytes, int, int]:
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


def store_block(block: bytes) -> tuple[bytes, int, int]:
    return block, zlib_ng.crc32(block), len(block)


class Pipeline:
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


class Gzip:
    """A gzip stream cut into CHUNK blocks at fixed offsets and deflated in parallel.

    Like pigz: every block is primed with the 32 KiB before it and sync-flushed, so the ratio is
    that of one stream. The output depends only on the input bytes: neither on the number of
    threads nor on how the writes were split. Header: no name, mtime 0, OS unknown.
    """

    def __init__(self, sink: Sink, pipeline: Pipeline, level: int) -> None:
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
        zdict, self.tail = self.tail, block[-WINDOW:]
        self.pipeline.submit(self._emit, len(block), deflate_block, block, zdict, self.level)

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
        self.sink.write(FINAL_BLOCK + struct.pack("<LL", self.crc, self.offset & 0xFFFFFFFF))
