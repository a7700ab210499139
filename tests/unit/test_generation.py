"""render_project with inline and ConfigMap sources: layering, path safety, the manifest."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from projectgen.api.v1alpha1.generatedproject import (
    ConfigMapSource,
    GeneratedProjectSpec,
    InlineFile,
    InlineSource,
    KeyToPath,
    Source,
)
from projectgen.generation.errors import GenerationError, SourceUnavailable
from projectgen.generation.filetype import classify
from projectgen.generation.manifest import Manifest, content_hash
from projectgen.generation.paths import path_problem
from projectgen.generation.render import ConfigMapData, RenderResult, render_project


def spec(*sources: dict[str, Any]) -> GeneratedProjectSpec:
    return GeneratedProjectSpec.model_validate({"projectRef": {"name": "p"}, "sources": list(sources)})


def inline(*files: dict[str, Any]) -> dict[str, Any]:
    return {"inline": {"files": list(files)}}


def loader(**maps: ConfigMapData) -> Any:
    return maps.get


def render(tmp_path: Path, s: GeneratedProjectSpec, **maps: ConfigMapData) -> RenderResult:
    return render_project(s, tmp_path / "stage" / "tree", configmaps=loader(**maps))


def tree(tmp_path: Path) -> Path:
    return tmp_path / "stage" / "tree"


def files_on_disk(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def everything_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- inline ------------------------------------------------------------------------------------


def test_inline_text_base64_and_modes(tmp_path: Path) -> None:
    result = render(
        tmp_path,
        spec(
            inline(
                {"path": "src/app.py", "content": "print('hi')\n"},
                {"path": "bin/run", "content": "#!/bin/sh\necho hi\n", "executable": True},
                {
                    "path": "logo.png",
                    "contentBase64": base64.b64encode(b"\x89PNG\r\n\x1a\n\x00\x00").decode(),
                },
            )
        ),
    )
    root = tree(tmp_path)
    assert files_on_disk(root) == {
        "src/app.py": b"print('hi')\n",
        "bin/run": b"#!/bin/sh\necho hi\n",
        "logo.png": b"\x89PNG\r\n\x1a\n\x00\x00",
    }
    assert mode(root / "bin/run") == 0o755
    assert mode(root / "src/app.py") == 0o644
    by_path = {f.path: f for f in result.manifest.files}
    assert [f.path for f in result.manifest.files] == ["bin/run", "logo.png", "src/app.py"]
    assert by_path["src/app.py"].type == "python"
    assert by_path["src/app.py"].preview == "print('hi')\n"
    assert by_path["bin/run"].executable and by_path["bin/run"].type == "sh"
    assert by_path["logo.png"].type == "png" and by_path["logo.png"].preview is None
    for f in result.manifest.files:
        data = (root / f.path).read_bytes()
        assert f.sha256 == hashlib.sha256(data).hexdigest() and f.size == len(data)
        assert f.name == f.path.rsplit("/", 1)[-1]
    assert result.manifest.total_files == 3
    assert result.manifest.total_size == sum(f.size for f in result.manifest.files)
    assert result.manifest.content_hash == content_hash(result.manifest.files)
    assert result.warnings == []


def test_layering_later_source_overrides_content_and_mode(tmp_path: Path) -> None:
    result = render(
        tmp_path,
        spec(
            inline(
                {"path": "a/run", "content": "old", "executable": True}, {"path": "keep.txt", "content": "k"}
            ),
            {"configMap": {"name": "cm", "items": [{"key": "run", "path": "a/run"}]}},
            inline({"path": "keep2.txt", "content": "k2"}),
        ),
        cm=ConfigMapData(data={"run": "new"}),
    )
    root = tree(tmp_path)
    assert files_on_disk(root) == {"a/run": b"new", "keep.txt": b"k", "keep2.txt": b"k2"}
    assert mode(root / "a/run") == 0o644
    run = next(f for f in result.manifest.files if f.path == "a/run")
    assert not run.executable and run.sha256 == hashlib.sha256(b"new").hexdigest()


def test_duplicate_path_within_one_source_refused(tmp_path: Path) -> None:
    with pytest.raises(GenerationError) as err:
        render(tmp_path, spec(inline({"path": "a.txt", "content": "1"}, {"path": "a.txt", "content": "2"})))
    assert err.value.permanent
    assert str(err.value) == (
        "sources[0].inline.files[1]: path 'a.txt' is written twice by this source (also by sources[0].inline.files[0])"
    )


def test_duplicate_item_path_in_configmap_refused(tmp_path: Path) -> None:
    s = spec({"configMap": {"name": "cm", "items": [{"key": "a", "path": "x"}, {"key": "b", "path": "x"}]}})
    with pytest.raises(GenerationError, match=r"sources\[0\]\.configMap\.items\[1\].*'x' is written twice"):
        render(tmp_path, s, cm=ConfigMapData(data={"a": "1", "b": "2"}))


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (
            "a",
            "a/b",
            r"sources\[1\]\.inline\.files\[0\]: cannot write 'a/b': 'a' is a file, written by sources\[0\]",
        ),
        (
            "a/b",
            "a",
            r"sources\[1\]\.inline\.files\[0\]: cannot write file 'a': it is a directory, holding 'a/b'",
        ),
    ],
)
def test_file_directory_conflict_refused(tmp_path: Path, first: str, second: str, message: str) -> None:
    with pytest.raises(GenerationError, match=message) as err:
        render(
            tmp_path, spec(inline({"path": first, "content": "1"}), inline({"path": second, "content": "2"}))
        )
    assert err.value.permanent


def test_case_collision_is_a_warning(tmp_path: Path) -> None:
    result = render(
        tmp_path,
        spec(inline({"path": "README.md", "content": "A"}), inline({"path": "readme.md", "content": "b"})),
    )
    assert [f.path for f in result.manifest.files] == ["README.md", "readme.md"]
    assert len(result.warnings) == 1
    assert "'README.md', 'readme.md'" in result.warnings[0] and "case" in result.warnings[0]


def test_empty_project(tmp_path: Path) -> None:
    result = render(tmp_path, spec({"configMap": {"name": "empty"}}), empty=ConfigMapData())
    assert result.manifest.files == [] and result.manifest.total_size == 0
    assert result.manifest.content_hash == hashlib.sha256(b"").hexdigest()
    assert everything_under(tree(tmp_path)) == []


def test_dest_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "stage" / "tree").mkdir(parents=True)
    (tmp_path / "stage" / "tree" / "x").write_text("user data")
    with pytest.raises(ValueError, match="empty"):
        render(tmp_path, spec(inline({"path": "a", "content": "1"})))
    assert (tmp_path / "stage" / "tree" / "x").read_text() == "user data"


# -- ConfigMap -----------------------------------------------------------------------------------


def test_configmap_every_key_including_binary(tmp_path: Path) -> None:
    cm = ConfigMapData(
        data={"app.yaml": "a: 1\n", "Dockerfile": "FROM x\n"}, binary_data={"blob": b"\x00\xff\x01"}
    )
    result = render(tmp_path, spec({"configMap": {"name": "cm"}}), cm=cm)
    assert files_on_disk(tree(tmp_path)) == {
        "app.yaml": b"a: 1\n",
        "Dockerfile": b"FROM x\n",
        "blob": b"\x00\xff\x01",
    }
    types = {f.path: (f.type, f.preview) for f in result.manifest.files}
    assert types == {
        "Dockerfile": ("dockerfile", "FROM x\n"),
        "app.yaml": ("yaml", "a: 1\n"),
        "blob": ("binary", None),
    }


def test_configmap_items_only_listed_keys_at_their_paths(tmp_path: Path) -> None:
    cm = ConfigMapData(data={"a": "A", "unused": "U"}, binary_data={"b": b"\x00B"})
    s = spec(
        {
            "configMap": {
                "name": "cm",
                "items": [{"key": "a", "path": "docs/a.md"}, {"key": "b", "path": "b.bin"}],
            }
        }
    )
    render(tmp_path, s, cm=cm)
    assert files_on_disk(tree(tmp_path)) == {"docs/a.md": b"A", "b.bin": b"\x00B"}


def test_configmap_missing_listed_key_is_permanent(tmp_path: Path) -> None:
    s = spec(
        inline({"path": "x", "content": "1"}),
        {"configMap": {"name": "tpl", "items": [{"key": "x", "path": "y"}]}},
    )
    with pytest.raises(GenerationError) as err:
        render(tmp_path, s, tpl=ConfigMapData(data={"other": "1"}))
    assert err.value.permanent
    assert err.value.message == "sources[1].configMap: key 'x' not found in ConfigMap 'tpl'"


def test_missing_configmap_is_temporary(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable) as err:
        render(tmp_path, spec({"configMap": {"name": "tpl"}}))
    assert not err.value.permanent
    assert str(err.value) == (
        "sources[0].configMap: ConfigMap 'tpl' not found in this namespace; waiting for it to be created"
    )


def test_configmap_is_loaded_once_per_render(tmp_path: Path) -> None:
    calls: list[str] = []

    def load(name: str) -> ConfigMapData:
        calls.append(name)
        return ConfigMapData(data={"a": name + str(len(calls))})

    s = spec(
        {"configMap": {"name": "cm"}}, {"configMap": {"name": "cm", "items": [{"key": "a", "path": "b"}]}}
    )
    render_project(s, tmp_path / "t", configmaps=load)
    assert calls == ["cm"]
    assert files_on_disk(tmp_path / "t") == {"a": b"cm1", "b": b"cm1"}


def test_key_in_both_data_and_binary_data_refused(tmp_path: Path) -> None:
    with pytest.raises(GenerationError, match="'k' is in both data and binaryData of ConfigMap 'cm'"):
        render(tmp_path, spec({"configMap": {"name": "cm"}}), cm=ConfigMapData({"k": "1"}, {"k": b"2"}))


# -- path safety -------------------------------------------------------------------------------

BAD_PATHS = [
    "../evil",
    "a/../../evil",
    "/etc/evil",
    "a/./b",
    ".",
    "a//b",
    "a/",
    "a\\..\\evil",
    "a\x00b",
    "x" * 256,
    "a/" * 512 + "b",
    "caf\udce9",
]


def _raw_spec(*sources: Source) -> GeneratedProjectSpec:
    """A spec that skips pydantic's checks, as a bug or a future field might."""
    return GeneratedProjectSpec.model_construct(sources=list(sources))


