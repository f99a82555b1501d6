"""Archive ZIPs on their own: manifest contents, bytes kept as they were, damage detected."""

from __future__ import annotations

import zipfile
from datetime import date
from pathlib import Path

import pytest

from netmon.archive.layout import (
    InvalidArchiveNameError,
    PartitionKey,
    parse_archive_name,
)
from netmon.archive.zipfiles import (
    MANIFEST_NAME,
    ArchiveCorruptError,
    ArchiveWriter,
    read_manifest,
    verify_archive,
)
from netmon.storage.contract.events import encode_json_line
from tests.archive.helpers import flow

KEY = PartitionKey(date(2026, 1, 2), "hq")
LINES = [encode_json_line(flow(f"id-{i}", 1_767_312_000.0 + i * 10, "hq", i)) for i in range(5)]


def write(tmp_path: Path, data: bytes, name: str = "w-00000001.jsonl") -> Path:
    source = tmp_path / name
    source.write_bytes(data)
    target = tmp_path / KEY.archive_name
    writer = ArchiveWriter(target, KEY, compress_level=6)
    writer.add_file(f"{KEY}/{name}", source)
    writer.finish()
    return target


def test_manifest_counts_events_and_time_range_and_hashes_each_member(tmp_path: Path) -> None:
    archive = write(tmp_path, b"".join(LINES))
    manifest = verify_archive(archive)
    assert (manifest.date, manifest.branch, manifest.events) == ("2026-01-02", "hq", 5)
    assert (manifest.first_ts, manifest.last_ts) == (1_767_312_000.0, 1_767_312_040.0)
    member = manifest.members[0]
    assert member.name == "date=2026-01-02/branch=hq/w-00000001.jsonl"
    assert member.size == len(b"".join(LINES)) and len(member.sha256) == 64
    assert read_manifest(archive) == manifest


def test_unreadable_lines_and_a_torn_tail_are_kept_byte_for_byte_and_counted(
    tmp_path: Path,
) -> None:
    data = LINES[0] + b"not json at all\n" + LINES[1] + b'{"type":"FlowObs'
    archive = write(tmp_path, data)
    manifest = verify_archive(archive)
    assert (manifest.events, manifest.malformed) == (2, 2)
    with zipfile.ZipFile(archive) as zipped:
        assert zipped.read(manifest.members[0].name) == data


def test_a_flipped_byte_is_detected(tmp_path: Path) -> None:
    archive = write(tmp_path, b"".join(LINES) * 50)
    data = bytearray(archive.read_bytes())
    data[len(data) // 3] ^= 0x01
    archive.write_bytes(bytes(data))
    with pytest.raises(ArchiveCorruptError, match=KEY.archive_name):
        verify_archive(archive)


def test_a_member_missing_from_the_manifest_is_detected(tmp_path: Path) -> None:
    archive = write(tmp_path, b"".join(LINES))
    with zipfile.ZipFile(archive, "a") as zipped:
        zipped.writestr(f"{KEY}/smuggled.jsonl", LINES[0])
    with pytest.raises(ArchiveCorruptError, match="differ from the manifest"):
        verify_archive(archive)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"plain text"])
def test_something_that_is_not_an_archive_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / KEY.archive_name
    path.write_bytes(content)
    with pytest.raises(ArchiveCorruptError, match=KEY.archive_name):
        read_manifest(path)


def test_an_archive_without_manifest_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / KEY.archive_name
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("x.jsonl", LINES[0])
    with pytest.raises(ArchiveCorruptError, match=f"no {MANIFEST_NAME}"):
        verify_archive(path)


def test_archive_names_round_trip() -> None:
    assert parse_archive_name("2026-01-02_hq.zip") == KEY
    assert parse_archive_name(KEY.archive_name) == KEY


@pytest.mark.parametrize(
    "name",
    [
        "../2026-01-02_hq.zip", "2026-01-02_hq.zip/..", "/2026-01-02_hq.zip", "2026-01-02_HQ.zip",
        "2026-01-02_hq.ZIP", "2026-13-02_hq.zip", "2026-01-02_.zip", "2026-01-02_hq.zip\x00",
        ".tmp-2026-01-02_hq.zip", "2026-01-02_a/b.zip", "", ".lock",
        "2026-01-02_" + "x" * 65 + ".zip",
    ],
)  # fmt: skip
def test_anything_but_an_archive_name_is_refused(name: str) -> None:
    with pytest.raises(InvalidArchiveNameError):
        parse_archive_name(name)
