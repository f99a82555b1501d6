"""The coded refusals of agent input: each becomes a wire ``Error`` to the agent and a log line."""

from __future__ import annotations

from netmon.storage.contract import wire


class FrameRejected(Exception):
    """An authentic-or-not-yet-known batch that cannot be stored; becomes a wire ``Error``."""

    def __init__(
        self, code: str, message: str, *, at: tuple[str, int] = ("", -1), retry: bool = False
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.retry = code, message, retry
        self.boot_id, self.seq = at  # the batch refused, when it is known

    def to_wire(self) -> wire.Error:
        """The message sent to the agent."""
        return wire.Error(
            code=self.code,
            message=self.message,
            boot_id=self.boot_id,
            seq=self.seq,
            retry=self.retry,
        )


class ForgedFrame(FrameRejected):
    """The token does not verify with this agent's keys (forged, tampered or another key)."""


class StoreFailed(FrameRejected):
    """The event store refused the append; nothing was acknowledged."""
