"""The agent's durable spool: every sealed batch is on disk before it is sent, and leaves only
when the server acknowledges it (or when it moves into an hourly offline ZIP).

Layout of the spool directory::

    batches/<created_us>-<boot_id>-<seq>-<count>.batch   one SpooledBatch (msgpack), fsynced
    outbox/*.zip                                          sealed hourly archives (offline_zip;
                                                          the cap reads their manifests here)
    rejected/                                             batches the server refused for good
    gaps.msgpack                                          batches dropped by the size cap
    cursor                                                the source position of the last
                                                          acknowledged batch (resumable sources)

The spool has a byte cap (batches and outbox archives together). When a new batch would pass
it, the oldest batches are dropped first, then the oldest archives; every drop is counted per
boot and kept in ``gaps.msgpack`` until the transport has reported it as a ``GapReported``.
File names sort oldest first, so a restart only lists the directory. Every file is replaced
through ``write_atomically`` (temp file, fsync, rename, fsync of the directory), readable by its
owner only; a restart deletes the temp files of writes that a crash cut short.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import zipfile
from pathlib import Path

import msgspec

from netmon.storage.contract.files import write_atomically
from netmon.storage.contract.wire import ArchiveManifest, manifest_decoder

log = logging.getLogger(__name__)


class SpooledBatch(msgspec.Struct, frozen=True):
    """What a batch file holds: the frame as sent plus what the agent needs to resume."""

    boot_id: str
    seq: int
    count: int
    created: float
    frame: bytes
    cursor: int = -1  # source position after this batch's last event (-1: not resumable)


class SpoolEntry(msgspec.Struct, frozen=True):
    """One batch file, as known from its name and size."""

    name: str
    boot_id: str
    seq: int
    count: int
    created: float
    size: int


class GapRecord(msgspec.Struct):
    """Batches of one boot dropped by the cap and not yet reported."""

    boot_id: str
    first_seq: int
    last_seq: int
    batches: int = 0
    events: int = 0


_batch_decoder = msgspec.msgpack.Decoder(SpooledBatch)
_gaps_decoder = msgspec.msgpack.Decoder(list[GapRecord])
_encoder = msgspec.msgpack.Encoder()

MANIFEST_NAME = "manifest.json"  # inside an offline archive (offline_zip writes them)
TORN_WRITES = ".*.tmp"  # write_atomically's temp files: only a crash leaves one behind


def read_manifest(path: Path) -> ArchiveManifest | None:
    """The manifest of one of our own offline archives (None if unreadable)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return manifest_decoder.decode(archive.read(MANIFEST_NAME))
    except (OSError, KeyError, zipfile.BadZipFile, msgspec.DecodeError):
        return None


def _parse_name(path: Path) -> SpoolEntry | None:
    try:
        created_us, boot_id, seq, count = path.stem.split("-")
        return SpoolEntry(
            path.name, boot_id, int(seq), int(count), int(created_us) / 1e6, path.stat().st_size
        )
    except (ValueError, OSError):
        return None


