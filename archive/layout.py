"""Where archives live and how they are named; the one place that turns a name into a path.

One ZIP per date and branch, flat under ``DATA/archives/``: ``2026-11-02_hq.zip``. Branch names
match ``[a-z0-9][a-z0-9_-]{0,63}`` (storage/names.py), so the name parses back without ambiguity
and a download name is only ever turned into a path after it parsed, never concatenated as is.
Live partitions are ``DATA/events/date=YYYY-MM-DD/branch=NAME/`` (the store's layout).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import msgspec

from netmon.storage.names import NAME_PATTERN

ARCHIVE_DIR = "archives"
EVENTS_DIR = "events"
LOCK_NAME = ".lock"
TEMP_PREFIX = ".tmp-"
ARCHIVE_NAME = re.compile(rf"(\d{{4}}-\d{{2}}-\d{{2}})_({NAME_PATTERN.pattern})\.zip")
DATE_DIR = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
BRANCH_DIR = re.compile(rf"branch=({NAME_PATTERN.pattern})")


class InvalidArchiveNameError(ValueError):
    """A requested archive name that is not ``YYYY-MM-DD_BRANCH.zip``."""


class PartitionKey(msgspec.Struct, frozen=True, order=True):
    """A date and a branch: one live partition, one archive."""

    day: date
    branch: str

    @property
    def archive_name(self) -> str:
        """The archive's file name, also its download name."""
        return f"{self.day.isoformat()}_{self.branch}.zip"

    def __str__(self) -> str:
        return f"date={self.day.isoformat()}/branch={self.branch}"


def parse_archive_name(name: str) -> PartitionKey:
    """``2026-11-02_hq.zip`` -> PartitionKey; anything else raises InvalidArchiveNameError."""
    match = ARCHIVE_NAME.fullmatch(name)
    if match is None:
        raise InvalidArchiveNameError(f"not an archive name: {name[:200]!r}")
    try:
        day = date.fromisoformat(match.group(1))
    except ValueError:
        raise InvalidArchiveNameError(f"not a valid date in archive name: {name!r}") from None
    return PartitionKey(day, match.group(2))


def archives_dir(data_dir: Path) -> Path:
    """``DATA/archives``."""
    return data_dir / ARCHIVE_DIR


def events_dir(data_dir: Path) -> Path:
    """``DATA/events``, the store's root."""
    return data_dir / EVENTS_DIR


def archive_path(data_dir: Path, key: PartitionKey) -> Path:
    """The archive file of one partition (it may not exist)."""
    return archives_dir(data_dir) / key.archive_name


def partition_dir(data_dir: Path, key: PartitionKey) -> Path:
    """The live partition folder of one date and branch (it may not exist)."""
    return events_dir(data_dir) / f"date={key.day.isoformat()}" / f"branch={key.branch}"


def live_partitions(data_dir: Path, dates: Iterable[date] | None = None) -> list[PartitionKey]:
    """Live partition folders (of ``dates`` only, when given), sorted; odd names are skipped."""
    found: list[PartitionKey] = []
    root = events_dir(data_dir)
    if dates is not None:
        date_dirs = [root / f"date={day.isoformat()}" for day in set(dates)]
    else:
        date_dirs = list(root.iterdir()) if root.is_dir() else []
    for date_dir in date_dirs:
        date_match = DATE_DIR.fullmatch(date_dir.name)
        if date_match is None or not date_dir.is_dir():
            continue
        try:
            day = date.fromisoformat(date_match.group(1))
        except ValueError:
            continue
        for branch_dir in date_dir.iterdir():
            branch_match = BRANCH_DIR.fullmatch(branch_dir.name)
            if branch_match is not None and branch_dir.is_dir():
                found.append(PartitionKey(day, branch_match.group(1)))
    return sorted(found)


def archived_partitions(data_dir: Path) -> list[PartitionKey]:
    """Every archive present, sorted oldest first (temporary files are not archives)."""
    root = archives_dir(data_dir)
    if not root.is_dir():
        return []
    keys = []
    for path in root.iterdir():
        try:
            keys.append(parse_archive_name(path.name))
        except InvalidArchiveNameError:
            continue
    return sorted(keys)
