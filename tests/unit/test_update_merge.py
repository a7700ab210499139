"""The three-way merge over trees (export/update/merge.py) on real git objects, no forge.

Each test builds base (what the export delivered), ours (the branch after the team's work) and
theirs (the new render) as git trees and checks the merged tree file by file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from projectgen.export.update.merge import (
    ConflictKind,
    MergeResult,
    Repo,
    merge_trees,
    team_owned_matcher,
)

Spec = dict[str, bytes | tuple[bytes, bool] | tuple[str, str]]
"""path -> content | (content, executable) | ("link", target)."""


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    git_dir = tmp_path / "repo.git"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "GIT_DIR": str(git_dir),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LC_ALL": "C",
    }
    subprocess.run(["git", "init", "--quiet", "--bare", str(git_dir)], env=env, check=True)
    return Repo(env=env, cwd=tmp_path, timeout=30)


def tree(repo: Repo, files: Spec) -> str:
    index = repo.cwd / "build-index"
    index.unlink(missing_ok=True)
    env = {"GIT_INDEX_FILE": str(index)}
    for path, spec in files.items():
        if isinstance(spec, bytes):
            mode, data = "100644", spec
        elif spec[0] == "link":
            mode, data = "120000", str(spec[1]).encode()
        else:
            content, executable = spec
            assert isinstance(content, bytes)
            mode, data = ("100755" if executable else "100644"), content
        sha = repo.run("hash-object", "-w", "--stdin", input=data).decode().strip()
        repo.run("update-index", "--add", "--cacheinfo", f"{mode},{sha},{path}", env=env)
    return repo.run("write-tree", env=env).decode().strip()


def read(repo: Repo, tree_sha: str) -> dict[str, tuple[str, bytes]]:
    """path -> (mode, content) of a tree."""
    out: dict[str, tuple[str, bytes]] = {}
    for record in repo.run("ls-tree", "-r", "-z", tree_sha).split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, _, sha = meta.decode().split(" ")
        out[path.decode()] = (mode, repo.run("cat-file", "blob", sha))
    return out


def merge(repo: Repo, base: Spec | None, ours: Spec, theirs: Spec, **kwargs: object) -> MergeResult:
    return merge_trees(
        repo,
        base=tree(repo, base) if base is not None else None,
        ours=tree(repo, ours),
        theirs=tree(repo, theirs),
        **kwargs,  # type: ignore[arg-type]
    )


def conflicts(result: MergeResult) -> dict[str, ConflictKind]:
    return {c.path: c.kind for c in result.conflicts}


LINES = b"".join(b"line %d\n" % i for i in range(1, 21))


def edit(line: int, text: bytes) -> bytes:
    lines = LINES.splitlines(keepends=True)
    lines[line - 1] = text + b"\n"
    return b"".join(lines)


def test_a_team_only_change_stays_and_a_template_only_change_is_applied(repo: Repo) -> None:
    base: Spec = {"README.md": b"v1\n", "src/app.py": LINES}
    ours: Spec = {**base, "HUMAN.md": b"written by a person\n", "src/app.py": edit(2, b"team")}
    theirs: Spec = {**base, "README.md": b"v2\n", "src/app.py": edit(18, b"template")}

    result = merge(repo, base, ours, theirs)

    merged = read(repo, result.tree)
    assert merged["HUMAN.md"] == ("100644", b"written by a person\n")
    assert merged["README.md"] == ("100644", b"v2\n")
    assert merged["src/app.py"][1] == edit(18, b"template").replace(b"line 2\n", b"team\n")
    assert result.conflicts == []
    assert (result.changed.paths, result.added.count, result.deleted.count) == (
        ["README.md", "src/app.py"],
        0,
        0,
    )


def test_template_adds_and_drops_files_the_team_did_not_touch(repo: Repo) -> None:
    base: Spec = {"old.txt": b"old\n", "keep.txt": b"keep\n"}
    ours: Spec = {**base, "team.txt": b"team\n"}
    theirs: Spec = {"keep.txt": b"keep\n", "new/added.txt": b"new\n"}

    result = merge(repo, base, ours, theirs)

    assert set(read(repo, result.tree)) == {"keep.txt", "team.txt", "new/added.txt"}
    assert (result.added.paths, result.deleted.paths, result.conflicts) == (
        ["new/added.txt"],
        ["old.txt"],
        [],
    )


def test_a_file_the_team_deleted_stays_deleted_unless_the_template_changed_it(repo: Repo) -> None:
    base: Spec = {"gone.txt": b"a\n", "changed.txt": b"a\n", "other.txt": b"x\n"}
    ours: Spec = {"other.txt": b"x\n"}
    theirs: Spec = {"gone.txt": b"a\n", "changed.txt": b"b\n", "other.txt": b"y\n"}

    result = merge(repo, base, ours, theirs)

    merged = read(repo, result.tree)
    assert "gone.txt" not in merged
    assert merged["changed.txt"] == ("100644", b"b\n")
    assert merged["other.txt"] == ("100644", b"y\n")
    assert conflicts(result) == {"changed.txt": ConflictKind.DELETED_BY_TEAM}


def test_a_file_the_template_dropped_is_deleted_unless_the_team_changed_it(repo: Repo) -> None:
    base: Spec = {"dropped.txt": b"a\n", "edited.txt": b"a\n"}
    ours: Spec = {"dropped.txt": b"a\n", "edited.txt": b"team\n"}
    theirs: Spec = {}

    result = merge(repo, base, ours, theirs)

    assert read(repo, result.tree) == {"edited.txt": ("100644", b"team\n")}
    assert conflicts(result) == {"edited.txt": ConflictKind.DROPPED_BY_TEMPLATE}


def test_a_rename_is_a_delete_and_an_add(repo: Repo) -> None:
    base: Spec = {"a.txt": LINES, "b.txt": b"b\n"}
    ours: Spec = {"a.txt": edit(3, b"team"), "b.txt": b"b\n"}
    theirs: Spec = {"renamed-a.txt": LINES, "renamed-b.txt": b"b\n"}

    result = merge(repo, base, ours, theirs)

    merged = read(repo, result.tree)
    # b.txt was untouched by the team: it moves. a.txt was edited: the edit is not lost.
    assert set(merged) == {"a.txt", "renamed-a.txt", "renamed-b.txt"}
    assert merged["a.txt"][1] == edit(3, b"team")
    assert conflicts(result) == {"a.txt": ConflictKind.DROPPED_BY_TEMPLATE}


def test_the_executable_bit_merges_like_content(repo: Repo) -> None:
    base: Spec = {"run.sh": (LINES, False), "tool.sh": (LINES, False)}
    ours: Spec = {"run.sh": (LINES, True), "tool.sh": (edit(2, b"team"), False)}
    theirs: Spec = {"run.sh": (edit(19, b"template"), False), "tool.sh": (LINES, True)}

    result = merge(repo, base, ours, theirs)

    merged = read(repo, result.tree)
    assert merged["run.sh"] == ("100755", edit(19, b"template"))
    assert merged["tool.sh"] == ("100755", edit(2, b"team"))
    assert result.conflicts == []


def test_symlinks_merge_like_content(repo: Repo) -> None:
    base: Spec = {"t1": b"1\n", "t2": b"2\n", "moved": ("link", "t1"), "both": ("link", "t1")}
    ours: Spec = {**base, "both": ("link", "t2"), "team-link": ("link", "t2")}
    theirs: Spec = {**base, "moved": ("link", "t2"), "both": ("link", "missing")}

    result = merge(repo, base, ours, theirs)

    merged = read(repo, result.tree)
    assert merged["moved"] == ("120000", b"t2")
    assert merged["both"] == ("120000", b"t2"), "a link both sides changed keeps the team's target"
    assert merged["team-link"] == ("120000", b"t2")
    assert conflicts(result) == {"both": ConflictKind.BINARY}


def test_a_file_turned_into_a_link_by_the_team_is_not_overwritten(repo: Repo) -> None:
    base: Spec = {"config": b"a\n", "real": b"r\n"}
    ours: Spec = {"config": ("link", "real"), "real": b"r\n"}
    theirs: Spec = {"config": b"b\n", "real": b"r\n"}

    result = merge(repo, base, ours, theirs)

    assert read(repo, result.tree)["config"] == ("120000", b"real")
    assert conflicts(result) == {"config": ConflictKind.BINARY}


def test_the_same_lines_changed_give_copier_inline_markers(repo: Repo) -> None:
    base: Spec = {"app.cfg": LINES}
    ours: Spec = {"app.cfg": edit(10, b"team value")}
    theirs: Spec = {"app.cfg": edit(10, b"template value")}

    result = merge(repo, base, ours, theirs)

    text = read(repo, result.tree)["app.cfg"][1]
    assert b"<<<<<<< before updating\nteam value\n=======\ntemplate value\n>>>>>>> after updating\n" in text
    assert text.startswith(b"line 1\n") and text.endswith(b"line 20\n")
    assert conflicts(result) == {"app.cfg": ConflictKind.CONTENT}
    assert result.conflicts[0].marked


def test_a_binary_file_both_changed_keeps_the_team_bytes_without_markers(repo: Repo) -> None:
    base: Spec = {"logo.png": b"\x89PNG\0base"}
    ours: Spec = {"logo.png": b"\x89PNG\0team"}
    theirs: Spec = {"logo.png": b"\x89PNG\0template"}

    result = merge(repo, base, ours, theirs)

    assert read(repo, result.tree)["logo.png"] == ("100644", b"\x89PNG\0team")
    assert conflicts(result) == {"logo.png": ConflictKind.BINARY}
    assert not result.conflicts[0].marked


def test_files_both_sides_added(repo: Repo) -> None:
    base: Spec = {"README.md": b"r\n"}
    ours: Spec = {**base, "same.txt": b"same\n", "differs.txt": b"team\n", "blob.bin": b"\0team"}
    theirs: Spec = {**base, "same.txt": b"same\n", "differs.txt": b"template\n", "blob.bin": b"\0tpl"}

    result = merge(repo, base, ours, theirs)

    merged = read(repo, result.tree)
    assert merged["same.txt"] == ("100644", b"same\n")
    assert merged["differs.txt"][1] == (
        b"<<<<<<< before updating\nteam\n=======\ntemplate\n>>>>>>> after updating\n"
    )
    assert merged["blob.bin"] == ("100644", b"\0team")
    assert conflicts(result) == {"differs.txt": ConflictKind.CONTENT, "blob.bin": ConflictKind.BINARY}


def test_without_a_base_every_shared_path_is_added_by_both(repo: Repo) -> None:
    ours: Spec = {"LICENSE": b"MIT\n", "README.md": b"existing\n"}
    theirs: Spec = {"README.md": b"generated\n", "src/main.py": b"print()\n"}

    result = merge(repo, None, ours, theirs)

    merged = read(repo, result.tree)
    assert merged["LICENSE"] == ("100644", b"MIT\n")
    assert merged["src/main.py"] == ("100644", b"print()\n")
    assert conflicts(result) == {"README.md": ConflictKind.CONTENT}


def test_skip_if_exists_files_belong_to_the_team_after_the_first_delivery(repo: Repo) -> None:
    base: Spec = {".env": b"A=1\n", "config/local.yml": b"x: 1\n", "README.md": b"v1\n"}
    ours: Spec = {".env": b"A=team\n", "config/local.yml": b"x: 1\n", "README.md": b"v1\n"}
    theirs: Spec = {
        ".env": b"A=2\n",
        "config/local.yml": b"x: 2\n",
        "config/new.yml": b"fresh\n",
        "README.md": b"v2\n",
    }

    result = merge(repo, base, ours, theirs, team_owned=team_owned_matcher([".env", "config/*.yml"]))

    merged = read(repo, result.tree)
    assert merged[".env"][1] == b"A=team\n"
    assert merged["config/local.yml"][1] == b"x: 1\n", "unchanged by the team, still theirs"
    assert merged["config/new.yml"][1] == b"fresh\n", "a new one is created where none exists"
    assert merged["README.md"][1] == b"v2\n"
    assert result.conflicts == []


def test_no_change_on_either_side_gives_ours(repo: Repo) -> None:
    base: Spec = {"a": b"1\n"}
    ours: Spec = {"a": b"1\n", "team": b"t\n"}

    result = merge(repo, base, ours, base)

    assert result.unchanged
    assert result.tree == tree(repo, ours)


def test_paths_sort_as_git_sorts_them_across_both_sides(repo: Repo) -> None:
    # "a-b" < "a/b" < "a0" in git's byte order; a walk in another order would pair wrong paths.
    base: Spec = {"a-b": b"1\n", "a/b": b"1\n", "a0": b"1\n"}
    ours: Spec = {"a-b": b"team\n", "a/b": b"1\n", "a0": b"team\n"}
    theirs: Spec = {"a-b": b"1\n", "a/b": b"tpl\n", "a0": b"1\n"}

    result = merge(repo, base, ours, theirs)

    merged = read(repo, result.tree)
    assert (merged["a-b"][1], merged["a/b"][1], merged["a0"][1]) == (b"team\n", b"tpl\n", b"team\n")
    assert result.conflicts == []


def test_the_merge_imports_on_its_own() -> None:
    """update/ is pure: importing it first must not run into publish/ (an import cycle did)."""
    code = "import projectgen.export.update.merge, projectgen.export.update.record"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
