"""Templates with `_preserve_symlinks: true`: in-tree links are kept as copier keeps them (compared
with `copier copy --trust --skip-tasks` run here), links that leave the project are refused by name."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_generation_template import outside_tree, publish, server, work
from test_sandbox_confinement import copier_copy, render

from projectgen.api.v1alpha1.generatedproject import GeneratedProjectSpec
from projectgen.generation.errors import GenerationError
from projectgen.generation.manifest import Manifest
from projectgen.generation.render import render_project
from projectgen_dev.gitserver import GitHTTPServer

__all__ = ["server", "work"]  # module fixtures shared with test_generation_template

LINKED_YML = """\
_preserve_symlinks: true
project_name:
  type: str
  default: demo
doc:
  type: str
  default: docs/guide.md
"""
LINKED_FILES = {
    "copier.yml": LINKED_YML,
    "README.md.jinja": "# {{ project_name }}\n",
    "docs/guide.md": "guide\n",
    "src/pkg/__init__.py": "VERSION = 1\n",
}
LINKED_LINKS = {
    "README": "README.md",  # to a file that is rendered (README.md.jinja)
    "pkg": "src/pkg",  # to a directory
    "docs/readme.md": "../README.md",  # climbs one level, stays inside
    "latest": "README",  # a link to a link
    "current.jinja": "{{ doc }}",  # a templated target: rendered, and the suffix dropped
}


def entries(root: Path) -> dict[str, tuple[str, Any]]:
    """Every file and link below root, links never followed: ('link', target) or ('file', bytes, x)."""
    found: dict[str, tuple[str, Any]] = {}
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in [*names, *(d for d in dirs if os.path.islink(os.path.join(directory, d)))]:
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                found[rel] = ("link", os.readlink(full))
            else:
                found[rel] = ("file", Path(full).read_bytes(), os.access(full, os.X_OK))
    return found


def test_in_tree_links_are_kept_as_copier_keeps_them(
    tmp_path: Path, server: GitHTTPServer, work: Path
) -> None:
    url = publish(server, work, "links-kept", [("v1.0.0", LINKED_FILES)], symlinks=LINKED_LINKS)
    result, tree = render(tmp_path / "pg", url, data={"project_name": "demo"})
    expected = copier_copy(tmp_path, url, {"project_name": "demo"})
    ours = entries(tree)
    assert ours == entries(expected)
    assert ours["current"] == ("link", "docs/guide.md")
    assert ours["pkg"] == ("link", "src/pkg")
    assert (tree / "latest").read_text() == "# demo\n"  # the chain resolves in the tree
    records = {f.path: f for f in result.manifest.files}
    for path in ("README", "pkg", "docs/readme.md", "latest", "current"):
        record = records[path]
        target = os.readlink(tree / path)
        assert (record.type, record.target, record.executable) == ("symlink", target, False)
        assert (record.size, record.sha256) == (len(target), hashlib.sha256(target.encode()).hexdigest())
        assert record.status_record()["target"] == target
    assert "target" not in records["README.md"].status_record()
    assert records["README.md"].type == "markdown"


def test_a_new_link_target_changes_the_content_hash(
    tmp_path: Path, server: GitHTTPServer, work: Path
) -> None:
    url = publish(server, work, "links-hash", [("v1.0.0", LINKED_FILES)], symlinks=LINKED_LINKS)
    a, _ = render(tmp_path / "a", url)
    again, _ = render(tmp_path / "b", url)
    other, _ = render(tmp_path / "c", url, data={"doc": "README.md"})
    assert a.manifest.content_hash == again.manifest.content_hash
    assert other.manifest.content_hash != a.manifest.content_hash
    assert {f.path: f.sha256 for f in other.manifest.files if f.path != "current"} == {
        f.path: f.sha256 for f in a.manifest.files if f.path != "current"
    }
    dumped = tmp_path / "manifest.json"
    other.manifest.dump(dumped)
    loaded = Manifest.load(dumped)
    assert loaded.content_hash == other.manifest.content_hash
    assert {f.path: f.target for f in loaded.files if f.target} == {
        "README": "README.md",
        "pkg": "src/pkg",
        "docs/readme.md": "../README.md",
        "latest": "README",
        "current": "README.md",
    }
    records = json.loads(dumped.read_text())["files"]
    assert all(("target" in r) == (r["type"] == "symlink") for r in records)


ESCAPING_YML = """\
_preserve_symlinks: true
_subdirectory: project
where:
  type: str
  default: README.md
