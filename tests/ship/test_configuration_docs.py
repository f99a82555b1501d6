"""docs/configuration.md documents every setting of app/settings.py, with the right defaults."""

from __future__ import annotations

import importlib.util
import re

import msgspec

from netmon.app.settings import Settings, SettingsError, load_settings
from tests.web.harness import REPO_ROOT

DOC = REPO_ROOT / "docs" / "configuration.md"
SCRIPT = REPO_ROOT / "scripts" / "configuration_docs.py"  # regenerates the tables


def every_setting() -> list[tuple[str, str]]:
    """(dotted name, environment variable) of every field of every section."""
    found = []
    for section in msgspec.structs.fields(Settings):
        for field in msgspec.structs.fields(type(section.default)):
            env = f"NETMON_{section.name.upper()}__{field.name.upper()}"
            found.append((f"{section.name}.{field.name}", env))
    return found


def test_every_setting_and_its_variable_is_in_the_docs() -> None:
    text = DOC.read_text()
    settings = every_setting()
    assert len(settings) > 60
    missing = [name for name, env in settings if f"`{name}`" not in text or f"`{env}`" not in text]
    assert missing == [], f"run scripts/configuration_docs.py; missing: {missing}"


def test_every_documented_variable_is_accepted_by_the_loader() -> None:
    # The variables the doc names really configure something: the loader takes each one.
    for name, env in every_setting():
        section, field = name.split(".")
        default = getattr(getattr(Settings(), section), field)
        value = str(default).lower() if isinstance(default, bool) else str(default)
        if isinstance(default, tuple | list | dict):  # lists and tables are given as JSON
            value = msgspec.json.encode(default).decode()
        settings = load_settings(environ={env: value}, dotenv_file=None)
        assert getattr(getattr(settings, section), field) == default, env


def test_an_unknown_variable_is_a_clear_error() -> None:
    try:
        load_settings(environ={"NETMON_SERVER__PROT": "1"}, dotenv_file=None)
    except SettingsError as error:
        assert "server" in str(error)
    else:
        raise AssertionError("NETMON_SERVER__PROT was accepted")


def test_documented_defaults_match_the_code() -> None:
    # Comments may drift between regenerations; a wrong default would mislead: checked here.
    spec = importlib.util.spec_from_file_location("configuration_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    row = r"^\| `([a-z_]+\.[a-z0-9_]+)` \| `[A-Z0-9_]+` \| .*? \| (`[^`]*`(?: \(empty\))?) \|"
    rows = dict(re.findall(row, DOC.read_text(), re.MULTILINE))
    for name, _ in every_setting():
        section, field = name.split(".")
        default = getattr(getattr(Settings(), section), field)
        assert rows.get(name) == script.default_text(default), name
