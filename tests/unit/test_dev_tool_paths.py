"""The dev tools find the repository's build inputs from where they are installed (a source checkout).

A wrong depth here passed unnoticed while a cached helper existed, and broke on a fresh machine."""

from __future__ import annotations

from pathlib import Path

from projectgen_dev import controlplane, gitea, kstatus, promtool
from projectgen_dev.demo import REPO_ROOT

REPO = Path(__file__).resolve().parents[2]


def test_the_kstatus_sources_are_found() -> None:
    assert kstatus.source_dir() == REPO / "hack" / "kstatus"


def test_the_build_scripts_and_the_demo_root_are_the_repositorys() -> None:
    assert controlplane.build_script() == REPO / "hack" / "build-controlplane.sh"
    assert gitea.build_script() == REPO / "hack" / "build-gitea.sh"
    assert promtool.build_script() == REPO / "hack" / "build-promtool.sh"
    assert REPO_ROOT == REPO
