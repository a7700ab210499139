"""`projectgen download` without a cluster: what it accepts, and its progress line.
Downloading, resuming and the SHA-256 check run against the real API server in
tests/integration/test_download_api.py."""

from __future__ import annotations

import io

import pytest

from projectgen.cli.download import PROGRESS_FROM, Progress, parse_target
from projectgen.cli.output import CommandError


@pytest.mark.parametrize("target", ["rexp/a", "repositoryexport/a", "RepositoryExports/a", "a"])
def test_targets(target: str) -> None:
    assert parse_target(target) == "a"


def test_other_kinds_are_refused() -> None:
    with pytest.raises(CommandError, match="expected rexp/NAME"):
        parse_target("gp/a")


def test_progress_only_for_big_archives_and_when_asked() -> None:
    out = io.StringIO()
    Progress("small.zip", PROGRESS_FROM - 1, out, enabled=True).update(10, final=True)
    Progress("big.zip", 8 << 20, out, enabled=False).update(10, final=True)
    assert out.getvalue() == ""
    Progress("big.zip", 8 << 20, out, enabled=True).update(4 << 20, final=True)
    assert out.getvalue() == "\rbig.zip  4.0 / 8.0 MiB  50%\n"
