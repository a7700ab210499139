"""The three-way merge over trees: base (what this export delivered last), ours (the target
branch now), theirs (the new render), with `copier update`'s rules.

Why not `git merge-tree --write-tree` (Debian's git is 2.39, so it exists): it detects renames
(a template rename must be a delete and an add here), cannot take a base that is not an
ancestor before 2.40 (`--merge-base`), labels conflicts with commit names instead of copier's
`before updating` / `after updating`, and its modify/delete rules are git's, not copier's. The
walk below is what copier's inline update does per file, over git objects instead of three
checkouts, and works with any git: `git diff-tree` lists what each side changed (streamed,
sorted by path, no blob read, so a partial clone fetches nothing for it); a path only one side
changed takes that side; a path both changed is decided here, and only such files are read
(`git merge-file`, copier's labels). The result is ours with those entries replaced, written
through a private index (`read-tree`, `update-index --index-info`, `write-tree`), so memory
holds one path at a time and a 20,000-file tree is never listed in Python.

Rules (copier's, with DESIGN.md's one difference):
- changed by one side only: that side's version (content, executable bit, symlink);
- deleted by the team, unchanged by the template: stays deleted;
- deleted by the team, changed by the template: the template's version comes back, listed
  as a conflict (a person decides whether the deletion still holds);
- dropped by the template, unchanged by the team: deleted;
- dropped by the template, changed by the team: stays (the team's version), listed as a conflict
  (copier drops the team's edit silently; we never do);
- changed by both: lines merge; the same lines changed give copier's inline markers and the
  file is listed; binary files, symlinks and a file turned into a link (or back) are never
  marked: the team's version stays and the file is listed;
- added by both with different content: merged against an empty base (markers, listed);
- paths the template marks `_skip_if_exists` belong to the team once delivered: the team's
  version always stays; the template only adds such a file where none exists.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO

import pathspec

LABELS = ("before updating", "last update", "after updating")
"""copier's `git merge-file` labels for an inline conflict: ours, base, theirs."""
LINK_MODE = "120000"
GITLINK_MODE = "160000"
LISTED = 200
"""How many paths of each kind a result keeps by name (a request body lists them); counts are exact."""
_BINARY_PROBE = 8000
"""git's own test: a NUL byte in the first 8000 bytes makes a file binary."""
_CHUNK = 1 << 16


class MergeError(Exception):
    """git failed during the merge. `permanent`: retrying will not help (a timeout may)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class ConflictKind(StrEnum):
    CONTENT = "content"
    """Both changed the same lines: the file carries markers."""
    BINARY = "binary"
    """Both changed a binary file, a symlink, or its type: the team's version stays, no markers."""
    DELETED_BY_TEAM = "deletedByTeam"
    """The team deleted it, the template changed it: the template's version is back."""
    DROPPED_BY_TEMPLATE = "droppedByTemplate"
    """The template dropped it, the team changed it: the team's version stays."""


@dataclass(frozen=True)
class Conflict:
    path: str
    kind: ConflictKind

    @property
    def marked(self) -> bool:
        return self.kind == ConflictKind.CONTENT


@dataclass(frozen=True)
class Entry:
    """One path of a tree as git stores it: mode (`100644`, `100755`, `120000`, `160000`) and object."""

    mode: str
    sha: str

    @property
    def is_link(self) -> bool:
        return self.mode == LINK_MODE

    @property
    def is_file(self) -> bool:
        return self.mode in ("100644", "100755")


@dataclass
class PathList:
    """A count and the first LISTED names: enough for a request body, bounded in memory."""

    count: int = 0
    paths: list[str] = field(default_factory=list)

    def add(self, path: str) -> None:
        self.count += 1
        if len(self.paths) < LISTED:
            self.paths.append(path)


@dataclass
class MergeResult:
    tree: str
    """The merged tree's object name."""
    added: PathList = field(default_factory=PathList)
    changed: PathList = field(default_factory=PathList)
    deleted: PathList = field(default_factory=PathList)
    """What the merge changes relative to ours (the target branch): what a request shows."""
    conflicts: list[Conflict] = field(default_factory=list)
    """Every conflicted path (a person must see all of them), in path order."""

    @property
    def unchanged(self) -> bool:
        return not (self.added.count or self.changed.count or self.deleted.count)


@dataclass(frozen=True)
class Repo:
    """A local git directory and the environment that isolates it (no user or system config)."""

    env: Mapping[str, str]
    cwd: Path
    timeout: float = 300.0

    def run(self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None) -> bytes:
        try:
            proc = subprocess.run(
                ["git", *args],
                env={**self.env, **(env or {})},
                cwd=self.cwd,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise MergeError(f"git {args[0]} timed out after {self.timeout:.0f}s", permanent=False) from None
        if proc.returncode != 0:
            raise _failed(args[0], proc.stderr)
        return proc.stdout


def _failed(what: str, stderr: bytes) -> MergeError:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return MergeError(
        f"git {what} failed during the update merge: {'; '.join(lines[-3:])[-500:]}", permanent=True
    )


def team_owned_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """A predicate for copier's `_skip_if_exists` patterns (gitignore syntax, as copier reads them)."""
    if not patterns:
        return lambda _path: False
    spec = pathspec.PathSpec.from_lines("gitignore", patterns)
    return spec.match_file


def _records(stream: IO[bytes]) -> Iterator[bytes]:
    """The NUL-terminated fields of a `-z` output, read in chunks."""
    pending = b""
    while chunk := stream.read(_CHUNK):
        pending += chunk
        *done, pending = pending.split(b"\0")
        yield from done
    if pending:
        yield pending


def _changes(repo: Repo, old: str | None, new: str) -> Iterator[tuple[bytes, Entry | None, Entry | None]]:
    """(path, entry in old, entry in new) for every path that differs, sorted as git sorts paths.

    `old` None: everything in `new` is added (the first delivery has no base)."""
    args = (
        ["ls-tree", "-r", "-z", "--full-tree", new]
        if old is None
        else ["diff-tree", "-r", "-z", "--no-renames", "--raw", old, new]
    )
    proc = subprocess.Popen(
        ["git", *args],
        env=dict(repo.env),
        cwd=repo.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        fields = _records(proc.stdout)
        if old is None:
            for record in fields:
                meta, _, path = record.partition(b"\t")
                mode, _kind, sha = meta.decode().split(" ")
                yield path, None, Entry(mode, sha)
        else:
            for header in fields:
                path = next(fields)
                src_mode, dst_mode, src_sha, dst_sha, _status = header.decode().lstrip(":").split(" ")
                yield (
                    path,
                    None if src_mode == "000000" else Entry(src_mode, src_sha),
                    None if dst_mode == "000000" else Entry(dst_mode, dst_sha),
                )
        stderr = proc.stderr.read() if proc.stderr else b""
        if proc.wait(timeout=repo.timeout) != 0:
            raise _failed(args[0], stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


_Side = tuple[Entry | None, Entry | None]
"""(before, after) of one side for one path."""


def _joined(
    ours: Iterator[tuple[bytes, Entry | None, Entry | None]],
    theirs: Iterator[tuple[bytes, Entry | None, Entry | None]],
) -> Iterator[tuple[bytes, _Side | None, _Side | None]]:
    """Both change lists walked together by path (both are in git's byte order)."""
    o = next(ours, None)
    t = next(theirs, None)
    while o is not None or t is not None:
        if t is None or (o is not None and o[0] < t[0]):
            assert o is not None
            yield o[0], (o[1], o[2]), None
            o = next(ours, None)
        elif o is None or t[0] < o[0]:
            yield t[0], None, (t[1], t[2])
            t = next(theirs, None)
        else:
            yield o[0], (o[1], o[2]), (t[1], t[2])
            o, t = next(ours, None), next(theirs, None)


class _Merger:
    """Decides each path and writes the decisions into a private index seeded with ours."""

    def __init__(
        self, repo: Repo, index: IO[bytes], team_owned: Callable[[str], bool], scratch: Path
    ) -> None:
        self.repo = repo
        self.index = index
        self.team_owned = team_owned
        self.scratch = scratch
        self.result = MergeResult(tree="")
        self.deferred: list[tuple[bytes, Entry | None, Entry, Entry, str | None]] = []
        """Paths both sides changed as text: merged after the walk, when their blobs are here."""

    def put(self, path: bytes, now: Entry | None, entry: Entry | None) -> None:
        """Make the result hold `entry` at `path` where ours holds `now`."""
        if entry == now:
            return
        name = path.decode("utf-8", "surrogateescape")
        if entry is None:
            assert now is not None
            self.index.write(b"0 %s\t%s\0" % (b"0" * 40, path))
            self.result.deleted.add(name)
            return
        self.index.write(b"%s %s\t%s\0" % (entry.mode.encode(), entry.sha.encode(), path))
        (self.result.added if now is None else self.result.changed).add(name)

    def conflict(self, path: bytes, kind: ConflictKind) -> None:
        self.result.conflicts.append(Conflict(path.decode("utf-8", "surrogateescape"), kind))

    def path(self, path: bytes, ours: _Side | None, theirs: _Side | None) -> None:
        if theirs is None:
            return  # only the team changed it: ours already holds it
        base, new = theirs
        if ours is None:
            # Only the template changed it; ours still equals base.
            if base is not None and self.team_owned(path.decode("utf-8", "surrogateescape")):
                return
            self.put(path, base, new)
            return
        now = ours[1]
        if now == new:
            return
        if self.team_owned(path.decode("utf-8", "surrogateescape")) and (base is not None or now is not None):
            return
        if now is None:
            if new is not None:  # deleted by the team, changed by the template
                self.put(path, None, new)
                self.conflict(path, ConflictKind.DELETED_BY_TEAM)
            return
        if new is None:  # dropped by the template, changed by the team
            self.conflict(path, ConflictKind.DROPPED_BY_TEMPLATE)
            return
        self.both_changed(path, base, now, new)

    def both_changed(self, path: bytes, base: Entry | None, now: Entry, new: Entry) -> None:
        if base is not None and now.sha == new.sha:
            self.put(path, now, Entry(_mode(base.mode, now.mode, new.mode) or now.mode, now.sha))
            return
        mode = (
            _mode(base.mode, now.mode, new.mode)
            if base is not None
            else (now.mode if now.mode == new.mode else None)
        )
        if base is not None and now.sha == base.sha and now.is_link == new.is_link == base.is_link:
            self.put(path, now, Entry(mode or new.mode, new.sha))
            return
        if base is not None and new.sha == base.sha and now.is_link == new.is_link == base.is_link:
            self.put(path, now, Entry(mode or now.mode, now.sha))
            return
        if not (now.is_file and new.is_file and (base is None or base.is_file)):
            self.conflict(path, ConflictKind.BINARY)
            return
        self.deferred.append((path, base, now, new, mode))

    def finish(self, prefetch: Callable[[Sequence[str]], None] | None) -> None:
        """The line merges the walk deferred: their blobs fetched in one request, then merged."""
        if prefetch is not None and self.deferred:
            prefetch(sorted({e.sha for _, b, o, _, _ in self.deferred for e in (b, o) if e is not None}))
        for path, base, now, new, mode in self.deferred:
            merged = self.merge_file(base, now, new)
            if merged is None:
                self.conflict(path, ConflictKind.BINARY)
                continue
            sha, conflicted = merged
            self.put(path, now, Entry(mode or now.mode, sha))
            if conflicted:
                self.conflict(path, ConflictKind.CONTENT)
        self.result.conflicts.sort(key=lambda c: c.path.encode("utf-8", "surrogateescape"))

    def merge_file(self, base: Entry | None, now: Entry, new: Entry) -> tuple[str, bool] | None:
        """copier's `git merge-file` with its labels; None for a binary file."""
        names = []
        for label, entry in (("ours", now), ("base", base), ("theirs", new)):
            target = self.scratch / label
            with open(target, "wb") as out:
                if entry is not None:
                    self._blob(entry.sha, out)
            names.append(str(target))
        for name in names:
            with open(name, "rb") as fh:
                if b"\0" in fh.read(_BINARY_PROBE):
                    return None
        proc = subprocess.run(
            ["git", "merge-file", "-p", *(a for label in LABELS for a in ("-L", label)), *names],
            env=dict(self.repo.env),
            cwd=self.repo.cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=self.repo.timeout,
            check=False,
        )
        if not 0 <= proc.returncode < 128:
            raise _failed("merge-file", proc.stderr)
        sha = self.repo.run("hash-object", "-w", "-t", "blob", "--no-filters", "--stdin", input=proc.stdout)
        return sha.decode().strip(), proc.returncode > 0

    def _blob(self, sha: str, out: IO[bytes]) -> None:
        # A partial clone fetches the blob here, and only here: the rest of the walk reads trees.
        proc = subprocess.Popen(
            ["git", "cat-file", "blob", sha],
            env=dict(self.repo.env),
            cwd=self.repo.cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
        )
        _, stderr = proc.communicate(timeout=self.repo.timeout)
        if proc.returncode != 0:
            raise _failed("cat-file", stderr)


def _mode(base: str, ours: str, theirs: str) -> str | None:
    """The executable bit merges like content: one side's change wins; None when both differ."""
    if ours == base:
        return theirs
    if theirs == base or ours == theirs:
        return ours
    return None


def merge_trees(
    repo: Repo,
    *,
    base: str | None,
    ours: str,
    theirs: str,
    team_owned: Callable[[str], bool] = lambda _path: False,
    prefetch: Callable[[Sequence[str]], None] | None = None,
) -> MergeResult:
    """Merge `theirs` into `ours` against `base` (tree-ish names in `repo`), as the module says.

    `base` None: nothing was delivered yet that the branch could hold (a repository this export
    did not create); every path both have is "added by both". `prefetch(object names)`: get the blobs
    the line merges read in one go (a partial clone would fetch each one alone). Raises MergeError."""
    with tempfile.TemporaryDirectory(prefix="merge-", dir=repo.cwd) as scratch:
        index = Path(scratch) / "index"
        env = {**repo.env, "GIT_INDEX_FILE": str(index)}
        private = Repo(env=env, cwd=repo.cwd, timeout=repo.timeout)
        private.run("read-tree", ours)
        proc = subprocess.Popen(
            ["git", "update-index", "-z", "--index-info"],
            env=env,
            cwd=repo.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None
        merger = _Merger(private, proc.stdin, team_owned, Path(scratch))
        try:
            for path, o, t in _joined(_changes(private, base, ours), _changes(private, base, theirs)):
                merger.path(path, o, t)
            merger.finish(prefetch)
            proc.stdin.close()
            stderr = proc.stderr.read() if proc.stderr else b""
            if proc.wait(timeout=repo.timeout) != 0:
                raise _failed("update-index", stderr)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # --missing-ok: in a partial clone, ours' blobs stay on the server; write-tree must not fetch them.
        merger.result.tree = private.run("write-tree", "--missing-ok").decode().strip()
    return merger.result


def tree_of(repo: Repo, rev: str) -> str:
    return repo.run("rev-parse", "--verify", "--end-of-options", f"{rev}^{{tree}}").decode().strip()


def empty_tree(repo: Repo) -> str:
    return repo.run("hash-object", "-t", "tree", "-w", "--stdin", input=b"").decode().strip()
