"""The README's first quick-start command works: `python -m projectgen_dev demo` (what `make demo` runs)."""

from __future__ import annotations

import subprocess
import sys

from projectgen_dev.controlplane import ControlPlane


def test_demo_runs_end_to_end(control_plane: ControlPlane) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "projectgen_dev", "demo", "--timeout=120"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    lines = [line.split() for line in out.splitlines()]
    rows = {cols[0]: cols for cols in lines if cols and "projectgen.io/" in cols[0]}
    assert rows["generatedproject.projectgen.io/billing-api"][2:4] == ["Completed", "True"]
    for export in ("billing-api-zip", "billing-api-targz", "billing-api-github"):
        assert rows[f"repositoryexport.projectgen.io/{export}"][3:5] == ["Completed", "True"], out
    assert "billing-api/src/billing_api/app.py" in out  # the archive listing
    assert "repositories created on the GitHub stand-in: acme/billing-api" in out
    # The tenant's download (through kube-apiserver as root, from the operator's port otherwise).
    assert "matches status.archiveSha256" in out and "DOES NOT MATCH" not in out
    assert "[demo] done" in out
