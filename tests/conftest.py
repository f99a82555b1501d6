"""Shared fixtures: real files under tmp_path, real processes; no mocks of our own code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def python_exe() -> str:
    """The interpreter running the tests, for starting real child processes."""
    return sys.executable
