"""Password hashing (argon2id) and the password policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from netmon.app.auth.passwords import (
    MAX_PASSWORD_LENGTH,
    PasswordPolicyError,
    Passwords,
    check_policy,
    common_passwords,
    generate_password,
)
from tests.app.auth.live import run, server_settings


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short1!", "too short"),
        ("password1234", "common"),
        ("Qwertyuiop123!!", "common"),
        ("CorrectHorseBatteryStaple", "common"),
        ("aaaaaaaaaaaaaaaa", "distinct"),
        ("my name is alice, hi!", "username"),
        ("x" * (MAX_PASSWORD_LENGTH + 1), "too long"),
    ],
)
def test_policy_refuses(password: str, reason: str) -> None:
    with pytest.raises(PasswordPolicyError, match=reason):
        check_policy(password, "alice", 12)


def test_policy_accepts_a_passphrase_and_generated_passwords() -> None:
    check_policy("tea kettle under the bridge 9", "alice", 12)
    for _ in range(20):
        check_policy(generate_password(), "alice", 12)
    assert len(common_passwords()) > 200 and "123456" in common_passwords()


def test_hashes_are_argon2id_salted_and_verify(tmp_path: Path) -> None:
    passwords = Passwords(server_settings(tmp_path).auth)

    async def scenario() -> None:
        first, second = await passwords.hash("tea kettle 9"), await passwords.hash("tea kettle 9")
        assert first.startswith("$argon2id$") and first != second
        assert await passwords.verify(first, "tea kettle 9")
        assert not await passwords.verify(first, "tea kettle 8")
        assert not await passwords.verify(None, "tea kettle 9")  # unknown user: same work, fails
        assert not await passwords.verify("not a hash", "x")

    run(scenario())


def test_hashes_made_at_another_cost_are_flagged_for_rehash(tmp_path: Path) -> None:
    cheap = Passwords(server_settings(tmp_path).auth)
    dearer = Passwords(server_settings(tmp_path, argon2_time_cost="2").auth)
    stored = run(cheap.hash("tea kettle 9"))
    assert not cheap.needs_rehash(stored) and dearer.needs_rehash(stored)