"""


@pytest.mark.parametrize(
    ("name", "links", "data", "message"),
    [
        (
            "abs",
            {"project/leak.jinja": "{{ where }}"},
            {"where": "/etc/passwd"},
            r"symlink 'leak' -> '/etc/passwd' has an absolute target",
        ),
        (
            "dotdot",
            {"project/leak.jinja": "{{ where }}"},
            {"where": "../../etc/passwd"},
            r"symlink 'leak' -> '../../etc/passwd' points outside the project",
        ),
        (
            # inside the template checkout, outside the project (_subdirectory)
            "subdir",
            {"project/leak": "../copier.yml"},
            {},
            r"symlink 'leak' -> '../copier.yml' points outside the project",
        ),
        (
            "chain",
            {"project/a": "b", "project/b": "sub/../../copier.yml"},
            {},
            r"symlink 'a' -> 'b' points outside the project \(through symlink 'b' -> 'sub/../../copier.yml'\)",
        ),
        (
            "dangling",
            {"project/a": "b", "project/b": "gone.txt"},
            {},
            r"symlink 'a' -> 'b' dangles: 'gone.txt' is not in the project",
        ),
    ],
)
def test_links_leaving_the_project_are_refused_by_name(
    tmp_path: Path,
    server: GitHTTPServer,
    work: Path,
    name: str,
    links: dict[str, str],
    data: dict[str, str],
    message: str,
) -> None:
    files = {"copier.yml": ESCAPING_YML, "project/README.md": "hi\n", "project/sub/x.txt": "x\n"}
    url = publish(server, work, f"links-{name}", [("v1.0.0", files)], symlinks=links)
    with pytest.raises(GenerationError, match=r"sources\[0\]\.template: " + message) as err:
        render(tmp_path, url, data=data)
    assert err.value.permanent
    assert str(tmp_path) not in str(err.value)
    assert outside_tree(tmp_path) == ["stage", "stage/tree"]


def test_link_in_the_template_pointing_outside_it_is_refused(
    tmp_path: Path, server: GitHTTPServer, work: Path
) -> None:
    url = publish(
        server,
        work,
        "links-template-escape",
        [("v1.0.0", {"copier.yml": "_preserve_symlinks: true\n", "README.md": "hi\n"})],
        symlinks={"up": "../../etc/passwd"},
    )
    with pytest.raises(
        GenerationError, match=r"the template contains a symlink 'up' pointing outside the template"
    ):
        render(tmp_path, url)


def test_later_source_cannot_write_through_a_link(tmp_path: Path, server: GitHTTPServer, work: Path) -> None:
    url = publish(server, work, "links-then-inline", [("v1.0.0", LINKED_FILES)], symlinks=LINKED_LINKS)
    spec = {
        "projectRef": {"name": "p"},
        "sources": [
            {"template": {"url": url}},
            {"inline": {"files": [{"path": "pkg/extra.py", "content": "x"}]}},
        ],
    }
    with pytest.raises(
        GenerationError, match=r"sources\[1\]\.inline.*'pkg' is a symlink, written by sources\[0\]"
    ):
        render_project(GeneratedProjectSpec.model_validate(spec), tmp_path / "t", configmaps={}.get)
    # a later source may replace a link with a file, and the chain through it then ends there
    spec["sources"][1] = {"inline": {"files": [{"path": "README", "content": "plain\n"}]}}
    result = render_project(GeneratedProjectSpec.model_validate(spec), tmp_path / "u", configmaps={}.get)
    records = {f.path: f for f in result.manifest.files}
    assert records["README"].target is None and records["latest"].target == "README"
    assert (tmp_path / "u" / "latest").read_text() == "plain\n"
