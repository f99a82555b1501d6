"""The soak runs only when asked for (``pytest -m soak``, ``make soak`` / ``make soak-ci``)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip soak tests unless the marker expression selects them (keeps `make test` short)."""
    if "soak" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="chaos soak: run with `make soak` or `make soak-ci`")
    for item in items:
        if item.get_closest_marker("soak"):
            item.add_marker(skip)
