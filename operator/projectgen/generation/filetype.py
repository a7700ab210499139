"""File type and preview of a generated file, from `identify` (no table of our own).

identify gives a set of tags per file name (or shebang); the type we record is the
most specific of them: the tag that identify gives to the fewest names, extensions
and interpreters. So `a.py` is `python`, `x.yaml` is `yaml`, `README.md` is
`markdown`, `a.png` is `png`, `pyproject.toml` is `pyproject`. When identify knows
nothing more than the encoding, the type is `text` or `binary`, decided from the
first KiB of content as identify itself does.
"""

from __future__ import annotations

import io
from collections import Counter
from functools import lru_cache

from identify import extensions, identify, interpreters

TEXT = "text"
BINARY = "binary"
SNIFF_BYTES = 1024
"""identify decides text versus binary from this many leading bytes."""

# Tags that say what family a file is in, not what it is: used only when nothing else is known.
_GENERIC = frozenset(identify.ENCODING_TAGS | identify.MODE_TAGS | identify.TYPE_TAGS) | {
    "plain-text",
    "image",
    "audio",
}


def _tag_counts() -> Counter[str]:
    counts: Counter[str] = Counter()
    for table in (
        extensions.EXTENSIONS,
        extensions.EXTENSIONS_NEED_BINARY_CHECK,
        extensions.NAMES,
        interpreters.INTERPRETERS,
    ):
        for tags in table.values():
            counts.update(tags)
    return counts


_COUNTS = _tag_counts()


@lru_cache(maxsize=2048)
def most_specific(tags: frozenset[str]) -> str | None:
    """The rarest non-generic tag (ties broken by name), or None."""
    candidates = [t for t in tags if t not in _GENERIC]
    if not candidates:
        return None
    return min(candidates, key=lambda t: (_COUNTS.get(t, 0), t))


def classify(name: str, head: bytes, executable: bool) -> tuple[str, bool]:
    """(type, is_text) of a file called `name` whose content starts with `head`.

    Same order as `identify.tags_from_path`: the file name first; the shebang only for
    an executable file identify cannot name; the content only when the tags say
    neither text nor binary.
    """
    tags = identify.tags_from_filename(name)
    if not tags and executable and head.startswith(b"#!"):
        shebang = identify.parse_shebang(io.BytesIO(head))
        if shebang:
            tags = identify.tags_from_interpreter(shebang[0])
    if TEXT in tags:
        is_text = True
    elif BINARY in tags:
        is_text = False
    else:
        is_text = identify.is_text(io.BytesIO(head[:SNIFF_BYTES]))
    kind = most_specific(frozenset(tags)) if tags else None
    return (kind or (TEXT if is_text else BINARY)), is_text


def preview_bytes(max_chars: int) -> int:
    """How many leading bytes always hold the first `max_chars` characters (UTF-8: at most
    4 bytes each; an invalid byte decodes to one replacement character)."""
    return 4 * max_chars


def preview(head: bytes, max_chars: int) -> str | None:
    """The first `max_chars` characters of a text file, invalid UTF-8 replaced."""
    if max_chars <= 0:
        return None
    return head[: preview_bytes(max_chars)].decode("utf-8", "replace")[:max_chars]
