"""Helpers shared by the benchmark scripts: test trees, child processes with their peak RSS, tables.

Trees are always generated into a fresh directory (a new `tempfile.mkdtemp`), never into one that
held an earlier tree: on this root filesystem, creating files gets slower after tens of thousands
of deletions in the same place.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024

_KEYWORDS = [
    "def", "return", "if", "else", "elif", "for", "while", "in", "not", "and", "or", "import", "from",
    "class", "self", "None", "True", "False", "try", "except", "raise", "with", "as", "yield", "lambda",
    "const", "let", "var", "function", "async", "await", "static", "public", "private", "int", "str",
]  # fmt: skip
_SYLLABLES = [
    "get", "set", "user", "name", "file", "path", "data", "config", "item", "list", "node", "value",
    "count", "index", "key", "result", "error", "handler", "request", "response", "build", "load",
    "parse", "render", "export", "project", "source", "target", "cache", "client", "server", "token",
]  # fmt: skip
_PUNCT = ["(", ")", ": ", ", ", " = ", " == ", " + ", "[", "]", ".", " -> ", "{", "}", ";"]


def _identifier(rng: random.Random) -> str:
    parts = [rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))]
    style = rng.random()
    if style < 0.6:
        return "_".join(parts)
    return parts[0] + "".join(p.capitalize() for p in parts[1:])


def code_line_pool(seed: int, size: int = 6000) -> list[str]:
    """Lines that look like source code: indentation, keywords, identifiers, literals, comments."""
    rng = random.Random(seed)
    pool = []
    for _ in range(size):
        indent = "    " * rng.choice((0, 1, 1, 2, 2, 2, 3, 3, 4))
        kind = rng.random()
        if kind < 0.08:
            words = " ".join(rng.choice(_SYLLABLES + _KEYWORDS) for _ in range(rng.randint(3, 10)))
            line = f"{indent}# {words}"
        elif kind < 0.12:
            line = ""
        elif kind < 0.25:
            args = ", ".join(_identifier(rng) for _ in range(rng.randint(0, 4)))
            line = f"{indent}def {_identifier(rng)}({args}):"
        elif kind < 0.35:
            line = f'{indent}{_identifier(rng)} = "{rng.choice(_SYLLABLES)}-{rng.randint(0, 9999)}"'
        else:
            tokens = []
            for _ in range(rng.randint(2, 9)):
                r = rng.random()
                if r < 0.5:
                    tokens.append(_identifier(rng))
                elif r < 0.7:
                    tokens.append(rng.choice(_KEYWORDS))
                elif r < 0.8:
                    tokens.append(str(rng.randint(0, 4096)))
                tokens.append(rng.choice(_PUNCT))
            line = indent + "".join(tokens).strip()
        pool.append(line)
    return pool


def code_text(rng: random.Random, pool: Sequence[str], size: int) -> bytes:
    """About `size` bytes of code-like text, cut to exactly `size` bytes."""
    lines = rng.choices(pool, k=size // 30 + 8)
    data = "\n".join(lines).encode()
    while len(data) < size:
        data += b"\n" + "\n".join(rng.choices(pool, k=size // 30 + 8)).encode()
    return data[:size]


@dataclass
class Tree:
    root: Path
    """The directory that is archived (its basename is the archive prefix)."""
    manifest: Path
    files: int
    size: int


def _manifest_record(rel: str, data: bytes, executable: bool) -> dict[str, object]:
    return {
        "path": rel,
        "name": rel.rsplit("/", 1)[-1],
        "type": "text",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "executable": executable,
        "preview": None,
    }


def _write_manifest(path: Path, records: list[dict[str, object]]) -> None:
    # Imported here so that `_common` stays importable without the project installed.
    from projectgen.generation.manifest import Manifest

    Manifest.from_json({"files": records}).dump(path)


def make_small_tree(base: Path, files: int = 20_000, seed: int = 1) -> Tree:
    """`files` code-like text files of 1-8 KiB in a few hundred directories (about 90 MB for 20k)."""
    rng = random.Random(seed)
    pool = code_line_pool(seed)
    root = Path(tempfile.mkdtemp(prefix="small-", dir=base)) / "project"
    root.mkdir()
    dirs = [""]
    for i in range(max(1, files // 60)):
        parent = rng.choice(dirs)
        name = f"{rng.choice(_SYLLABLES)}_{i}"
        dirs.append(f"{parent}/{name}" if parent else name)
    for d in dirs[1:]:
        (root / d).mkdir()
    exts = [".py", ".py", ".py", ".ts", ".go", ".rs", ".md", ".yaml", ".sh"]
    records = []
    total = 0
    for i in range(files):
        d = rng.choice(dirs)
        ext = rng.choice(exts)
        rel = f"{d}/{_identifier(rng)}_{i}{ext}" if d else f"{_identifier(rng)}_{i}{ext}"
        data = code_text(rng, pool, rng.randint(1024, 8192))
        executable = ext == ".sh"
        p = root / rel
        p.write_bytes(data)
        if executable:
            p.chmod(0o755)
        records.append(_manifest_record(rel, data, executable))
        total += len(data)
    manifest = root.parent / "manifest.json"
    _write_manifest(manifest, records)
    return Tree(root=root, manifest=manifest, files=files, size=total)


def make_large_tree(base: Path, files: int = 20, file_size: int = 25 * MiB, seed: int = 2) -> Tree:
    """`files` large files of mixed content: code-like text with a random-bytes block in every 8.

    The random blocks are what real large files carry (images, archives, binaries); they keep the
    compressor honest about incompressible input.
    """
    rng = random.Random(seed)
    pool = code_line_pool(seed)
    root = Path(tempfile.mkdtemp(prefix="large-", dir=base)) / "project"
    (root / "assets").mkdir(parents=True)
    records = []
    text_blocks = [code_text(rng, pool, MiB) for _ in range(8)]
    for i in range(files):
        rel = f"assets/blob_{i:02d}.bin"
        h = hashlib.sha256()
        written = 0
        with open(root / rel, "wb") as fh:
            block_no = 0
            while written < file_size:
                n = min(MiB, file_size - written)
                block = rng.randbytes(n) if block_no % 8 == 7 else rng.choice(text_blocks)[:n]
                fh.write(block)
                h.update(block)
                written += n
                block_no += 1
        records.append(
            {
                "path": rel,
                "name": rel.rsplit("/", 1)[-1],
                "type": "binary",
                "size": file_size,
                "sha256": h.hexdigest(),
                "executable": False,
                "preview": None,
            }
        )
    manifest = root.parent / "manifest.json"
    _write_manifest(manifest, records)
    return Tree(root=root, manifest=manifest, files=files, size=files * file_size)


TIME = shutil.which("time") or "/usr/bin/time"


def measure_child(
    argv: Sequence[str], *, cwd: Path | None = None, pipeline: bool = False
) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of one child process (and the children it waits for).

    The RSS comes from GNU time's %M, not from this process's getrusage: after fork (or vfork)
    and exec, a child's ru_maxrss starts at its parent's RSS, so a large benchmark process would
    inflate every child's figure. GNU time is a small C program, so its child's is the real one.
    With `pipeline`, argv is one shell command line.
    """
    command = ["sh", "-c", argv[0]] if pipeline else list(argv)
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        start = time.perf_counter()
        proc = subprocess.run(
            [TIME, "-f", "%M", "-o", report.name, *command],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}): {proc.stderr.strip()}")
        rss_kb = int(report.read().split()[-1])
    return seconds, rss_kb / 1024, proc.stdout


