"""Archive ZIPs: writing one (with its manifest) and reading one back with every byte checked.

An archive holds the files of one live partition under their store paths
(``date=D/branch=B/WRITER-SEGMENT.jsonl`` and their sidecars), so ``unzip -d DATA/events`` puts
them back where they were, plus ``manifest.json``: per member its size, SHA-256, event count,
malformed-line count and time range, and the totals. Members are copied byte for byte: a line
that does not parse is kept as it is (and counted), never dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import msgspec

from netmon.archive.layout import PartitionKey

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
CHUNK = 4 * 1024 * 1024
# Past this size a member needs ZIP64 headers, which must be chosen before its data is written.
ZIP64_THRESHOLD = 1 << 31
# What reading a damaged ZIP can raise: bad headers, a bad CRC, bad deflate data, a short file.
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


class ArchiveError(Exception):
    """An archive cannot be written or read; the message names the file and the problem."""


class ArchiveCorruptError(ArchiveError):
    """An archive whose bytes do not match its manifest (or that is not a readable ZIP)."""


class ArchiveMember(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One file inside an archive, as it was in the live partition."""

    name: str  # path inside the ZIP: date=D/branch=B/FILE
    size: int
    sha256: str
    events: int = 0  # complete lines that parsed (0 for sidecar files)
    malformed: int = 0  # lines kept as they were but unreadable (a torn tail counts here)
    first_ts: float | None = None
    last_ts: float | None = None
    mtime: float = 0.0  # the live file's modification time


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an archive holds; written as its last member, read first."""

    format: int = FORMAT_VERSION
    date: str
    branch: str
    created_at: float
    events: int
    malformed: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    members: tuple[ArchiveMember, ...] = ()

    def member(self, name: str) -> ArchiveMember | None:
        """The member called ``name`` (None when absent)."""
        for member in self.members:
            if member.name == name:
                return member
        return None


class _Stamp(msgspec.Struct):
    """Just the time of an event: decoding skips every other field, which keeps scanning fast."""

    ts: float


_stamp_decoder = msgspec.json.Decoder(_Stamp)
_manifest_decoder = msgspec.json.Decoder(Manifest)
_encoder = msgspec.json.Encoder()


class Counts(msgspec.Struct, frozen=True):
    """Events, unreadable lines and time range of one segment."""

    events: int = 0
    malformed: int = 0
    first_ts: float | None = None
    last_ts: float | None = None


class _LineStats:
    """Counts events and the time range of JSON lines fed in arbitrary chunks.

    Only for segments without a trustworthy sidecar index: decoding every line for its ``ts``
    costs more than deflating it at level 1.
    """

    def __init__(self) -> None:
        self.events = 0
        self.malformed = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self._rest = b""

    def feed(self, chunk: bytes) -> None:
        data = self._rest + chunk
        cut = data.rfind(b"\n") + 1
        self._rest = data[cut:]
        if cut:
            self._count(data[:cut])

    def finish(self) -> Counts:
        if self._rest.strip():
            self.malformed += 1  # a last line without its newline: torn, kept, not counted
        self._rest = b""
        return Counts(self.events, self.malformed, self.first_ts, self.last_ts)

    def _count(self, lines: bytes) -> None:
        try:
            stamps = _stamp_decoder.decode_lines(lines)
        except (msgspec.DecodeError, msgspec.ValidationError):
            stamps = []
            for line in lines.splitlines():
                if not line.strip():
                    continue
                try:
                    stamps.append(_stamp_decoder.decode(line))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    self.malformed += 1
        if not stamps:
            return
        self.events += len(stamps)
        low = min(stamp.ts for stamp in stamps)
        high = max(stamp.ts for stamp in stamps)
        self.first_ts = low if self.first_ts is None else min(self.first_ts, low)
        self.last_ts = high if self.last_ts is None else max(self.last_ts, high)


def _copy_counted(
    source: IO[bytes], target: IO[bytes], counts: Counts | None, progress: Callable[[int], None]
) -> tuple[int, str, Counts]:
    """Stream ``source`` into ``target``, hashing it; count its lines unless ``counts`` given."""
    digest = hashlib.sha256()
    stats = _LineStats() if counts is None else None
    size = 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        target.write(chunk)
        if stats is not None:
            stats.feed(chunk)
        size += len(chunk)
        progress(len(chunk))
    return size, digest.hexdigest(), stats.finish() if stats is not None else counts or Counts()


def is_segment(name: str) -> bool:
    """Whether a member or file holds events (sidecar index files do not)."""
    return name.endswith(".jsonl")


class ArchiveWriter:
    """Writes one archive to a temporary path; ``finish`` adds the manifest and fsyncs it."""

    def __init__(self, path: Path, key: PartitionKey, compress_level: int = 6) -> None:
        self.path = path
        self.key = key
        self._zip = zipfile.ZipFile(
            path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compress_level
        )
        self._level = compress_level
        self._members: list[ArchiveMember] = []

    def add_file(
        self,
        name: str,
        source: Path,
        progress: Callable[[int], None] = lambda n: None,
        counts: Counts | None = None,
    ) -> ArchiveMember:
        """Copy a live file into the archive as ``name``.

        A segment's events are counted as it streams unless ``counts`` (from its sidecar
        index) are given; other files count nothing.
        """
        if counts is None and not is_segment(name):
            counts = Counts()
        stat = source.stat()
        info = self._info(zipfile.ZipInfo.from_file(source, arcname=name))
        with (
            source.open("rb") as handle,
            self._zip.open(info, "w", force_zip64=stat.st_size >= ZIP64_THRESHOLD) as target,
        ):
            size, sha, counts = _copy_counted(handle, target, counts, progress)
        return self._add(name, size, sha, counts, stat.st_mtime)

    def copy_member(
        self,
        source: zipfile.ZipFile,
        member: ArchiveMember,
        progress: Callable[[int], None] = lambda n: None,
    ) -> ArchiveMember:
        """Carry a member over from the previous version of this archive, checking its hash."""
        mtime = max(member.mtime, 315_532_800)  # ZIP dates start in 1980
        info = self._info(zipfile.ZipInfo(member.name, date_time=time.gmtime(mtime)[:6]))
        try:
            with (
                source.open(member.name) as handle,
                self._zip.open(info, "w", force_zip64=member.size >= ZIP64_THRESHOLD) as target,
            ):
                counts = Counts(member.events, member.malformed, member.first_ts, member.last_ts)
                size, sha, counts = _copy_counted(handle, target, counts, progress)
        except (*ZIP_READ_ERRORS, KeyError) as error:
            raise ArchiveCorruptError(f"{source.filename}: {member.name}: {error}") from None
        if (size, sha) != (member.size, member.sha256):
            raise ArchiveCorruptError(f"{source.filename}: {member.name} does not match manifest")
        return self._add(member.name, size, sha, counts, member.mtime)

    def _info(self, info: zipfile.ZipInfo) -> zipfile.ZipInfo:
        info.compress_type = zipfile.ZIP_DEFLATED
        # Python 3.13 renamed ZipInfo._compresslevel to compress_level.
        level = "compress_level" if hasattr(info, "compress_level") else "_compresslevel"
        setattr(info, level, self._level)
        return info

    def _add(self, name: str, size: int, sha: str, stats: Counts, mtime: float) -> ArchiveMember:
        member = ArchiveMember(
            name=name,
            size=size,
            sha256=sha,
            events=stats.events,
            malformed=stats.malformed,
            first_ts=stats.first_ts,
            last_ts=stats.last_ts,
            mtime=mtime,
        )
        if stats.malformed:
            log.warning("%s: %d unreadable line(s) archived as they are", name, stats.malformed)
        self._members.append(member)
        return member

    def finish(self) -> Manifest:
        """Write the manifest, close the ZIP and fsync it; returns the manifest."""
        members = tuple(sorted(self._members, key=lambda m: m.name))
        firsts = [m.first_ts for m in members if m.first_ts is not None]
        lasts = [m.last_ts for m in members if m.last_ts is not None]
        manifest = Manifest(
            date=self.key.day.isoformat(),
            branch=self.key.branch,
            created_at=time.time(),
            events=sum(m.events for m in members),
            malformed=sum(m.malformed for m in members),
            first_ts=min(firsts) if firsts else None,
            last_ts=max(lasts) if lasts else None,
            members=members,
        )
        self._zip.writestr(MANIFEST_NAME, _encoder.encode(manifest))
        self._zip.close()
        with self.path.open("rb+") as handle:
            os.fsync(handle.fileno())
        return manifest

    def abort(self) -> None:
        """Close and delete the unfinished file."""
        self._zip.close()
        self.path.unlink(missing_ok=True)


def read_manifest(path: Path) -> Manifest:
    """The manifest of an archive, without reading its members (cheap: for listings)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return _decode_manifest(archive)
    except ZIP_READ_ERRORS as error:
        raise ArchiveCorruptError(f"{path}: not a readable ZIP: {error}") from None


