"""The Krita plug-in inside real Krita 5 (kritarunner, and the full application
under Xvfb).

Every test here is marked `editors` (`-m "not editors"` leaves them out)."""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.editors)
