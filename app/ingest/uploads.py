"""``POST /api/v1/ingest/archive``: an agent's hourly offline ZIP, imported hostile-safe.

The body is read under ``ingest.max_archive_bytes`` into a temporary file. Before any entry is
read the archive must pass every structural check: a bounded number of entries, only the
names an agent writes (no absolute paths, ``..``, backslashes or duplicates), no symlinks, no
encrypted entries, no entries that overlap one another, a bounded total uncompressed size and
compression ratio. Each entry is then read under a hard byte cap (a forged size field cannot
make it larger). The manifest's signature must verify with the agent's key, every batch's
SHA-256 must match, and every batch must decode, before the first one is stored: a bad archive
stores nothing. Batches then go through the same exactly-once path as WebSocket frames.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import stat
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import anyio
import msgspec
from cryptography.fernet import InvalidToken
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from netmon.app.ingest.frames import DecodedBatch
from netmon.app.ingest.ingestor import Ingestor
from netmon.app.ingest.refusals import FrameRejected
from netmon.app.ingest.sessions import AgentSession
from netmon.app.settings import IngestSettings
from netmon.app.state import opened, server_state
from netmon.storage.contract import wire

log = logging.getLogger("netmon.ingest")

AGENT_HEADER = "x-netmon-agent"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
BATCH_NAME = re.compile(r"batches/[0-9a-z]{1,64}-[0-9]{10}\.bin")
LOCAL_HEADER = struct.Struct("<4s5H3L2H")
MANIFEST_MAX_BYTES = 16 * 1024 * 1024


class ArchiveRejected(Exception):
    """The upload is refused; ``status`` and ``code`` go into the JSON error."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def check_structure(archive: zipfile.ZipFile, file_size: int, limits: IngestSettings) -> None:
    """Refuse hostile archives before reading any entry."""
    infos = archive.infolist()
    if len(infos) > limits.max_archive_entries:
        raise ArchiveRejected(
            "too_many_entries", f"{len(infos)} entries, limit {limits.max_archive_entries}"
        )
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        if name.startswith(("/", "\\")) or "\\" in name or ".." in name.split("/") or ":" in name:
            raise ArchiveRejected("unsafe_path", f"entry {name!r} has an absolute or '..' path")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveRejected("symlink_entry", f"entry {name!r} is a symbolic link")
        if info.flag_bits & 0x1:
            raise ArchiveRejected("encrypted_entry", f"entry {name!r} is ZIP-encrypted")
        if name in seen:
            raise ArchiveRejected("duplicate_entry", f"entry {name!r} appears twice")
        seen.add(name)
        if name not in (MANIFEST_NAME, SIGNATURE_NAME) and not BATCH_NAME.fullmatch(name):
            raise ArchiveRejected(
                "unexpected_entry", f"entry {name!r} is not part of an agent archive"
            )
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ArchiveRejected(
                "unsupported_entry", f"entry {name!r} uses compression method {info.compress_type}"
            )
        if info.file_size > limits.max_archive_ratio * max(info.compress_size, 1):
            raise ArchiveRejected(
                "compression_ratio",
                f"entry {name!r} inflates "
                f"{info.file_size / max(info.compress_size, 1):.0f}x, limit "
                f"{limits.max_archive_ratio:.0f}x (zip bomb?)",
            )
        total += info.file_size
        if total > limits.max_archive_uncompressed_bytes:
            raise ArchiveRejected(
                "too_large_uncompressed",
                f"entries add up to more than {limits.max_archive_uncompressed_bytes} bytes",
            )
    _check_no_overlap(archive, infos, file_size)


def _check_no_overlap(
    archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], file_size: int
) -> None:
    """Each entry's local header + data must be its own bytes (no overlapping-entry bombs)."""
    handle = archive.fp
    assert handle is not None
    spans: list[tuple[int, int, str]] = []
    for info in infos:
        if not 0 <= info.header_offset < file_size:  # a bent central directory (tests/fuzz)
            raise ArchiveRejected(
                "truncated_archive", f"entry {info.filename!r} starts outside the file"
            )
        handle.seek(info.header_offset)
        header = handle.read(LOCAL_HEADER.size)
        if len(header) != LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise ArchiveRejected(
                "truncated_archive", f"entry {info.filename!r} has no local header"
            )
        fields = LOCAL_HEADER.unpack(header)
        end = info.header_offset + LOCAL_HEADER.size + fields[9] + fields[10] + info.compress_size
        if end > file_size:
            raise ArchiveRejected("truncated_archive", f"entry {info.filename!r} runs past the end")
        spans.append((info.header_offset, end, info.filename))
    spans.sort()
    for (_, end, name), (start, _, other) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise ArchiveRejected("overlapping_entries", f"entries {name!r} and {other!r} overlap")


def read_capped(archive: zipfile.ZipFile, name: str, cap: int) -> bytes:
    """One entry's bytes, never more than ``cap`` whatever its header claims."""
    try:
        with archive.open(name) as entry:
            data = entry.read(cap + 1)
    except KeyError:
        raise ArchiveRejected("missing_entry", f"the archive has no {name!r}") from None
    # NotImplementedError: a compression method or version zipfile cannot read; ValueError:
    # e.g. a name flagged UTF-8 that is not (found by tests/fuzz)
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, ValueError) as error:
        raise ArchiveRejected("corrupt_entry", f"entry {name!r} cannot be read: {error}") from None
    if len(data) > cap:
        raise ArchiveRejected("entry_too_large", f"entry {name!r} is over {cap} bytes")
    return data


@contextlib.contextmanager
def _opened(
    ingestor: Ingestor, session: AgentSession, upload: IO[bytes], size: int
) -> Iterator[tuple[zipfile.ZipFile, wire.ArchiveManifest]]:
    """The archive, structurally safe, with its manifest verified against the agent's key."""
    try:
        archive = zipfile.ZipFile(upload)
    # NotImplementedError: a central directory claiming a zip version it cannot read (tests/fuzz)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as error:
        raise ArchiveRejected("bad_archive", f"not a readable ZIP (truncated?): {error}") from None
    with archive:
        check_structure(archive, size, ingestor.settings)
        manifest_json = read_capped(archive, MANIFEST_NAME, MANIFEST_MAX_BYTES)
        signature = read_capped(archive, SIGNATURE_NAME, 4096)
        try:
            vouched = session.fernet.decrypt(signature)
        except InvalidToken:
            raise ArchiveRejected(
                "bad_signature", "manifest.sig does not verify with this agent's keys", status=403
            ) from None
        if vouched != hashlib.sha256(manifest_json).hexdigest().encode():
            raise ArchiveRejected(
                "bad_signature", "manifest.sig is for another manifest", status=403
            )
        try:
            manifest = wire.manifest_decoder.decode(manifest_json)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise ArchiveRejected("bad_manifest", f"manifest.json: {error}") from None
        if manifest.agent_id != session.record.agent_id:
            raise ArchiveRejected("bad_manifest", "the manifest names another agent", status=403)
        yield archive, manifest


def _batches(
    ingestor: Ingestor,
    session: AgentSession,
    archive: zipfile.ZipFile,
    manifest: wire.ArchiveManifest,
) -> Iterator[DecodedBatch]:
    """Each listed batch, checksummed and fully verified, one at a time."""
    for item in manifest.batches:
        frame = read_capped(archive, item.name, ingestor.settings.max_frame_bytes)
        if hashlib.sha256(frame).hexdigest() != item.sha256:
            raise ArchiveRejected(
                "checksum_mismatch", f"{item.name}: SHA-256 does not match the manifest"
            )
        try:
            batch = ingestor.decode_frame(session, frame)
        except FrameRejected as error:
            raise ArchiveRejected(error.code, f"{item.name}: {error.message}") from None
        if (batch.boot_id, batch.seq) != (item.boot_id, item.seq):
            raise ArchiveRejected(
                "bad_manifest", f"{item.name}: manifest lists another batch number"
            )
        yield batch


