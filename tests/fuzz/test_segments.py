"""Fuzz the event-log reader (storage/log_reader.py) over damaged segments: a line with flipped
bytes, cut short or spliced is skipped with a log line; every other event is still read, by a
scan and by a follower. (The log is our own output, but disks and copies corrupt bytes.)"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from netmon.storage.positions import Position
from tests.fuzz.budget import fuzz
from tests.soak.test_disk_full import flows


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    log = EventLog(root, "w1")
    log.append(flows(8, "hq"))
    log.close()
    return root


def segment_of(root: Path) -> Path:
    return next((root / "events").glob("date=*/branch=hq/*.jsonl"))


@st.composite
def damaged(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "splice"]))
        if action == "flip":
            data[at] = draw(st.sampled_from([0xFF, 0x80, 0xC3, 0x00, 0x22, 0x7B, 0x0A]))
        elif action == "cut":
            del data[at:]
            break
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@fuzz
@given(st.data())
def test_a_damaged_segment_is_read_around(store: Path, data: st.DataObject) -> None:
    original = segment_of(store).read_bytes()
    raw = data.draw(damaged(original))
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "data"
        shutil.copytree(store, copy)
        path = segment_of(copy)
        path.write_bytes(raw)
        (path.parent / (path.name + ".idx")).unlink(missing_ok=True)  # the index no longer fits
        intact = sum(1 for line in original.split(b"\n") if line and line in raw.split(b"\n"))
        events = list(EventLogReader(copy).scan(None, None))
        assert len(events) >= intact - 1  # a cut may leave one intact-looking prefix unread
        followed, _ = EventLogReader(copy).read_new(Position(), 1000)  # a follower's first poll
        assert len(followed) <= len(events) + 1


def test_invalid_utf8_in_a_segment_skips_only_that_line(store: Path, tmp_path: Path) -> None:
    # Finding: one corrupted byte (invalid UTF-8) made every scan raise UnicodeDecodeError:
    # searches, followers, the worker and rebuilds all stopped at that segment.
    copy = tmp_path / "data"
    shutil.copytree(store, copy)
    path = segment_of(copy)
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"example.com")] = 0xFF
    path.write_bytes(bytes(raw))
    assert len(list(EventLogReader(copy).scan(None, None))) == 7
