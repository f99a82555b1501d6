"""An authenticated agent: the Hello check that turns a connection into an ``AgentSession``.

The server sends a fresh nonce; the agent answers with a Hello whose proof is a Fernet token
under its own key, naming that nonce, itself and its boot. A proof that verifies, is younger
than the handshake TTL, names this connection's nonce and belongs to an enabled agent makes a
session; anything else is an ``auth_failed`` (or ``agent_disabled``) refusal.
"""

from __future__ import annotations

import msgspec
from cryptography.fernet import InvalidToken, MultiFernet

from netmon.app.ingest.refusals import FrameRejected
from netmon.app.settings import IngestSettings
from netmon.storage.agents import AgentRecord, AgentRegistry
from netmon.storage.contract import wire


class AgentSession(msgspec.Struct, frozen=True):
    """An authenticated agent: its record and keys."""

    record: AgentRecord
    fernet: MultiFernet
    boot_id: str


def authenticate(
    registry: AgentRegistry, settings: IngestSettings, hello: wire.Hello, nonce: bytes
) -> AgentSession:
    """Check a Hello against this connection's nonce; raise FrameRejected (code = reason)."""
    record = registry.get(hello.agent_id)
    if record is None:
        raise FrameRejected("auth_failed", f"unknown agent {hello.agent_id!r}")
    fernet = registry.fernet(record.agent_id)
    proof = _read_proof(fernet, hello, settings.handshake_ttl_s)
    if proof.nonce != nonce:
        raise FrameRejected(
            "auth_failed",
            "handshake proof was made for another connection (replayed handshake)",
        )
    if (proof.agent_id, proof.boot_id) != (hello.agent_id, hello.boot_id):
        raise FrameRejected("auth_failed", "handshake proof names another agent or boot")
    if not record.enabled:
        raise FrameRejected("agent_disabled", f"agent {record.agent_id!r} is disabled")
    return AgentSession(record, fernet, hello.boot_id)


def _read_proof(fernet: MultiFernet, hello: wire.Hello, ttl_s: float) -> wire.HelloProof:
    """The Hello's proof, verified with the agent's keys and no older than ``ttl_s``."""
    try:
        return wire.hello_proof_decoder.decode(fernet.decrypt(hello.proof, ttl=int(ttl_s)))
    except InvalidToken:
        raise FrameRejected(
            "auth_failed",
            "handshake proof does not verify with this "
            "agent's keys, or is older than the handshake TTL",
        ) from None
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise FrameRejected("auth_failed", "handshake proof is malformed") from None
