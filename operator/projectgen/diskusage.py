"""How many entries and bytes a directory tree holds, counted without following links.

One walk for every cap on what an outside party writes into our volume: a template render's output
(`generation/sandbox`) and a template clone (`outbound/fetchcap`). It stops as soon as either cap is
passed, so a runaway tree costs one pass up to the cap, not a walk of everything it wrote.
"""

from __future__ import annotations

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