def _decode_manifest(archive: zipfile.ZipFile) -> Manifest:
    try:
        raw = archive.read(MANIFEST_NAME)
    except KeyError:
        raise ArchiveCorruptError(f"{archive.filename}: no {MANIFEST_NAME}") from None
    try:
        return _manifest_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise ArchiveCorruptError(f"{archive.filename}: bad {MANIFEST_NAME}: {error}") from None


def verify_archive(path: Path, progress: Callable[[int], None] = lambda n: None) -> Manifest:
    """Read every member back and check it against the manifest; raise ArchiveCorruptError."""
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = _decode_manifest(archive)
            present = set(archive.namelist()) - {MANIFEST_NAME}
            listed = {member.name for member in manifest.members}
            if present != listed:
                raise ArchiveCorruptError(
                    f"{path}: members {sorted(present ^ listed)} differ from the manifest"
                )
            for member in manifest.members:
                digest, size = hashlib.sha256(), 0
                with archive.open(member.name) as handle:  # zipfile checks the CRC at the end
                    while chunk := handle.read(CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        progress(len(chunk))
                if (size, digest.hexdigest()) != (member.size, member.sha256):
                    raise ArchiveCorruptError(f"{path}: {member.name} does not match manifest")
            return manifest
    except ZIP_READ_ERRORS as error:
        raise ArchiveCorruptError(f"{path}: {error}") from None


def file_sha256(path: Path) -> str:
    """SHA-256 of a live file, for matching it to an archive member."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def iter_segments(path: Path) -> Iterator[tuple[ArchiveMember, bytes]]:
    """Each event-holding member of an archive with its bytes, in name order.

    zipfile checks each member's CRC-32 as it is read and the size is checked against the
    manifest, so a search never returns events from a damaged archive without saying so.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = _decode_manifest(archive)
            for member in manifest.members:
                if not is_segment(member.name):
                    continue
                data = archive.read(member.name)
                if len(data) != member.size:
                    raise ArchiveCorruptError(f"{path}: {member.name} does not match manifest")
                yield member, data
    except ZIP_READ_ERRORS as error:
        raise ArchiveCorruptError(f"{path}: {error}") from None