@dataclass
class Row:
    tool: str
    runs: list[float] = field(default_factory=list)
    inner: list[float] = field(default_factory=list)
    """Seconds inside the function under test, as the child reported them (projectgen rows)."""
    rss_mb: float = 0.0
    out_bytes: int = 0
    in_bytes: int = 0
    peer: str | None = None
    note: str = ""

    @property
    def best(self) -> float:
        return min(self.runs)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def ratio(self) -> float:
        return self.out_bytes / self.in_bytes if self.in_bytes else 0.0


def print_table(title: str, rows: list[Row]) -> None:
    """One line per tool: whole-process time (min, median), the function's own time when known."""
    by_tool = {r.tool: r for r in rows}
    header = (
        f"{'tool':<20} {'min s':>6} {'med s':>6} {'fn s':>6} {'MB/s':>6} {'RSS MB':>7} "
        f"{'out MB':>7} {'ratio':>6}  {'time vs peer (fn)':<30}"
    )
    print(f"\n{title}")
    print(header)
    print("-" * len(header))
    for r in rows:
        if not r.runs:
            print(f"{r.tool:<20} skipped: {r.note}")
            continue
        vs = ""
        peer = by_tool.get(r.peer) if r.peer else None
        if peer is not None and peer.runs:
            vs = f"{r.best / peer.best:.2f}x"
            if r.inner:
                vs += f" ({min(r.inner) / peer.best:.2f}x)"
            vs += f" {peer.tool}"
        inner = f"{min(r.inner):6.2f}" if r.inner else f"{'':6}"
        mbs = r.in_bytes / 1e6 / r.best
        print(
            f"{r.tool:<20} {r.best:6.2f} {r.median:6.2f} {inner} {mbs:6.0f} {r.rss_mb:7.1f} "
            f"{r.out_bytes / 1e6:7.1f} {r.ratio:6.3f}  {vs:<30}"
        )
    sys.stdout.flush()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def proc_status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM...), in MB (0 if unknown)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
