"""Archive benchmark: sealing throughput (MB/s of live segments) and compression ratio on flows.

    .venv/bin/python bench/archive.py                 # 200 MB of flow events, level 6
    .venv/bin/python bench/archive.py --mb 1000 --levels 1,6,9

Writes FlowObserved events (the store benchmark's generator: 7 dates x 4 branches) with the real
EventLog, then for each deflate level copies the store and runs the real ArchiveManager over the
copy: zip + fsync + read-back verification + removal of the originals, timed end to end.
Baselines measured in the same run on the same files, so ratios hold on a shared machine:
- ``copy``: copying the segments with fsync (what moving the bytes costs at all);
- ``zlib``: one-shot deflate of the same bytes at the same level, no I/O (the CPU floor);
- ``gzip``: ``gzip -c -LEVEL`` over the same files, when installed.
Data lives in a temp dir (or --dir) and is deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.store import BRANCHES, DATES, Generator  # noqa: E402
from netmon.archive.manager import ArchiveManager  # noqa: E402
from netmon.archive.settings import ArchiveSettings  # noqa: E402
from netmon.storage.eventlog import EventLog  # noqa: E402

MB = 1024 * 1024


def write_flows(root: Path, target_bytes: int, seed: int = 7) -> int:
    """Append 1,000-event batches round-robin over every (date, branch) until target_bytes."""
    generator = Generator(seed)
    written = 0
    with (
        EventLog(root, "bench-1", durability="none") as log,
        tqdm(total=target_bytes, unit="B", unit_scale=True, desc="generate") as progress,
    ):
        while written < target_bytes:
            for day in range(DATES):
                for branch in BRANCHES:
                    batch = generator.batch(day, branch, 1_000, rare=False)
                    log.append(batch)
            now = sum(p.stat().st_size for p in root.rglob("*.jsonl"))
            progress.update(now - written)
            written = now
    return written


def segments(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jsonl"))


def timed_copy(source: Path, target: Path) -> float:
    """Copy a data dir, fsyncing every file; seconds spent."""
    started = time.perf_counter()
    shutil.copytree(source, target)
    for path in target.rglob("*"):
        if path.is_file():
            with path.open("rb+") as handle:
                os.fsync(handle.fileno())
    return time.perf_counter() - started


def timed_zlib(files: list[Path], level: int) -> tuple[float, int]:
    """Deflate every file in memory (read time excluded); seconds and compressed bytes."""
    total_time, out = 0.0, 0
    for path in files:
        data = path.read_bytes()
        started = time.perf_counter()
        out += len(zlib.compress(data, level))
        total_time += time.perf_counter() - started
    return total_time, out


def timed_gzip(files: list[Path], level: int) -> tuple[float, int] | None:
    gzip = shutil.which("gzip")
    if gzip is None:
        return None
    started = time.perf_counter()
    out = 0
    for path in files:
        result = subprocess.run(
            [gzip, "-c", f"-{level}", str(path)], capture_output=True, check=True
        )
        out += len(result.stdout)
    return time.perf_counter() - started, out


def compressed_events(data_dir: Path) -> int:
    """Compressed bytes of the .jsonl members of every archive (sidecars and manifest aside)."""
    total = 0
    for path in (data_dir / "archives").glob("*.zip"):
        with zipfile.ZipFile(path) as archive:
            total += sum(
                i.compress_size for i in archive.infolist() if i.filename.endswith(".jsonl")
            )
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=200, help="MB of flow events to generate")
    parser.add_argument("--levels", default="6", help="deflate levels to run, e.g. 1,6,9")
    parser.add_argument("--dir", type=Path, help="work here instead of a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the data afterwards")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="netmon-bench-archive-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        source = work / "source"
        size = write_flows(source, int(args.mb * MB))
        files = segments(source)
        print(f"\n{size / MB:.1f} MB of flow events in {len(files)} segments, "
              f"{len(list(source.glob('events/date=*/branch=*')))} partitions\n")  # fmt: skip
        header = f"{'what':<34}{'seconds':>9}{'MB/s':>9}{'ratio':>8}{'vs copy':>9}"
        print(header)
        print("-" * len(header))
        for level in (int(x) for x in args.levels.split(",")):
            target = work / f"level{level}"
            copy_s = timed_copy(source, target)
            zlib_s, zlib_out = timed_zlib(files, level)
            gzip_result = timed_gzip(files, level)
            settings = ArchiveSettings(
                after_days=2, grace_s=0, retain_days=0, min_free_bytes=0,
                min_free_percent=0, compress_level=level,
            )  # fmt: skip
            started = time.perf_counter()
            summary = ArchiveManager(target, settings, progress=True).run_once()
            ours_s = time.perf_counter() - started
            assert not summary.errors and summary.bytes_in == size, summary.line()
            rows = [
                ("copy + fsync (baseline)", copy_s, size),
                (f"zlib level {level}, memory only", zlib_s, zlib_out),
            ]
            if gzip_result is not None:
                rows.append((f"gzip -{level} (baseline)", gzip_result[0], gzip_result[1]))
            rows.append((f"netmon archive, level {level}", ours_s, summary.bytes_out))
            for name, seconds, out in rows:
                print(
                    f"{name:<34}{seconds:>9.2f}{size / MB / seconds:>9.1f}"
                    f"{size / out:>8.2f}{copy_s / seconds:>9.2f}"
                )
            events_out = compressed_events(target)
            print(f"  ours vs zlib floor: {zlib_s / ours_s:.2f}x the speed; "
                  f"{summary.events_archived} events, {len(summary.partitions_sealed)} "
                  "archives written, verified and originals removed")  # fmt: skip
            print(f"  ratio on the event members alone: {size / events_out:.2f} (the rest of "
                  f"each ZIP is the sidecar indexes, {summary.bytes_out - events_out} bytes, "
                  "kept so searches skip members)")  # fmt: skip
            shutil.rmtree(target)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
