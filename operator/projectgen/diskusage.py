"""How many entries and bytes a directory tree holds, counted without following links.

One walk for every cap on what an outside party writes into our volume: a template render's output
(`generation/sandbox`) and a template clone (`outbound/fetchcap`). It stops as soon as either cap is
passed, so a runaway tree costs one pass up to the cap, not a walk of everything it wrote.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def tree_usage(root: Path, max_files: int, max_bytes: int) -> tuple[int, int]:
    """Entries and bytes under `root`, stopping early once past either cap."""
    files = size = 0
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            files += 1
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
            if files > max_files or size > max_bytes:
                return files, size
    return files, size


SPACE_PROBE_BYTES = 1024 * 1024


def out_of_space(directory: Path) -> int | None:
    """ENOSPC or EDQUOT when this process cannot allocate `SPACE_PROBE_BYTES` in `directory` now;
    None when it can. The parent's own check, never a child's word: a render that says "disk full"
    is believed only when the disk is full for the operator too (statvfs does not see quotas, so
    the probe allocates)."""
    probe = directory / f".space-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        return exc.errno if exc.errno in (errno.ENOSPC, errno.EDQUOT) else None
    try:
        os.posix_fallocate(fd, 0, SPACE_PROBE_BYTES)
    except OSError as exc:
        return exc.errno if exc.errno in (errno.ENOSPC, errno.EDQUOT) else None
    finally:
        os.close(fd)
        os.unlink(probe)
    return None
