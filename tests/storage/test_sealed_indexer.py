"""Segments sealed without a sidecar (``index_on_seal=False``, a replica whose projector indexes
for it) get the same index afterwards, from ``SealedSegmentIndexer`` and from a real projector
process, and are searched correctly before and after."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from netmon.storage.contract.events import Detection, DetectionRaised
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from netmon.storage.segment_index import SealedSegmentIndexer, index_path, read_index
from netmon.storage.segments import EVENTS_DIR
from tests.storage.helpers import T0, flow

REPO = Path(__file__).resolve().parents[2]
SEGMENT_BYTES = 20_000  # a few dozen flows per segment: several seals


def append_batches(log: EventLog) -> None:
    """The same batches into any log: flows from many addresses, a detection, two branches."""
    for batch in range(8):
        events = [
            flow(
                f"b{batch}-{i:03d}",
                ts=T0 + 3600 + batch + i / 1000,
                branch="main" if i % 3 else "lab",
                src_ip=f"10.1.{batch}.{i}",
                dst_port=(443, 22, 53)[i % 3],
                domain=f"h{i % 7}.example.org",
            )
            for i in range(40)
        ]
        events.append(
            DetectionRaised(
                id=f"d{batch}", ts=T0 + 3600 + batch, branch="main", agent_id="agent-1",
                flow_id=f"f{batch}", src_ip="203.0.113.9", src_port=5000, dst_ip="10.1.0.1",
                dst_port=22, protocol=6, severity="high",
                detection=Detection(kind="critical_port", detail="SSH (22/tcp)", severity="high"),
            )
        )  # fmt: skip
        log.append(events)


def sidecars(root: Path) -> dict[str, object]:
    """Every segment's index, by relative path (None when it has no sidecar)."""
    events_dir = root / EVENTS_DIR
    return {
        str(path.relative_to(events_dir)): read_index(path)
        for path in sorted(events_dir.glob("date=*/branch=*/*.jsonl"))
    }


def test_the_indexer_writes_what_the_writer_would_have_and_only_once(tmp_path: Path) -> None:
    with EventLog(tmp_path / "a", "w1", segment_max_bytes=SEGMENT_BYTES) as log:
        append_batches(log)
    with EventLog(
        tmp_path / "b", "w1", segment_max_bytes=SEGMENT_BYTES, index_on_seal=False
    ) as log:
        append_batches(log)
    expected, unindexed = sidecars(tmp_path / "a"), sidecars(tmp_path / "b")
    assert len(expected) > 4 and None not in expected.values()
    assert set(unindexed) == set(expected) and set(unindexed.values()) == {None}

    # Not indexed yet: a search still finds everything (it scans those segments).
    reader = EventLogReader(tmp_path / "b")
    assert len(list(reader.search_ip("203.0.113.9"))) == 8

    indexer = SealedSegmentIndexer(tmp_path / "b" / EVENTS_DIR, "w1")
    assert sorted(indexer.index_new()) == sorted(expected)
    assert sidecars(tmp_path / "b") == expected
    assert indexer.index_new() == []  # nothing new sealed, nothing done twice
    assert len(list(reader.search_ip("203.0.113.9"))) == 8
    assert [e.id for e in reader.search_ip("10.1.3.4")] == ["b3-004"]


def test_a_malformed_line_is_counted_and_the_rest_indexed(tmp_path: Path) -> None:
    with EventLog(tmp_path, "w1", index_on_seal=False) as log:
        append_batches(log)
    segment = sorted((tmp_path / EVENTS_DIR).glob("date=*/branch=main/*.jsonl"))[0]
    lines = segment.read_bytes().split(b"\n")
    lines[5] = b'{"type": "FlowObserved", "id": 7}'  # valid JSON, not a valid event
    segment.write_bytes(b"\n".join(lines))
    indexer = SealedSegmentIndexer(tmp_path / EVENTS_DIR, "w1")
    assert len(indexer.index_new()) == 2  # main and lab
    index = read_index(segment)
    assert index is not None and index.malformed_lines == 1
    assert index.events == len(lines) - 2  # the last split part is empty, one line is bad


def test_a_projector_process_indexes_what_its_replica_sealed(tmp_path: Path) -> None:
    """The real child process a replica starts (app/projector.py), on this test's writer."""
    projector = subprocess.Popen(
        [sys.executable, "-m", "netmon.app.projector", "--data-dir", str(tmp_path),
         "--replica", "w1", "--nice", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with EventLog(tmp_path, "w1", segment_max_bytes=SEGMENT_BYTES, index_on_seal=False) as log:
            append_batches(log)
        segments = list(sidecars(tmp_path))
        deadline = time.monotonic() + 20
        while not all(index_path(tmp_path / EVENTS_DIR / s).exists() for s in segments):
            assert projector.poll() is None, projector.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the projector did not index every segment"
            time.sleep(0.05)  # polls files another process writes; no event to await
    finally:
        projector.terminate()
        output = projector.communicate(timeout=20)[0].decode()
    assert output.count("indexed sealed segment") == len(segments)


def test_a_failed_sidecar_write_leaves_no_temp_file_and_is_retried(tmp_path: Path) -> None:
    """A child process whose file size limit makes the sidecar write fail (EFBIG, as a full
    disk fails it with ENOSPC): it logs, leaves no temp file, and the next run indexes."""
    with EventLog(tmp_path, "w1", index_on_seal=False) as log:
        append_batches(log)
    failing = subprocess.run(
        [sys.executable, "-c", (
            "import resource, signal, sys\n"
            "from pathlib import Path\n"
            "from netmon.storage.segment_index import SealedSegmentIndexer\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))\n"
            "print(SealedSegmentIndexer(Path(sys.argv[1]), 'w1').index_new())\n"
        ), str(tmp_path / EVENTS_DIR)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert failing.returncode == 0, failing.stderr
    assert failing.stdout.strip() == "[]" and "could not index" in failing.stderr
    segments = sorted((tmp_path / EVENTS_DIR).glob("date=*/branch=*/*.jsonl"))
    leftovers = [p.name for s in segments for p in s.parent.iterdir() if ".idx" in p.name]
    assert leftovers == []  # neither a sidecar nor a temp file
    assert len(SealedSegmentIndexer(tmp_path / EVENTS_DIR, "w1").index_new()) == len(segments)
    assert all(read_index(segment) is not None for segment in segments)