def _assert_nothing_outside(tmp_path: Path) -> None:
    assert everything_under(tmp_path) == ["stage", "stage/tree"]


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_inline_path_traversal_refused(tmp_path: Path, bad: str) -> None:
    s = _raw_spec(
        Source.model_construct(
            inline=InlineSource.model_construct(files=[InlineFile.model_construct(path=bad, content="x")])
        )
    )
    with pytest.raises(GenerationError, match=r"^sources\[0\]\.inline\.files\[0\]: ") as err:
        render(tmp_path, s)
    assert err.value.permanent
    _assert_nothing_outside(tmp_path)


@pytest.mark.parametrize("bad", ["../evil", "/abs", "a/../../b", "a\\b"])
def test_configmap_item_path_traversal_refused(tmp_path: Path, bad: str) -> None:
    item = KeyToPath.model_construct(key="k", path=bad)
    s = _raw_spec(Source.model_construct(config_map=ConfigMapSource.model_construct(name="cm", items=[item])))
    with pytest.raises(GenerationError, match=r"^sources\[0\]\.configMap\.items\[0\]: ") as err:
        render(tmp_path, s, cm=ConfigMapData(data={"k": "x"}))
    assert err.value.permanent
    _assert_nothing_outside(tmp_path)


@pytest.mark.parametrize("key", ["..", ".", "a/b", "../x", "x" * 300])
def test_configmap_key_traversal_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(GenerationError, match=r"^sources\[0\]\.configMap: key ") as err:
        render(tmp_path, spec({"configMap": {"name": "cm"}}), cm=ConfigMapData(data={key: "x"}))
    assert err.value.permanent
    _assert_nothing_outside(tmp_path)


