"""The one guard that turns "cannot run here" into a failure in CI (projectgen_dev/ci.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from projectgen_dev.ci import in_ci, unavailable

CI_RUN = Path(__file__).resolve().parents[2] / ".ci" / "run"


@pytest.mark.parametrize("value", ["1", "true", "True", "TRUE", "yes", "on", " true\n"])
def test_usual_truthy_values_mean_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="cannot run in CI: no tool"):
        unavailable("no tool")


@pytest.mark.parametrize("value", [None, "", "0", "false", "no", "off"])
def test_elsewhere_a_test_that_cannot_run_is_skipped(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception, match="no tool"):
        unavailable("no tool")


def test_ci_run_exports_ci_before_the_tests() -> None:
    """What CI runs sets CI itself, so the guards hold whatever the runner exports."""
    script = CI_RUN.read_text()
    assert script.index("export CI=true") < script.index("make test")
    syntax = subprocess.run(["bash", "-n", str(CI_RUN)], capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr
