"""Following benchmark: what one idle poll of a caught-up follower costs as the log ages.

    .venv/bin/python bench/follow.py                      # 1,000 and 20,000 segments
    .venv/bin/python bench/follow.py --segments 1000 5000

Three real writers (``EventLog``, one flow per segment: ``segment_max_bytes=1``) leave N sealed
segments in the manifests (plus one open segment each), optionally with the files removed as
archiving does (``--archived``). A follower reads to the end, then polls with nothing new:
- ``full pass``: a reader without ``follow_forward`` compares every listed segment with the
  position, as every follower did before;
- ``+ copy``: that, plus the copy of the position's offsets the old ``read_new`` made per call;
- ``following``: a ``follow_forward=True`` reader handed back the position it returned, which
  looks only at the unfinished segments.
Each figure is the median of 9 runs of 200 polls, all readers timed in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from netmon.storage.contract.events import FlowObserved, new_event_id  # noqa: E402
from netmon.storage.eventlog import EventLog  # noqa: E402
from netmon.storage.log_reader import EventLogReader  # noqa: E402
from netmon.storage.positions import Position  # noqa: E402

WRITERS = ("replica-1", "replica-2", "replica-3")
TS = 1_763_683_200.0 + 3600  # 2025-11-21T01:00:00Z
POLLS = 200
RUNS = 9


def a_flow(writer: str) -> FlowObserved:
    return FlowObserved(
        id=new_event_id(TS),
        ts=TS,
        branch="hq",
        agent_id=writer,
        first_seen=TS - 1.0,
        last_seen=TS,
        src_ip="10.0.0.1",
        src_port=40_000,
        dst_ip="192.0.2.10",
        dst_port=443,
        protocol=6,
    )


def write_log(root: Path, segments: int, archived: bool) -> None:
    """``segments`` sealed segments over the writers, one open segment each left behind."""
    for number, writer in enumerate(WRITERS):
        share = segments // len(WRITERS) + (number < segments % len(WRITERS))
        with EventLog(root, writer, durability="none", segment_max_bytes=1) as log:
            for _ in range(share + 1):  # each append seals the segment before it
                log.append([a_flow(writer)])
    if archived:
        for path in (root / "events").glob("date=*/branch=*/*.jsonl"):
            if path.with_name(path.name + ".idx").exists():
                path.unlink()


def caught_up(reader: EventLogReader) -> Position:
    position = Position()
    while True:
        events, position = reader.read_new(position, 100_000)
        if not events:
            return position


def idle_poll_us(poll: Callable[[], None]) -> float:
    """Median time of one poll, in microseconds."""
    runs = []
    for _ in range(RUNS):
        tick = time.perf_counter()
        for _ in range(POLLS):
            poll()
        runs.append((time.perf_counter() - tick) / POLLS * 1e6)
    return statistics.median(runs)


def measure(root: Path) -> dict[str, float]:
    full = EventLogReader(root)
    following = EventLogReader(root, follow_forward=True)
    full_at, following_at = caught_up(full), caught_up(following)
    assert full_at == following_at

    def full_pass() -> None:
        assert full.read_new(full_at)[0] == []

    def full_pass_and_copy() -> None:
        full_pass()
        dict(full_at.offsets).update({})  # what the old read_new copied on every call

    def follow() -> None:
        events, after = following.read_new(following_at)
        assert events == [] and after is following_at

    return {
        "listed": len(following.segments()),
        "full pass": idle_poll_us(full_pass),
        "+ copy": idle_poll_us(full_pass_and_copy),
        "following": idle_poll_us(follow),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, nargs="+", default=[1_000, 20_000])
    parser.add_argument("--archived", action="store_true", help="remove the sealed files")
    args = parser.parse_args()
    print(f"idle poll of a caught-up follower, {len(WRITERS)} writers, median of {RUNS}x{POLLS}")
    print(f"  {'listed':>8} {'full pass':>11} {'+ copy':>11} {'following':>11} {'ratio':>7}")
    for segments in args.segments:
        root = Path(tempfile.mkdtemp(prefix="netmon-bench-follow-"))
        try:
            write_log(root, segments, args.archived)
            f = measure(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(
            f"  {f['listed']:>8,.0f} {f['full pass']:>8.1f} us {f['+ copy']:>8.1f} us "
            f"{f['following']:>8.1f} us {f['+ copy'] / f['following']:>6.0f}x"
        )


if __name__ == "__main__":
    main()
