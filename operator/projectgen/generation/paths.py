"""Path rules for every file of a generated project, whatever source it came from.

A path is relative, '/'-separated, without '.', '..' or empty segments, NUL or
backslash, valid UTF-8, at most 1024 bytes, each segment at most 255 bytes. The
API server enforces the first rules with CEL; the rest only the operator can check,
and template output (file names chosen by copier) is checked here too.
"""

from __future__ import annotations

import os

from projectgen.api.v1alpha1.common import check_relative_path
from projectgen.generation.errors import GenerationError

MAX_SEGMENT = 255


def printable_name(name: str) -> str:
    """A name as a person can read it, even when it holds bytes that are not UTF-8
    (file names read from disk carry those as surrogate escapes)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def segment_problem(name: str) -> str | None:
    """Why one path segment (a file or directory name) is refused, or None."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return f"file name {printable_name(name)!r} is not valid UTF-8"
    if name in ("", ".", ".."):
        return f"file name {name!r} is not allowed"
    if "\\" in name:
        return f"file name {name!r} must not contain '\\'"
    if "\x00" in name or "/" in name:
        return f"file name {name!r} must not contain NUL or '/'"
    if size > MAX_SEGMENT:
        return f"file name {name[:64]!r}... is longer than {MAX_SEGMENT} bytes"
    return None


def path_problem(path: str) -> str | None:
    """Why `path` is not a safe project path, or None."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return f"file name {printable_name(path)!r} is not valid UTF-8"
    try:
        check_relative_path(path)
    except ValueError as exc:
        return str(exc)
    for segment in path.split("/"):
        if len(segment.encode("utf-8")) > MAX_SEGMENT:
            return f"path {path[:64]!r}...: segment {segment[:64]!r}... is longer than {MAX_SEGMENT} bytes"
    return None


def check_path(path: object, where: str) -> str:
    """Return `path` if it is safe, else raise a permanent GenerationError naming `where`."""
    if not isinstance(path, str):
        raise GenerationError(f"{where}: path must be a string, not {type(path).__name__}")
    problem = path_problem(path)
    if problem is not None:
        raise GenerationError(f"{where}: {problem}")
    return path


def is_within(root: str, path: str) -> bool:
    """True when `path` resolves inside `root` (itself already resolved).

    As CPython's tarfile `data_filter`: realpath, then commonpath; never commonprefix,
    which compares characters (`/out2` would be "inside" `/out`).
    """
    resolved = os.path.realpath(path)
    try:
        return os.path.commonpath([root, resolved]) == root
    except ValueError:
        return False
