"""The archive manager: plan, seal (zip + verify + remove originals), retain, guard the disk.

One run, under an exclusive lock (``DATA/archives/.lock``):

1. remove temporary files a crashed run left behind;
2. seal every live partition whose date is old enough: copy its eligible segments (and their
   sidecar indexes) into ``DATA/archives/DATE_BRANCH.zip`` written under a temporary name,
   fsynced, read back and checked against its manifest, renamed into place, the folder fsynced;
   only then are the originals removed, each only if its bytes are the ones archived;
3. delete archives older than ``retain_days``;
4. while free space is under the limit, delete the oldest archives.

Every step is idempotent, so a run killed anywhere is completed by the next: a partition found
both archived and live is verified again and its originals removed; a late segment of an already
archived partition is added by rewriting that archive (old members are carried over and checked).
Which segments may be archived at all is decided in archive/eligibility.py.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import msgspec
from tqdm import tqdm

from netmon.archive.eligibility import (
    PartitionPlan,
    SegmentFile,
    index_sealed_segments,
    journal_segments,
    orphan_sidecars,
    plan_partition,
)
from netmon.archive.layout import (
    LOCK_NAME,
    TEMP_PREFIX,
    PartitionKey,
    archive_path,
    archived_partitions,
    archives_dir,
    live_partitions,
)
from netmon.archive.settings import ArchiveSettings
from netmon.archive.zipfiles import (
    ArchiveError,
    ArchiveWriter,
    Manifest,
    file_sha256,
    read_manifest,
    verify_archive,
)
from netmon.storage.contract.files import fsync_directory
from netmon.storage.segments import INDEX_SUFFIX

log = logging.getLogger("netmon.archive")


class DiskUsage(Protocol):
    """What ``shutil.disk_usage`` returns (the fields the disk guard reads)."""

    @property
    def total(self) -> int: ...

    @property
    def free(self) -> int: ...


class ArchiveBusyError(ArchiveError):
    """Another archive run holds the lock."""


class ArchiveSettingsError(ArchiveError):
    """Archive settings that cannot work together; the message names them."""


def check_settings(settings: ArchiveSettings) -> None:
    """Refuse settings that would lose data or never finish (raise ArchiveSettingsError)."""
    problems = []
    if settings.after_days < 0:
        problems.append(f"archive.after_days must be 0 or more, not {settings.after_days}")
    if settings.retain_days < 0:
        problems.append(f"archive.retain_days must be 0 (keep) or more, not {settings.retain_days}")
    elif 0 < settings.retain_days <= settings.after_days:
        # Every archive would be deleted by the run that made it.
        problems.append(
            f"archive.retain_days ({settings.retain_days}) must be more than "
            f"archive.after_days ({settings.after_days}), or 0 to keep archives"
        )
    if not 0 <= settings.compress_level <= 9:
        problems.append(f"archive.compress_level must be 0-9, not {settings.compress_level}")
    if settings.grace_s < 0 or settings.interval_s <= 0:
        problems.append("archive.grace_s must be 0 or more and archive.interval_s more than 0")
    if not 0 <= settings.min_free_percent < 100:
        problems.append(f"archive.min_free_percent must be 0-99, not {settings.min_free_percent}")
    if problems:
        raise ArchiveSettingsError("; ".join(problems))


class Deletion(msgspec.Struct, frozen=True):
    """An archive deleted (or, in a dry run, to be deleted) and why."""

    name: str
    size: int
    reason: str  # "retention" or "disk guard"


class RunSummary(msgspec.Struct, kw_only=True):
    """What one run did (or, with dry_run, would do)."""

    dry_run: bool = False
    partitions_sealed: list[str] = []
    segments_archived: int = 0
    events_archived: int = 0
    bytes_in: int = 0  # live bytes sealed by this run
    bytes_out: int = 0  # size of the archives written
    originals_removed: int = 0
    held_back: list[str] = []  # "relpath: reason"
    deleted: list[Deletion] = []
    errors: list[str] = []
    steps: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        """The one-line summary logged after each run."""
        verb = "would seal" if self.dry_run else "sealed"
        ratio = f" ({self.bytes_in / self.bytes_out:.1f}x)" if self.bytes_out else ""
        return (
            f"archive run: {verb} {len(self.partitions_sealed)} partition(s), "
            f"{self.segments_archived} segment(s), {self.events_archived} event(s), "
            f"{self.bytes_in} bytes -> {self.bytes_out}{ratio}; removed {self.originals_removed} "
            f"original(s); deleted {len(self.deleted)} archive(s); held back "
            f"{len(self.held_back)}; {len(self.errors)} error(s); {self.seconds:.2f}s"
        )


class StepCounter:
    """Counts the steps of a run; SIGKILLs this process at step ``crash_at`` (tests only)."""

    def __init__(self, crash_at: int = 0) -> None:
        self.crash_at = crash_at
        self.count = 0

    def __call__(self, label: str) -> None:
        self.count += 1
        log.debug("step %d: %s", self.count, label)
        if self.count == self.crash_at:
            # No cleanup, no flush: exactly what a power cut or the OOM killer would do.
            os.kill(os.getpid(), signal.SIGKILL)


class ArchiveManager:
    """Seals old partitions, expires old archives, keeps free space above the limit."""

    def __init__(
        self,
        data_dir: Path,
        settings: ArchiveSettings,
        *,
        clock: Callable[[], float] = time.time,
        disk_usage: Callable[[Path], DiskUsage] = shutil.disk_usage,
        steps: StepCounter | None = None,
        progress: bool | None = None,
    ) -> None:
        check_settings(settings)
        self.data_dir = data_dir
        self.settings = settings
        self._clock = clock
        self._disk_usage = disk_usage
        self._step = steps or StepCounter()
        self._progress = progress  # None: a bar only on a terminal
        # The service sets this to its stop flag: a run then ends after the current partition.
        self.should_stop: Callable[[], bool] = lambda: False

    # --- planning ---------------------------------------------------------------------------

    def today(self) -> date:
        """The current UTC date."""
        return datetime.fromtimestamp(self._clock(), UTC).date()

    def cutoff(self) -> date:
        """Partitions dated before this day are old enough to archive."""
        return self.today() - timedelta(days=self.settings.after_days)

    def plan(self) -> list[PartitionPlan]:
        """Every live partition old enough to seal, with its eligible and held-back segments."""
        cutoff = self.cutoff()
        now = self._clock()
        journaled = journal_segments(self.data_dir)
        grace_s = self.settings.grace_s
        return [
            plan_partition(self.data_dir, key, now=now, grace_s=grace_s, journaled=journaled)
            for key in live_partitions(self.data_dir)
            if key.day < cutoff
        ]

    def expired(self) -> list[PartitionKey]:
        """Archives past retention, oldest first (none when retain_days is 0)."""
        if self.settings.retain_days <= 0:
            return []
        cutoff = self.today() - timedelta(days=self.settings.retain_days)
        return [key for key in archived_partitions(self.data_dir) if key.day < cutoff]

    def free_space_needed(self) -> int:
        """Bytes to free to get back over the disk guard's limit (0 when there is room)."""
        usage = self._disk_usage(self.data_dir)
        limit = max(
            self.settings.min_free_bytes, int(usage.total * self.settings.min_free_percent / 100)
        )
        return max(0, limit - usage.free)

    # --- running ----------------------------------------------------------------------------

    def run_once(self, dry_run: bool = False) -> RunSummary:
        """One complete run; with ``dry_run`` only report what would be done."""
        started = time.monotonic()
        summary = RunSummary(dry_run=dry_run)
        if not dry_run:
            archives_dir(self.data_dir).mkdir(parents=True, exist_ok=True)
        with self._locked(create=not dry_run):
            self._step("locked")
            if not dry_run:  # sidecars a replica's projector has not written (it may be down)
                index_sealed_segments(self.data_dir, self.cutoff())
            plans = self.plan()
            for plan in plans:
                summary.held_back.extend(f"{rel}: {why}" for rel, why in plan.held_back)
            if dry_run:
                self._report_dry_run(plans, summary)
            else:
                self._remove_temporaries()
                self._seal_all(plans, summary)
                self._expire(summary)
                self._guard_disk(summary)
        summary.steps = self._step.count
        summary.seconds = time.monotonic() - started
        log.info("%s", summary.line())
        return summary

    @contextmanager
    def _locked(self, create: bool) -> Iterator[None]:
        path = archives_dir(self.data_dir) / LOCK_NAME
        if not create and not path.parent.is_dir():
            yield  # a dry run on a data dir that was never archived: nothing to lock, or to make
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ArchiveBusyError(f"another archive run holds {path}") from None
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _remove_temporaries(self) -> None:
        for path in sorted(archives_dir(self.data_dir).glob(f"{TEMP_PREFIX}*")):
            log.info("removing %s left by an interrupted run", path.name)
            path.unlink()
            self._step(f"removed temporary {path.name}")

    def _report_dry_run(self, plans: list[PartitionPlan], summary: RunSummary) -> None:
        for plan in plans:
            if plan.segments:
                summary.partitions_sealed.append(str(plan.key))
                summary.segments_archived += len(plan.segments)
                summary.events_archived += sum(s.counts.events for s in plan.segments)
                summary.bytes_in += sum(segment.size for segment in plan.segments)
        expired = self.expired()
        summary.deleted.extend(self._deletion(key, "retention") for key in expired)
        needed = self.free_space_needed()
        for key in archived_partitions(self.data_dir):
            if needed <= 0:
                break
            if key not in expired:
                deletion = self._deletion(key, "disk guard")
                summary.deleted.append(deletion)
                needed -= deletion.size

    def _deletion(self, key: PartitionKey, reason: str) -> Deletion:
        path = archive_path(self.data_dir, key)
        return Deletion(key.archive_name, path.stat().st_size, reason)

    def _progress_bar(self, total: int, description: str) -> tqdm[Any]:
        disable = None if self._progress is None else not self._progress
        return tqdm(
            total=total, unit="B", unit_scale=True, desc=description, disable=disable, leave=False
        )

    def _seal_all(self, plans: list[PartitionPlan], summary: RunSummary) -> None:
        total = sum(segment.size for plan in plans for segment in plan.segments)
        with self._progress_bar(total, "archiving") as bar:
            for plan in plans:
                if self.should_stop():
                    log.info("stop requested: the remaining partitions wait for the next run")
                    return
                try:
                    if plan.segments:
                        self._seal(plan, summary, bar.update)
                    self._remove_orphan_sidecars(plan.key)
                except (ArchiveError, OSError) as error:
                    # Originals are kept: nothing is removed unless its archive verified.
                    log.error("cannot seal %s: %s", plan.key, error)
                    summary.errors.append(f"{plan.key}: {error}")

    def _seal(
        self, plan: PartitionPlan, summary: RunSummary, progress: Callable[[int], None]
    ) -> None:
        final = archive_path(self.data_dir, plan.key)
        previous = verify_archive(final) if final.exists() else None
        held = {m.name for m in previous.members} if previous else set()
        new = [segment for segment in plan.segments if segment.relpath not in held]
        manifest = previous
        if new:
            manifest = self._write(plan, previous, new, progress)
            summary.partitions_sealed.append(str(plan.key))
            summary.segments_archived += len(new)
            summary.events_archived += sum(
                member.events
                for member in manifest.members
                if member.name in {s.relpath for s in new}
            )
            summary.bytes_in += sum(segment.size for segment in new)
            summary.bytes_out += final.stat().st_size
        assert manifest is not None
        for segment in plan.segments:
            if self._remove_original(segment, manifest, fresh=segment in new):
                summary.originals_removed += 1
            else:
                summary.errors.append(f"{segment.relpath}: differs from its archived copy, kept")

    def _write(
        self,
        plan: PartitionPlan,
        previous: Manifest | None,
        new: list[SegmentFile],
        progress: Callable[[int], None],
    ) -> Manifest:
        final = archive_path(self.data_dir, plan.key)
        temp = final.with_name(f"{TEMP_PREFIX}{final.name}")
        writer = ArchiveWriter(temp, plan.key, self.settings.compress_level)
        self._step(f"{plan.key}: writing {temp.name}")
        try:
            if previous is not None:
                with zipfile.ZipFile(final) as old:
                    for member in previous.members:
                        writer.copy_member(old, member)
            for segment in new:
                member = writer.add_file(segment.relpath, segment.path, progress, segment.counts)
                if member.size != segment.size:
                    raise ArchiveError(f"{segment.relpath} changed while it was archived")
                for sidecar in segment.sidecars:
                    writer.add_file(sidecar.relpath, sidecar.path)
                self._step(f"{plan.key}: added {segment.relpath}")
            manifest = writer.finish()
        except BaseException:
            writer.abort()
            raise
        self._step(f"{plan.key}: written and fsynced")
        verify_archive(temp)  # read every byte back before anything is removed
        self._step(f"{plan.key}: verified")
        # Not write_atomically: the ZIP is read back between its fsync and the rename, and its
        # temp name (TEMP_PREFIX) is the one the next run removes after a crash.
        os.replace(temp, final)
        fsync_directory(final.parent)
        self._step(f"{plan.key}: renamed into place")
        return manifest

    def _remove_original(self, segment: SegmentFile, manifest: Manifest, *, fresh: bool) -> bool:
        """Delete a live segment (and its sidecars) whose exact bytes the archive holds."""
        member = manifest.member(segment.relpath)
        if member is None:
            return False
        stat = segment.path.stat()
        same = stat.st_size == member.size and (
            (fresh and stat.st_mtime_ns == segment.mtime_ns)
            or file_sha256(segment.path) == member.sha256
        )
        if not same:
            log.error("%s differs from its archived copy: kept for an operator", segment.relpath)
            return False
        # The segment first: a sidecar left alone is an orphan the next run removes, while a
        # segment left without its sidecar would look unsealed and be held back.
        segment.path.unlink()
        fsync_directory(segment.path.parent)
        self._step(f"removed {segment.relpath}")
        for sidecar in segment.sidecars:
            sidecar.path.unlink(missing_ok=True)
        return True

    def _remove_orphan_sidecars(self, key: PartitionKey) -> None:
        orphans = orphan_sidecars(self.data_dir, key)
        if not orphans:
            return
        final = archive_path(self.data_dir, key)
        manifest = read_manifest(final) if final.exists() else None
        for path in orphans:
            segment = f"{key}/{path.name[: -len(INDEX_SUFFIX)]}"
            if manifest is not None and manifest.member(segment) is not None:
                path.unlink()
                self._step(f"removed orphan {path.name}")

    def _expire(self, summary: RunSummary) -> None:
        for key in self.expired():
            summary.deleted.append(self._delete(key, "retention"))

    def _guard_disk(self, summary: RunSummary) -> None:
        if self.free_space_needed() <= 0:
            return
        for key in archived_partitions(self.data_dir):
            needed = self.free_space_needed()
            if needed <= 0:
                return
            log.warning("free space is %d bytes short: deleting the oldest archive", needed)
            summary.deleted.append(self._delete(key, "disk guard"))
        if self.free_space_needed() > 0:
            log.error("free space still under the limit and no archive is left to delete")
            summary.errors.append("disk guard: free space under the limit, no archive left")

    def _delete(self, key: PartitionKey, reason: str) -> Deletion:
        deletion = self._deletion(key, reason)
        archive_path(self.data_dir, key).unlink()
        fsync_directory(archives_dir(self.data_dir))
        log.info("deleted archive %s (%d bytes): %s", key.archive_name, deletion.size, reason)
        self._step(f"deleted {key.archive_name}")
        return deletion


def run_service(manager: ArchiveManager, stop: Callable[[float], bool]) -> None:
    """Run, then wait ``interval_s``, until ``stop(timeout)`` says so (it waits up to timeout)."""
    while True:
        try:
            manager.run_once()
        except ArchiveBusyError as error:
            log.warning("%s; trying again next interval", error)
        except OSError as error:
            log.error("archive run failed: %s; trying again next interval", error)
        if stop(manager.settings.interval_s):
            return