def open_archive(
    ingestor: Ingestor, session: AgentSession, upload: IO[bytes], size: int
) -> list[DecodedBatch]:
    """Verify the whole archive and decode every batch; store nothing. Raise ArchiveRejected."""
    with _opened(ingestor, session, upload, size) as (archive, manifest):
        return list(_batches(ingestor, session, archive, manifest))


def import_archive(
    ingestor: Ingestor, session: AgentSession, upload: IO[bytes], size: int
) -> wire.ArchiveResult:
    """Verify, then store each batch exactly once (blocking; run in a worker thread).

    Two passes over the entries: the first proves every batch good without keeping any (an
    archive can hold an hour of events), the second decodes again and stores one at a time."""
    with _opened(ingestor, session, upload, size) as (archive, manifest):
        for _ in _batches(ingestor, session, archive, manifest):
            pass
        return _store_all(ingestor, session, _batches(ingestor, session, archive, manifest))


def _store_all(
    ingestor: Ingestor, session: AgentSession, batches: Iterator[DecodedBatch]
) -> wire.ArchiveResult:
    count = stored = duplicates = events = 0
    for batch in batches:
        count += 1
        try:
            ack = ingestor.store(session.record.agent_id, batch)
        except FrameRejected as error:
            raise ArchiveRejected(error.code, error.message, status=503) from None
        duplicates += int(ack.duplicate)
        stored += int(not ack.duplicate)
        events += ack.stored
    return wire.ArchiveResult(
        batches=count,
        stored_batches=stored,
        duplicate_batches=duplicates,
        events_stored=events,
    )


def _new_upload_file(folder: Path) -> IO[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - the caller closes it


async def _receive_body(request: Request, limit: int, folder: Path) -> tuple[IO[bytes], int]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ArchiveRejected(
            "body_too_large",
            f"archive of {declared} bytes is over the limit of {limit}",
            status=413,
        )
    upload = await anyio.to_thread.run_sync(_new_upload_file, folder)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            upload.close()
            raise ArchiveRejected(
                "body_too_large", f"archive is over the limit of {limit} bytes", status=413
            )
        upload.write(chunk)
    upload.seek(0)
    return upload, size


async def _session_of(ingestor: Ingestor, agent_id: str) -> AgentSession:
    """The uploading agent's keys; the archive's signature is what authenticates it."""
    record = await anyio.to_thread.run_sync(ingestor.registry.get, agent_id)
    if record is None:
        raise ArchiveRejected("auth_failed", f"unknown agent {agent_id!r}", status=401)
    if not record.enabled:
        raise ArchiveRejected("agent_disabled", f"agent {agent_id!r} is disabled", status=403)
    fernet = await anyio.to_thread.run_sync(ingestor.registry.fernet, agent_id)
    return AgentSession(record, fernet, "")


async def archive_upload(request: Request) -> Response:
    """Import one archive; 200 with counts, or a JSON error naming the reason."""
    state = server_state(request)
    ingestor = opened(state.ingestor, "the ingestor")
    agent_id = request.headers.get(AGENT_HEADER, "")
    peer = request.client.host if request.client else "?"
    try:
        session = await _session_of(ingestor, agent_id)
        folder = Path(state.settings.store.data_dir) / "ingest" / "uploads"
        upload, size = await _receive_body(request, ingestor.settings.max_archive_bytes, folder)
        with upload:
            result = await anyio.to_thread.run_sync(import_archive, ingestor, session, upload, size)
    except ArchiveRejected as error:
        log.warning(
            "ingest: archive from agent %r (%s) refused: %s: %s",
            agent_id,
            peer,
            error.code,
            error.message,
        )
        return JSONResponse(
            {"error": error.code, "detail": error.message}, status_code=error.status
        )
    log.info(
        "ingest: archive from agent %r: %d batches, %d stored, %d duplicates",
        agent_id,
        result.batches,
        result.stored_batches,
        result.duplicate_batches,
    )
    return Response(msgspec.json.encode(result), media_type="application/json")
