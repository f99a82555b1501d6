"""kill -9 at every step of a real ``netmon archive once``: the next run completes the work and
every event ends up in exactly one place (a live segment or an archive), none lost, none doubled.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netmon.archive.manager import ArchiveManager
from netmon.storage.eventlog import EventLog
from tests.archive.helpers import (
    SETTINGS,
    archive_names,
    day_ago,
    flow,
    midnight,
    placement,
    populate,
)

ENV = {
    "NETMON_ARCHIVE__AFTER_DAYS": "2",
    "NETMON_ARCHIVE__GRACE_S": "0",
    "NETMON_ARCHIVE__RETAIN_DAYS": "15",
    "NETMON_ARCHIVE__MIN_FREE_BYTES": "0",
    "NETMON_ARCHIVE__MIN_FREE_PERCENT": "0",
}


def build_template(root: Path) -> list[str]:
    """A store with every kind of work for one run: new partitions, a late segment for an
    archived partition (the archive is rewritten), and an archive past retention."""
    ids = populate(root, days_ago=[5, 20], per_partition=12, segment_max_bytes=6_000, prefix="a")
    ArchiveManager(root, SETTINGS).run_once()
    ids += populate(root, days_ago=[0, 3, 4], per_partition=24, segment_max_bytes=6_000)
    with EventLog(root, "replica-2", durability="none") as late:
        late.append([flow("late-5", midnight(day_ago(5)) + 50, "hq", 3)])
    return [*ids, "late-5"]


def archive_once(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENV, "NETMON_STORE__DATA_DIR": str(data_dir)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "netmon.app.cli",
            "archive",
            "once",
            "--json",
            "--no-progress",
            *extra,
        ],
        env=env,
        cwd=data_dir.parent,  # no stray .env from the repository
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_kill_at_every_step_then_rerun_loses_and_doubles_nothing(tmp_path: Path) -> None:
    template = tmp_path / "template"
    ids = build_template(template)
    # Retention deletes the 20-day-old archive: its events are meant to go, all the rest to stay.
    expected = {event_id: 1 for event_id in ids if not event_id.startswith("a-20-")}

    clean = tmp_path / "clean" / "data"
    shutil.copytree(template, clean)
    run = archive_once(clean)
    assert run.returncode == 0, run.stderr
    steps = json.loads(run.stdout)["steps"]
    final_archives = archive_names(clean)
    assert placement(clean) == expected
    assert steps >= 20  # every partition, member, verify, rename, removal and deletion

    for k in range(1, steps + 1):
        data = tmp_path / f"k{k}" / "data"
        shutil.copytree(template, data)
        crashed = archive_once(data, f"--crash-at-step={k}")
        assert crashed.returncode == -signal.SIGKILL, (k, crashed.stderr)
        # Killed mid-run: an event may be in two places for a moment, never in none.
        assert set(placement(data)) >= set(expected), k
        recovery = archive_once(data)
        assert recovery.returncode == 0, (k, recovery.stderr)
        assert placement(data) == expected, k
        assert archive_names(data) == final_archives, k
        shutil.rmtree(data.parent)


@pytest.mark.slow
def test_crashes_during_recovery_runs_are_recovered_too(tmp_path: Path) -> None:
    """Chains of kills: each recovery run is itself killed somewhere, then one finishes."""
    template = tmp_path / "template"
    ids = build_template(template)
    expected = {event_id: 1 for event_id in ids if not event_id.startswith("a-20-")}
    chooser = random.Random(20261121)
    total_kills = 0
    for chain in range(6):
        data = tmp_path / f"chain{chain}" / "data"
        shutil.copytree(template, data)
        kills = 0
        for _ in range(3):
            run = archive_once(data, f"--crash-at-step={chooser.randint(1, 30)}")
            if run.returncode == 0:
                break  # the run finished before reaching that step
            assert run.returncode == -signal.SIGKILL, run.stderr
            kills += 1
            assert set(placement(data)) >= set(expected), chain
        final = archive_once(data)
        assert final.returncode == 0, final.stderr
        assert placement(data) == expected, (chain, kills)
        assert not [n for n in archive_names(data) if n.startswith(".tmp-")]
        shutil.rmtree(data.parent)
        total_kills += kills
    assert total_kills >= 10  # most chains were killed more than once before finishing
