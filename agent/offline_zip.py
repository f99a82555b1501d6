"""Hourly offline archives: when the server has been unreachable, the agent seals the hour's
unsent batches into one ZIP and uploads it (``POST /api/v1/ingest/archive``) once the server
answers again.

An archive holds the batches exactly as they would have gone over the WebSocket (each one a
``BatchFrame`` whose token is Fernet-encrypted), stored uncompressed (encrypted bytes do not
compress), plus ``manifest.json`` (sequence ranges, per-entry SHA-256) and ``manifest.sig``, a
Fernet token over the manifest's SHA-256 that only this agent's key can make. The server
deduplicates by (agent, boot, seq), so uploading an archive twice stores nothing twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import msgspec
from cryptography.fernet import MultiFernet

from netmon.agent.spool import MANIFEST_NAME, Spool, SpoolEntry
from netmon.storage.contract.files import write_atomically
from netmon.storage.contract.wire import (
    ArchiveBatch,
    ArchiveManifest,
    ArchiveResult,
    archive_result_decoder,
    seq_ranges,
)

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

SIGNATURE_NAME = "manifest.sig"
ARCHIVE_PATH = "/api/v1/ingest/archive"
AGENT_HEADER = "X-Netmon-Agent"


class UploadError(Exception):
    """An upload failed; ``permanent`` when the server refused the archive itself."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class _NothingToSeal(Exception):
    """Every batch of the archive being written was acknowledged meanwhile."""


def entry_name(boot_id: str, seq: int) -> str:
    """The path of a batch inside an archive."""
    return f"batches/{boot_id}-{seq:010d}.bin"


def manifest_signature(fernet: MultiFernet, manifest_json: bytes) -> bytes:
    """The token vouching for a manifest."""
    return fernet.encrypt(hashlib.sha256(manifest_json).hexdigest().encode())


def seal_archive(
    spool: Spool,
    entries: list[SpoolEntry],
    *,
    agent_id: str,
    fernet: MultiFernet,
    hour_start: float,
    hour_end: float,
    now: float,
) -> Path | None:
    """Write ``entries`` into one durable archive in the outbox, then drop them from the spool.

    Batches are copied one at a time (memory holds one batch, whatever the hour's volume); the
    manifest, which needs every checksum, is written last."""
    if not entries:
        return None
    first = entries[0]
    path = spool.outbox_dir / f"{agent_id}-{int(hour_start)}-{first.boot_id}-{first.seq}.zip"
    listed: list[ArchiveBatch] = []
    taken: list[SpoolEntry] = []

    def write(handle: BinaryIO) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            for entry in entries:
                batch = spool.read(entry)
                if batch is None:
                    continue  # acknowledged meanwhile
                name = entry_name(entry.boot_id, entry.seq)
                archive.writestr(name, batch.frame)
                digest = hashlib.sha256(batch.frame).hexdigest()
                listed.append(
                    ArchiveBatch(
                        name, entry.boot_id, entry.seq, entry.count, len(batch.frame), digest
                    )
                )
                taken.append(entry)
            if not listed:
                raise _NothingToSeal
            manifest_json = msgspec.json.encode(
                ArchiveManifest(
                    agent_id=agent_id,
                    hour_start=hour_start,
                    hour_end=hour_end,
                    created=now,
                    batches=listed,
                    ranges=seq_ranges([(item.boot_id, item.seq) for item in listed]),
                )
            )
            archive.writestr(MANIFEST_NAME, manifest_json)
            archive.writestr(SIGNATURE_NAME, manifest_signature(fernet, manifest_json))

    try:
        write_atomically(path, write)  # the temp file is removed when nothing is left to seal
    except _NothingToSeal:
        return None
    spool.take(taken)
    log.info("offline archive %s sealed: %d batches", path.name, len(taken))
    return path


async def upload_archive(
    client: httpx.AsyncClient, base_url: str, agent_id: str, path: Path
) -> ArchiveResult:
    """POST one archive; raise UploadError (``permanent`` for a 4xx refusal)."""
    import httpx

    size = (await asyncio.to_thread(path.stat)).st_size
    try:
        response = await client.post(
            base_url.rstrip("/") + ARCHIVE_PATH,
            content=_chunks(path),
            headers={
                AGENT_HEADER: agent_id,
                "Content-Type": "application/zip",
                "Content-Length": str(size),  # lets the server refuse early
            },
        )
    except httpx.HTTPError as error:
        raise UploadError(f"upload of {path.name} failed: {error!r}", permanent=False) from None
    if response.status_code == 200:
        return archive_result_decoder.decode(response.content)
    message = f"upload of {path.name}: HTTP {response.status_code} {response.text[:300]}"
    permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
    raise UploadError(message, permanent=permanent)


async def _chunks(path: Path, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """The file in chunks (an upload never holds a whole archive in memory)."""
    with path.open("rb") as handle:  # noqa: ASYNC230 - each read below runs in a thread
        while chunk := await asyncio.to_thread(handle.read, size):
            yield chunk


def http_base_url(server_url: str) -> str:
    """ws://host:port -> http://host:port (wss -> https)."""
    if server_url.startswith("wss://"):
        return "https://" + server_url[len("wss://") :]
    if server_url.startswith("ws://"):
        return "http://" + server_url[len("ws://") :]
    return server_url
