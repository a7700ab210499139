"""`projectgen render`: the offline renderer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from projectgen.cli import main


def render_command(argv: list[str]) -> int:
    return main(["render", *argv])


GP = """\
apiVersion: projectgen.io/v1alpha1
kind: GeneratedProject
metadata:
  name: demo
spec:
  projectRef:
    name: demo
  sources:
    - inline:
        files:
          - path: README.md
            content: "# demo\\n"
          - path: bin/run
            content: "#!/bin/sh\\necho hi\\n"
            executable: true
    - configMap:
        name: extra
        items:
          - key: config
            path: conf/app.yaml
          - key: logo
            path: assets/logo.png
    - template:
        configMap:
          name: tpl
          items:
            - key: copier.yml
              path: copier.yml
            - key: main
              path: "{{project_name}}/__init__.py.jinja"
        data:
          project_name: demo_pkg
"""

CONFIGMAPS = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: extra
data:
  config: "a: 1\\n"
binaryData:
  logo: iVBORw0KGgo=
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: tpl
data:
  copier.yml: |
    project_name:
      type: str
  main: |
    NAME = "{{ project_name }}"
"""


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    gp = tmp_path / "gp.yaml"
    gp.write_text(GP)
    cms = tmp_path / "cms.yaml"
    cms.write_text(CONFIGMAPS)
    return gp, cms


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_happy_path(tmp_path: Path, inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    gp, cms = inputs
    out = tmp_path / "out"
    code = render_command(
        ["-f", str(gp), "-o", str(out), "--configmap", str(cms), "--manifest", str(tmp_path / "m.json")]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert listing(out) == [
        "README.md",
        "assets",
        "assets/logo.png",
        "bin",
        "bin/run",
        "conf",
        "conf/app.yaml",
        "demo_pkg",
        "demo_pkg/__init__.py",
    ]
    assert (out / "demo_pkg/__init__.py").read_text() == 'NAME = "demo_pkg"\n'
    assert (out / "assets/logo.png").read_bytes() == b"\x89PNG\r\n\x1a\n"
    assert os.stat(out / "bin/run").st_mode & 0o777 == 0o755
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["totalFiles"] == 5
    assert {f["path"]: f["preview"] for f in manifest["files"]}["README.md"] == "# demo\n"
    assert captured.out.startswith("rendered 5 files, ") and manifest["contentHash"] in captured.out
    assert str(out) in captured.out
    assert listing(tmp_path) == ["cms.yaml", "gp.yaml", "m.json", "out", *(f"out/{p}" for p in listing(out))]


def test_output_must_be_empty(
    tmp_path: Path, inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    gp, cms = inputs
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert render_command(["-f", str(gp), "-o", str(out), "--configmap", str(cms)]) == 1
    assert "not an empty directory" in capsys.readouterr().err
    assert listing(out) == ["mine.txt"]


def test_configmap_not_given(
    tmp_path: Path, inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    gp, _ = inputs
    assert render_command(["-f", str(gp), "-o", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: sources[1].configMap: ConfigMap 'extra' not given (use --configmap FILE)"
    )
    assert not (tmp_path / "out").exists()


def test_invalid_spec_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gp = tmp_path / "gp.yaml"
    gp.write_text(GP.replace("path: README.md", "path: ../README.md"))
    assert render_command(["-f", str(gp), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "spec.sources.0.inline.files.0.path" in err and "'.' or '..'" in err
    assert not (tmp_path / "out").exists()


def test_render_error_leaves_nothing(
    tmp_path: Path, inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, cms = inputs
    bad = tmp_path / "bad.yaml"
    bad.write_text(GP.replace("path: conf/app.yaml", "path: README.md/app.yaml"))
    assert (
        render_command(["-f", str(bad), "-o", str(tmp_path / "new" / "deeper"), "--configmap", str(cms)]) == 1
    )
    assert "error: sources[1].configMap.items[0] (key 'config'): cannot write 'README.md/app.yaml'" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert render_command(["-f", str(bad), "-o", str(tmp_path / "empty"), "--configmap", str(cms)]) == 1
    assert listing(tmp_path / "empty") == []
    assert sorted(os.listdir(tmp_path)) == ["bad.yaml", "cms.yaml", "empty", "gp.yaml"]


def test_bad_input_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    assert render_command(["-f", str(missing), "-o", str(tmp_path / "o")]) == 1
    assert "cannot read" in capsys.readouterr().err
    two = tmp_path / "two.yaml"
    two.write_text(GP + "---\n" + GP)
    assert render_command(["-f", str(two), "-o", str(tmp_path / "o")]) == 1
    assert "expected one GeneratedProject object, found 2" in capsys.readouterr().err
    cm = tmp_path / "cm.yaml"
    cm.write_text("kind: ConfigMap\nmetadata: {name: extra}\nbinaryData: {logo: '!!'}\n")
    assert render_command(["-f", str(two), "-o", str(tmp_path / "o"), "--configmap", str(cm)]) == 1
    assert render_command(["-o", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_module_entry_point(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    gp, cms = inputs
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "projectgen",
            "render",
            "-f",
            str(gp),
            "-o",
            str(tmp_path / "o"),
            "--configmap",
            str(cms),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("rendered 5 files")