class Spool:
    """Thread-safe: the pipeline thread puts, the transport's event loop sends and removes."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.batch_dir = self.directory / "batches"
        self.outbox_dir = self.directory / "outbox"
        self.rejected_dir = self.directory / "rejected"
        for folder in (self.batch_dir, self.outbox_dir, self.rejected_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for folder in (self.directory, self.batch_dir, self.outbox_dir):
            for torn in folder.glob(TORN_WRITES):
                torn.unlink(missing_ok=True)  # a write cut short by a crash: never acknowledged
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], SpoolEntry] = {}
        for path in sorted(self.batch_dir.glob("*.batch")):
            if path.name.startswith(".tmp-"):
                # The temp name of spools written before write_atomically (upgrades only).
                path.unlink(missing_ok=True)
                continue
            entry = _parse_name(path)
            if entry is None:
                log.warning("spool: ignoring unreadable batch file %s", path.name)
                continue
            self._entries[(entry.boot_id, entry.seq)] = entry
        self._batch_bytes = sum(entry.size for entry in self._entries.values())
        self._gaps_path = self.directory / "gaps.msgpack"
        self._gaps = self._load_gaps()
        self._cursor_path = self.directory / "cursor"
        self._cursor = self._load_cursor()
        self._saved_cursor = -2
        self.dropped_batches = 0
        self.dropped_events = 0

    # --- batches ------------------------------------------------------------------------------

    def put(self, batch: SpooledBatch) -> None:
        """Store a sealed batch durably, dropping the oldest data if the cap requires it."""
        data = _encoder.encode(batch)
        name = (
            f"{int(batch.created * 1e6):016d}-{batch.boot_id}-{batch.seq:010d}-{batch.count}.batch"
        )
        with self._lock:
            self._make_room(len(data))
            write_atomically(self.batch_dir / name, data, mode=0o600)
            entry = SpoolEntry(
                name, batch.boot_id, batch.seq, batch.count, batch.created, len(data)
            )
            self._entries[(batch.boot_id, batch.seq)] = entry
            self._batch_bytes += entry.size
            if batch.cursor > self._cursor:
                self._cursor = batch.cursor

    def entries(self) -> list[SpoolEntry]:
        """Spooled batches, oldest first."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda entry: entry.name)

    def read(self, entry: SpoolEntry) -> SpooledBatch | None:
        """The batch of an entry, or None if it was removed meanwhile."""
        try:
            return _batch_decoder.decode((self.batch_dir / entry.name).read_bytes())
        except FileNotFoundError:
            return None

    def contains(self, boot_id: str, seq: int) -> bool:
        """True while the batch is still spooled."""
        with self._lock:
            return (boot_id, seq) in self._entries

    def remove(self, boot_id: str, seq: int) -> bool:
        """Forget an acknowledged batch (False if it was not spooled)."""
        with self._lock:
            entry = self._entries.pop((boot_id, seq), None)
            if entry is None:
                return False
            self._batch_bytes -= entry.size
            path = self.batch_dir / entry.name
            self._remember_cursor(path)
            path.unlink(missing_ok=True)
            return True

    def reject(self, boot_id: str, seq: int, reason: str) -> None:
        """Set aside a batch the server will never accept (kept for the operator)."""
        with self._lock:
            entry = self._entries.pop((boot_id, seq), None)
            if entry is None:
                return
            self._batch_bytes -= entry.size
            path = self.batch_dir / entry.name
            self._remember_cursor(path)
            os.replace(path, self.rejected_dir / entry.name)
            (self.rejected_dir / f"{entry.name}.reason").write_text(reason + "\n")
        log.error("spool: batch %s/%d rejected by the server: %s", boot_id, seq, reason)

    def take(self, entries: list[SpoolEntry]) -> None:
        """Remove batches that now live in a durable offline archive."""
        with self._lock:
            for entry in entries:
                if self._entries.pop((entry.boot_id, entry.seq), None) is None:
                    continue
                self._batch_bytes -= entry.size
                path = self.batch_dir / entry.name
                self._remember_cursor(path)
                path.unlink(missing_ok=True)

    # --- sizes and the cap --------------------------------------------------------------------

    @property
    def total_bytes(self) -> int:
        """Bytes of spooled batches plus sealed archives."""
        with self._lock:
            return self._batch_bytes + self._outbox_bytes()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def outbox(self) -> list[Path]:
        """Sealed archives waiting for upload, oldest first."""
        return sorted(self.outbox_dir.glob("*.zip"))

    def _outbox_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.outbox_dir.glob("*.zip"))

    def _make_room(self, incoming: int) -> None:
        outbox_bytes = self._outbox_bytes()
        while self._batch_bytes + outbox_bytes + incoming > self.max_bytes:
            if self._entries:
                oldest = min(self._entries.values(), key=lambda entry: entry.name)
                self._drop(oldest)
            else:
                archives = sorted(self.outbox_dir.glob("*.zip"))
                if not archives:
                    return  # a single batch larger than the cap is still kept
                outbox_bytes -= archives[0].stat().st_size
                self._drop_archive(archives[0])

    def _drop(self, entry: SpoolEntry) -> None:
        del self._entries[(entry.boot_id, entry.seq)]
        self._batch_bytes -= entry.size
        path = self.batch_dir / entry.name
        self._remember_cursor(path)
        path.unlink(missing_ok=True)
        self._count_gap(entry.boot_id, entry.seq, entry.seq, 1, entry.count)
        log.warning(
            "spool: cap %d bytes reached, dropped batch %s/%d (%d events)",
            self.max_bytes,
            entry.boot_id,
            entry.seq,
            entry.count,
        )

    def _drop_archive(self, path: Path) -> None:
        manifest = read_manifest(path)
        if manifest is not None:
            counts: dict[tuple[str, int], int] = {
                (batch.boot_id, batch.seq): batch.count for batch in manifest.batches
            }
            for span in manifest.ranges:
                seqs = range(span.first_seq, span.last_seq + 1)
                events = sum(counts.get((span.boot_id, seq), 0) for seq in seqs)
                self._count_gap(span.boot_id, span.first_seq, span.last_seq, len(seqs), events)
        path.unlink(missing_ok=True)
        log.warning("spool: cap %d bytes reached, dropped archive %s", self.max_bytes, path.name)

    # --- gaps ---------------------------------------------------------------------------------

    def _count_gap(self, boot_id: str, first: int, last: int, batches: int, events: int) -> None:
        self.dropped_batches += batches
        self.dropped_events += events
        for gap in self._gaps:
            if gap.boot_id == boot_id:
                gap.first_seq = min(gap.first_seq, first)
                gap.last_seq = max(gap.last_seq, last)
                gap.batches += batches
                gap.events += events
                break
        else:
            self._gaps.append(GapRecord(boot_id, first, last, batches, events))
        write_atomically(self._gaps_path, _encoder.encode(self._gaps), mode=0o600)

    def gaps(self) -> list[GapRecord]:
        """Dropped batches not yet reported to the server."""
        with self._lock:
            return [msgspec.structs.replace(gap) for gap in self._gaps]

    def clear_gaps(self, reported: list[GapRecord]) -> None:
        """Forget gaps once their GapReported events are spooled (drops counted meanwhile,
        e.g. by the cap while reporting, stay for the next report)."""
        with self._lock:
            for done in reported:
                for gap in self._gaps:
                    if gap.boot_id == done.boot_id:
                        gap.batches -= done.batches
                        gap.events -= done.events
                        if done.last_seq >= gap.first_seq:
                            gap.first_seq = min(done.last_seq + 1, gap.last_seq)
            self._gaps = [gap for gap in self._gaps if gap.batches > 0]
            write_atomically(self._gaps_path, _encoder.encode(self._gaps), mode=0o600)

    def _load_gaps(self) -> list[GapRecord]:
        try:
            return _gaps_decoder.decode(self._gaps_path.read_bytes())
        except FileNotFoundError:
            return []
        except msgspec.DecodeError:
            log.error("spool: %s is unreadable; earlier gaps cannot be reported", self._gaps_path)
            return []

    # --- resumable sources --------------------------------------------------------------------

    def cursor(self) -> int:
        """The source position after the newest batch ever spooled (-1 if none)."""
        with self._lock:
            return self._cursor

    def _load_cursor(self) -> int:
        cursor = -1
        with contextlib.suppress(FileNotFoundError, ValueError):
            cursor = int(self._cursor_path.read_text())
        if self._entries:
            newest = max(self._entries.values(), key=lambda entry: entry.name)
            batch = self.read(newest)
            if batch is not None:
                cursor = max(cursor, batch.cursor)
        return cursor

    def _remember_cursor(self, path: Path) -> None:
        """Before a batch file goes, save the newest cursor: its batch was durably spooled, so
        resuming after it never skips or repeats a spooled event."""
        if self._cursor >= 0 and self._saved_cursor != self._cursor:
            write_atomically(self._cursor_path, str(self._cursor).encode(), mode=0o600)
            self._saved_cursor = self._cursor
