from __future__ import annotations

from pathlib import Path

import pytest

from netmon.app.settings import SettingsError, load_settings


def test_defaults_have_no_secret(tmp_path: Path) -> None:
    settings = load_settings(environ={}, dotenv_file=None)
    assert settings.server.secret_key == ""
    assert settings.store.durability == "batch"


def test_precedence_toml_then_dotenv_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "netmon.toml"
    config.write_text(
        '[store]\ndata_dir = "/from/toml"\nsegment_max_bytes = 1000\n[server]\nport = 9000\n'
    )
    dotenv = tmp_path / ".env"
    dotenv.write_text("NETMON_SERVER__PORT=9100\nNETMON_SERVER__REPLICA=from-dotenv\n")
    settings = load_settings(
        config, environ={"NETMON_SERVER__REPLICA": "from-env"}, dotenv_file=dotenv
    )
    assert settings.store.data_dir == "/from/toml"
    assert settings.store.segment_max_bytes == 1000
    assert settings.server.port == 9100
    assert settings.server.replica == "from-env"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"NETMON_SERVER__PORT": "eighty"}, "server.port (NETMON_SERVER__PORT)"),
        ({"NETMON_STORE__DURABILITY": "sometimes"}, "store.durability"),
        ({"NETMON_STORE__NOPE": "1"}, "nope"),
        ({"NETMON_PORT": "1"}, "NETMON_SECTION__FIELD"),
    ],
)
def test_bad_values_name_the_setting(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_settings(environ=environ, dotenv_file=None)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings(tmp_path / "absent.toml", environ={}, dotenv_file=None)
