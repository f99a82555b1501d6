"""The real ``netmon archive`` commands as subprocesses: dry run, lock, service loop, bad input."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.archive.helpers import archive_names, day_ago, live_ids, populate
from tests.archive.test_crash import ENV


def netmon(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netmon.app.cli", *args],
        env={**os.environ, **ENV, "NETMON_STORE__DATA_DIR": str(data_dir), **env},
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_dry_run_prints_what_would_happen_and_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    populate(data, days_ago=[1, 4, 20], branches=["hq"])
    # Archive days 4 and 20, keeping everything; the dry run then has retention to report.
    assert netmon(data, "archive", "once", NETMON_ARCHIVE__RETAIN_DAYS="0").returncode == 0
    populate(data, days_ago=[3], branches=["hq"], prefix="n")
    before = snapshot(data)
    run = netmon(data, "archive", "once", "--dry-run")
    assert run.returncode == 0, run.stderr
    assert f"would archive date={day_ago(3).isoformat()}/branch=hq" in run.stdout
    assert f"would delete {day_ago(20).isoformat()}_hq.zip" in run.stdout
    assert "retention" in run.stdout and "would seal 1 partition(s)" in run.stdout
    assert snapshot(data) == before


def test_a_second_run_while_one_holds_the_lock_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    populate(data, days_ago=[4], branches=["hq"])
    (data / "archives").mkdir()
    fd = os.open(data / "archives" / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        run = netmon(data, "archive", "once")
    finally:
        os.close(fd)
    assert run.returncode == 1
    assert "another archive run holds" in run.stderr
    assert [n for n in archive_names(data) if n.endswith(".zip")] == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NETMON_ARCHIVE__AFTER_DAYS": "soon"}, "archive.after_days (NETMON_ARCHIVE__AFTER_DAYS)"),
        ({"NETMON_ARCHIVE__RETAIN_DAYS": "2"}, "must be more than archive.after_days"),
        ({"NETMON_ARCHIVE__COMPRESS_LEVEL": "11"}, "compress_level must be 0-9"),
    ],
)
def test_bad_settings_are_a_clear_error_and_touch_nothing(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    data = tmp_path / "data"
    populate(data, days_ago=[4], branches=["hq"])
    before = snapshot(data)
    run = netmon(data, "archive", "once", **env)
    assert run.returncode == 2 and message in run.stderr
    assert snapshot(data) == before


def test_verify_names_a_damaged_archive(tmp_path: Path) -> None:
    data = tmp_path / "data"
    populate(data, days_ago=[4, 5], branches=["hq"])
    assert netmon(data, "archive", "once").returncode == 0
    assert netmon(data, "archive", "verify").returncode == 0
    damaged = data / "archives" / f"{day_ago(5).isoformat()}_hq.zip"
    raw = bytearray(damaged.read_bytes())
    raw[80] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    run = netmon(data, "archive", "verify")
    assert run.returncode == 1
    assert f"BAD {damaged.name}" in run.stdout and f"ok  {day_ago(4).isoformat()}" in run.stdout


def test_the_service_archives_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = populate(data, days_ago=[0, 4], branches=["hq"])
    service = subprocess.Popen(
        [sys.executable, "-m", "netmon.app.cli", "archive", "run"],
        env={**os.environ, **ENV, "NETMON_STORE__DATA_DIR": str(data)},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert service.stderr is not None
        deadline = time.monotonic() + 30
        for line in service.stderr:  # the first run's summary line ends the wait
            if "archive run: sealed 1 partition(s)" in line or time.monotonic() > deadline:
                break
        assert [n for n in archive_names(data) if n.endswith(".zip")] == [
            f"{day_ago(4).isoformat()}_hq.zip"
        ]
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=10) == 0  # not killed: it was waiting for its next interval
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
        if service.stderr is not None:
            service.stderr.close()
    assert sorted(live_ids(data)) == sorted(i for i in ids if i.startswith("e-0-"))
