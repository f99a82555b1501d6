"""Packaging: one top-level name, ``netmon``, built from the repository's five top-level folders."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("app", "agent", "web", "storage", "archive")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def tree_packages() -> set[str]:
    """Every folder holding an ``__init__.py``, by its installed name (``netmon.app.x``)."""
    return {
        ".".join(("netmon", *init.parent.relative_to(ROOT).parts))
        for folder in FOLDERS
        for init in (ROOT / folder).rglob("__init__.py")
        if "node_modules" not in init.parts
    }


def test_packages_list_is_every_package_of_the_tree() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    # Folders of package data only (templates, static files) are listed too, as setuptools asks.
    expected = tree_packages() | set(PYPROJECT["tool"]["setuptools"]["package-data"])
    assert listed == expected, (
        f"missing from pyproject's packages: {sorted(expected - listed)}; "
        f"listed but not in the tree: {sorted(listed - expected)}"
    )


def test_the_wheel_holds_only_netmon(tmp_path: Path) -> None:
    # Built from a copy, so a stale build/lib of the checkout cannot leak into the wheel and the
    # build leaves nothing behind in it. Built as `pip install .` builds: in an isolated
    # environment with pyproject's build-system.requires (the venv's own setuptools may be older).
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("node_modules", "__pycache__")
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", source],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("netmon-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    version = PYPROJECT["project"]["version"]
    assert {name.split("/")[0] for name in names} == {"netmon", f"netmon-{version}.dist-info"}
    modules = {
        "netmon/" + path.relative_to(ROOT).as_posix()
        for folder in FOLDERS
        for path in (ROOT / folder).rglob("*.py")
        if "node_modules" not in path.parts
    }
    assert not modules - set(names), f"modules missing from the wheel: {modules - set(names)}"
    assert "netmon/web/templates/base.html" in names
    assert "netmon/web/static/netmon.css" in names
    assert any(name.startswith("netmon-") and name.endswith("/LICENSE") for name in names)


def test_installed_version_is_pyprojects() -> None:
    assert importlib.metadata.version("netmon") == PYPROJECT["project"]["version"]