def test_path_rules() -> None:
    assert path_problem("a/b.txt") is None
    assert path_problem("é/" + "x" * 255) is None
    for bad in BAD_PATHS:
        assert path_problem(bad) is not None, bad
    assert "not valid UTF-8" in (path_problem("caf\udce9") or "")
    assert "255" in (path_problem("x" * 256) or "")
    assert "1024" in (path_problem("a/" * 512 + "b") or "")


def test_source_with_no_kind_refused(tmp_path: Path) -> None:
    with pytest.raises(GenerationError, match=r"sources\[0\]: set exactly one"):
        render(tmp_path, _raw_spec(Source.model_construct()))


# -- manifest --------------------------------------------------------------------------------------


def test_types_and_previews() -> None:
    assert classify("a.py", b"", False) == ("python", True)
    assert classify("x.yaml", b"", False) == ("yaml", True)
    assert classify("README.md", b"", False) == ("markdown", True)
    assert classify("LICENSE", b"MIT", False) == ("text", True)
    assert classify("notes", b"hello", False) == ("text", True)
    assert classify("data", b"\x00\x01\x02", False) == ("binary", False)
    assert classify("tool", b"#!/usr/bin/env python3\nprint()", True)[0].startswith("python")


def test_preview_is_first_1000_characters(tmp_path: Path) -> None:
    text = "é" * 700 + "x" * 700
    result = render(
        tmp_path,
        spec(
            inline(
                {"path": "long.txt", "content": text},
                {"path": "bad.txt", "contentBase64": base64.b64encode(b"ok\xff").decode()},
            )
        ),
    )
    by_path = {f.path: f for f in result.manifest.files}
    assert by_path["long.txt"].preview == text[:1000]
    assert by_path["bad.txt"].preview == "ok\ufffd"


