"""Test-suite wide configuration.

Tests under ``tests/integration/`` are marked ``integration`` automatically, so
``pytest -m "not integration"`` runs without a control plane.
"""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)
