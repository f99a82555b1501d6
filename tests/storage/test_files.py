"""write_atomically: the one way a file is replaced (storage/contract/files.py)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import BinaryIO

import pytest

from netmon.storage.contract.files import write_atomically


def test_content_replaces_the_file_and_no_temp_file_is_left(tmp_path: Path) -> None:
    target = tmp_path / "state.bin"
    target.write_bytes(b"old")
    write_atomically(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]


def test_a_failed_write_keeps_the_old_content_and_removes_its_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "model.joblib"
    target.write_bytes(b"the model that works")

    def half_then_fail(handle: BinaryIO) -> None:
        handle.write(b"half of a new mod")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, half_then_fail)
    assert target.read_bytes() == b"the model that works"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.joblib"]


def test_mode_is_set_before_anything_is_written(tmp_path: Path) -> None:
    target = tmp_path / "agent.toml"
    seen_modes: list[int] = []

    def write(handle: BinaryIO) -> None:
        seen_modes.append(stat.S_IMODE(os.fstat(handle.fileno()).st_mode))
        handle.write(b'key = "secret"\n')

    old_umask = os.umask(0o022)
    try:
        write_atomically(target, write, mode=0o600)
    finally:
        os.umask(old_umask)
    assert seen_modes == [0o600]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_writers_of_one_path_in_several_threads_never_mix(tmp_path: Path) -> None:
    target = tmp_path / "snapshot.msgpack"
    contents = [bytes([n]) * 200_000 for n in range(8)]
    threads = [
        threading.Thread(target=write_atomically, args=(target, content)) for content in contents
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.read_bytes() in contents
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot.msgpack"]


def test_not_durable_still_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    write_atomically(target, b"{}", durable=False)
    assert target.read_bytes() == b"{}"