def test_manifest_round_trip(tmp_path: Path) -> None:
    result = render(
        tmp_path, spec(inline({"path": "a.txt", "content": "1"}, {"path": "b/c.json", "content": "{}"}))
    )
    result.manifest.dump(tmp_path / "manifest.json")
    assert Manifest.load(tmp_path / "manifest.json") == result.manifest


def test_twenty_thousand_files(tmp_path: Path) -> None:
    """Every one of 20,000 files is written and recorded. How fast is benchmarks/generate.py's
    question (20,000 files against `cp -r` + `sha256sum` measured in the same run), not a test's."""
    # More files than one valid spec may hold inline (sources x files are capped), so the spec is
    # built without validation; the files go through the same writer as any source's.
    sources = [
        Source.model_construct(
            inline=InlineSource.model_construct(
                files=[
                    InlineFile.model_construct(
                        path=f"d{s:02d}/sub{i % 10}/f{i:04d}.py",
                        content=f"x = {s * 1000 + i}\n" * 20,
                        content_base64=None,
                        executable=False,
                    )
                    for i in range(1000)
                ]
            )
        )
        for s in range(20)
    ]
    result = render_project(_raw_spec(*sources), tmp_path / "tree", configmaps=loader())
    assert result.manifest.total_files == 20_000
    sample = result.manifest.files[12345]
    assert hashlib.sha256((tmp_path / "tree" / sample.path).read_bytes()).hexdigest() == sample.sha256
    assert sum(len(files) for _, _, files in os.walk(tmp_path / "tree")) == 20_000
