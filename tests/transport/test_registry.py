"""The agent registry and the ``netmon agents`` commands, on a real SQLite file."""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken

from netmon.app.cli import main
from netmon.storage.agents import AgentRegistry, AgentRegistryError, SecretKeyError


def test_each_agent_gets_its_own_key_stored_encrypted(tmp_path: Path, secret: str) -> None:
    registry = AgentRegistry(tmp_path, secret)
    key1, key2 = registry.add("a1", "b1"), registry.add("a2", "b1")
    assert key1 != key2
    raw = (
        sqlite3.connect(tmp_path / "netmon.sqlite3")
        .execute("SELECT keys_encrypted FROM agents")
        .fetchall()
    )
    assert all(key1.encode() not in row[0] and key2.encode() not in row[0] for row in raw)
    token = Fernet(key1).encrypt(b"x")
    with pytest.raises(InvalidToken):
        registry.fernet("a2").decrypt(token)


def test_rotation_accepts_old_and_new_key_until_finished(tmp_path: Path, secret: str) -> None:
    registry = AgentRegistry(tmp_path, secret)
    old = registry.add("a1", "b1")
    new = registry.rotate("a1")
    assert registry.fernet("a1").decrypt(Fernet(old).encrypt(b"old")) == b"old"
    assert registry.fernet("a1").decrypt(Fernet(new).encrypt(b"new")) == b"new"
    assert Fernet(new).decrypt(registry.fernet("a1").encrypt(b"x")) == b"x"  # encrypts with the new
    registry.retire_old_keys("a1")
    with pytest.raises(InvalidToken):
        registry.fernet("a1").decrypt(Fernet(old).encrypt(b"old"))
    assert registry.get("a1").key_count == 1  # type: ignore[union-attr]


def test_secret_is_required_and_must_match(tmp_path: Path, secret: str) -> None:
    with pytest.raises(SecretKeyError, match="not set"):
        AgentRegistry(tmp_path, "")
    with pytest.raises(SecretKeyError, match="not a valid Fernet key"):
        AgentRegistry(tmp_path, "not-a-key")
    AgentRegistry(tmp_path, secret).add("a1", "b1")
    other = Fernet.generate_key().decode()
    with pytest.raises(SecretKeyError, match="cannot be decrypted"):
        AgentRegistry(tmp_path, other).fernet("a1")
    # Rotating the server secret: new first, old after.
    assert AgentRegistry(tmp_path, f"{other},{secret}").get("a1") is not None


def test_names_and_duplicates_are_checked(tmp_path: Path, secret: str) -> None:
    registry = AgentRegistry(tmp_path, secret)
    registry.add("a1", "b1")
    with pytest.raises(AgentRegistryError, match="already exists"):
        registry.add("a1", "b2")
    with pytest.raises(ValueError, match="invalid agent name"):
        registry.add("../x", "b1")
    with pytest.raises(AgentRegistryError, match="no agent"):
        registry.set_enabled("ghost", False)


def test_cli_add_prints_a_usable_agent_toml(
    tmp_path: Path, secret: str, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "netmon.toml"
    config.write_text(
        f'[store]\ndata_dir = "{tmp_path / "data"}"\n[server]\nsecret_key = "{secret}"\n'
    )
    monkeypatch.chdir(tmp_path)
    assert main(["agents", "--config", str(config), "add", "edge-1", "--branch", "paris"]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed["agent_id"] == "edge-1" and printed["branch"] == "paris"
    key = printed["transport"]["key"]
    registry = AgentRegistry(tmp_path / "data", secret)
    assert registry.fernet("edge-1").decrypt(Fernet(key).encrypt(b"k")) == b"k"
    assert main(["agents", "--config", str(config), "disable", "edge-1"]) == 0
    assert registry.get("edge-1").enabled is False  # type: ignore[union-attr]
    assert main(["agents", "--config", str(config), "rotate", "edge-1"]) == 0
    assert main(["agents", "--config", str(config), "list"]) == 0
    listing = capsys.readouterr().out
    assert "edge-1" in listing and "paris" in listing and " no " in listing
    assert main(["agents", "--config", str(config), "add", "edge-1", "--branch", "paris"]) == 2
    assert "already exists" in capsys.readouterr().err
