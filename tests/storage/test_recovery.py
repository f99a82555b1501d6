"""What a crash leaves on disk is repaired on open: torn lines cut, half batches rolled back."""

from __future__ import annotations

import collections
import logging
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from netmon.storage.eventlog import EventLog
from netmon.storage.journal import BatchPart, Journal
from netmon.storage.log_reader import EventLogReader
from netmon.storage.positions import Position
from tests.conftest import REPO_ROOT
from tests.storage.helpers import assert_postings_match_lines, flow


def crashed_writer(root: Path, batches: int, size: int) -> list[Path]:
    """Run a real writer that appends ``batches`` batches and dies without closing its log."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.storage.writer_child",
            "crash",
            str(root),
            "victim",
            str(batches),
            str(size),
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    segments = sorted((root / "events").rglob("*.jsonl"), key=lambda p: p.name)
    assert segments and not any(p.with_name(p.name + ".idx").exists() for p in segments)
    return segments


def batches_present(root: Path) -> collections.Counter[str]:
    reader = EventLogReader(root)
    events, _ = reader.read_new(Position(), max_events=100_000)
    assert reader.stats.malformed_lines == 0
    return collections.Counter(e.id.rsplit(":", 1)[0] for e in events)


def test_torn_last_line_is_cut_and_counted_in_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    segments = crashed_writer(tmp_path, batches=3, size=4)
    torn = b'{"type":"FlowObserved","agent_id":"ag'  # a write cut short
    with segments[1].open("ab") as handle:
        handle.write(torn)
    with caplog.at_level(logging.WARNING, logger="netmon.storage"), EventLog(tmp_path, "victim"):
        pass
    assert f"cut a torn last line ({len(torn)} bytes) from {segments[1]}" in caplog.text
    assert batches_present(tmp_path) == {f"victim:{n}": 4 for n in range(3)}
    for segment in segments:  # sealed after repair, with an index rebuilt from the file
        assert_postings_match_lines(segment)


def test_batch_missing_from_one_segment_is_rolled_back_everywhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    segments = crashed_writer(tmp_path, batches=3, size=4)  # each batch: 1 line in 4 segments
    # Rebuild the disk state of a crash between the 3rd and 4th write of batch 2: its journal
    # record (as append writes it before touching any segment) and 3 of its 4 parts.
    events_dir = tmp_path / "events"
    parts = []
    for segment in segments:
        data = segment.read_bytes()
        line = data.splitlines(keepends=True)[-1]
        relpath = segment.relative_to(events_dir).as_posix()
        parts.append(BatchPart(relpath, len(data) - len(line), len(line), zlib.crc32(line)))
    journal = Journal(events_dir / "_writers" / "victim.journal", fsync=False)
    journal.record(parts)
    journal.close()
    last = segments[-1]
    last.write_bytes(last.read_bytes()[: parts[-1].start])  # ends on a newline: no torn line
    with caplog.at_level(logging.WARNING, logger="netmon.storage"), EventLog(tmp_path, "victim"):
        pass
    assert "rolled back an incomplete batch" in caplog.text
    assert batches_present(tmp_path) == {"victim:0": 4, "victim:1": 4}


def test_complete_batches_survive_a_crash_untouched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crashed_writer(tmp_path, batches=5, size=8)
    with (
        caplog.at_level(logging.WARNING, logger="netmon.storage"),
        EventLog(tmp_path, "victim") as log,
    ):
        log.append([flow("victim:after:0")])
    assert "rolled back" not in caplog.text and "torn" not in caplog.text
    assert batches_present(tmp_path) == {**{f"victim:{n}": 8 for n in range(5)}, "victim:after": 1}


def test_malformed_lines_are_reported_with_file_and_line_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with EventLog(tmp_path, "w1", durability="none") as log:
        log.append([flow(str(i)) for i in range(5)])
    segment = next(tmp_path.rglob("*.jsonl"))
    lines = segment.read_bytes().splitlines(keepends=True)
    lines.insert(2, b"this is not json\n")
    lines.insert(4, b'{"type":"FlowObserved","id":"x","unknown_field":1}\n')
    segment.write_bytes(b"".join(lines))
    reader = EventLogReader(tmp_path)
    with caplog.at_level(logging.ERROR, logger="netmon.storage"):
        tailed, position = reader.read_new(Position())
        scanned = list(reader.scan(None, None))
    assert [e.id for e in tailed] == ["0", "1", "2", "3", "4"]
    assert [e.id for e in scanned] == ["0", "1", "2", "3", "4"]
    assert f"malformed line {segment}:3 " in caplog.text
    assert f"malformed line {segment}:5 " in caplog.text
    assert reader.stats.malformed_lines == 4  # two lines, each met by read_new and by scan
    assert (
        position.offsets[segment.relative_to(tmp_path / "events").as_posix()]
        == segment.stat().st_size
    )


def test_failed_write_stores_nothing_of_the_batch_and_the_log_goes_on(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.storage.writer_child", "fsize", str(tmp_path), "victim",
         "30000", "40"],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    *returned, failure = done.stdout.splitlines()
    assert failure.startswith(f"failed {len(returned)} append failed, batch not stored")
    assert "File too large" in failure
    assert batches_present(tmp_path) == {
        **{f"victim:{n}": 40 for n in range(len(returned))},
        "after:0": 40,
    }
    for segment in (tmp_path / "events").rglob("*.jsonl"):
        assert_postings_match_lines(segment)  # every segment sealed, index matching its bytes


def test_manifest_lines_naming_paths_outside_the_store_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with EventLog(tmp_path, "w1", durability="none") as log:
        log.append([flow("kept")])
    manifest = tmp_path / "events" / "_writers" / "w1.manifest"
    with manifest.open("ab") as handle:
        handle.write(
            b'{"op":"open","seg":"../../secret.jsonl"}\n{"op":"open","seg":"date=x/branch=../w1-1.jsonl"}\n'
        )
    (tmp_path / "secret.jsonl").write_bytes(b"not for readers\n")
    with caplog.at_level(logging.ERROR, logger="netmon.storage"):
        events, _ = EventLogReader(tmp_path).read_new(Position())
        with EventLog(tmp_path, "w1") as log:  # the writer opens despite the bad lines
            log.append([flow("after")])
    assert caplog.text.count("skipping malformed manifest line") >= 4
    assert [e.id for e in events] == ["kept"]
    assert batches_present(tmp_path) == {"kept": 1, "after": 1}
