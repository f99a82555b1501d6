"""Notifications of alerts, delivered at least once through a durable outbox.

``notify(alert)`` (an opened alert) and ``notify_escalation(...)`` (an open alert whose severity
rose to or above ``notify_min_severity``) write the notification to the outbox
(storage/outbox.py, one row per channel) and return once it is on disk; they never wait for
the network. The same alert notified twice is one row: the worker may call ``notify`` again for
every alert it finds in the log at start-up, which closes the crash window between appending
an alert and notifying it.

Each channel (app/analysis/channels.py) has its own task: it claims its most overdue row, sends
it, and records the outcome. A failed attempt is retried after ``backoff_s × 2^(n-1)`` (n
attempts so far), capped at ``backoff_max_s`` and drawn down by up to ``jitter`` of itself so
that receivers coming back are not hit in lock-step; after ``retries`` retries the row is marked
failed and stays visible (``GET /api/v1/notifications``, the Alerts page banner) until it is
cleaned up with the delivered ones after ``keep_s``. A failing channel never delays the others
or the worker.

When the outbox cannot be written (a full disk), ``notify`` logs one coded line and keeps the
notification in memory (bounded); the housekeeping task saves it once the disk has room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from netmon.app.analysis.channels import Channel, ChannelError, Notification
from netmon.storage.contract.events import SEVERITY_RANK, AlertOpened
from netmon.storage.outbox import Outbox, OutboxError, OutboxRow

log = logging.getLogger(__name__)

LEASE_MARGIN_S = 30.0  # a claimed row is due again this long after its send should have ended
IDLE_POLL_S = 5.0  # an idle channel still looks this often (rows added by another process)
HOUSEKEEPING_S = 2.0  # how often unsaved notifications are retried
CLEAN_UP_EVERY_S = 3600.0
CLEAN_UP_ROWS = 1000  # per pass: a big backlog is removed over several passes, never at once
MAX_UNSAVED = 1000  # notifications held in memory while the outbox cannot be written
DRAIN_POLL_S = 1.0  # drain also looks this often (rows settled by another process)
DECODE = msgspec.json.Decoder(Notification)


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How often and how long a channel retries one notification."""

    retries: int = 12  # attempts after the first, then the row is marked failed
    backoff_s: float = 1.0
    backoff_max_s: float = 600.0
    jitter: float = 0.5  # a delay is drawn from [1 - jitter, 1] x the nominal one
    keep_s: float = 7 * 86400.0  # delivered and failed rows are kept this long

    @classmethod
    def of(cls, analysis: Any) -> RetryPolicy:
        """The policy of the ``[analysis]`` settings."""
        return cls(
            retries=analysis.notify_retries,
            backoff_s=analysis.notify_backoff_s,
            backoff_max_s=analysis.notify_backoff_max_s,
            keep_s=analysis.notify_keep_days * 86400.0,
        )

    def delay(self, attempts: int, draw: float) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones; ``draw`` in [0, 1)."""
        nominal = min(self.backoff_max_s, self.backoff_s * 2.0 ** min(attempts - 1, 60))
        return nominal * (1.0 - self.jitter * draw)


DEFAULT_POLICY = RetryPolicy()


class ChannelStats(msgspec.Struct):
    """Per-channel counters of this process (for logs, metrics and tests)."""

    delivered: int = 0
    failed: int = 0  # notifications given up after the last retry
    attempts: int = 0


class Notifier:
    """Writes notifications to the outbox; one task per channel delivers them."""

    def __init__(
        self,
        channels: Sequence[Channel],
        outbox: Outbox,
        *,
        policy: RetryPolicy = DEFAULT_POLICY,
        min_severity: str = "high",
        clock: Callable[[], float] = time.time,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.channels = list(channels)
        self.outbox, self.policy, self.clock, self.draw = outbox, policy, clock, draw
        self.min_rank = SEVERITY_RANK[min_severity]
        self.stats = {c.name: ChannelStats() for c in self.channels}
        self._names = [c.name for c in self.channels]
        self._wake: dict[str, asyncio.Event] = {}  # made in start(), inside the running loop
        self._settled = asyncio.Event()  # an attempt ended or unsaved rows were saved (drain)
        self._in_flight: set[str] = set()
        self._unsaved: dict[str, bytes] = {}  # note id -> payload, while the outbox is unwritable
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start one task per channel and the housekeeping (inside the running event loop)."""
        if not self.channels:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = {c.name: asyncio.Event() for c in self.channels}
        for channel in self.channels:
            self._tasks.append(
                asyncio.create_task(self._run(channel), name=f"notify-{channel.name}")
            )
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="notify-housekeeping"))

    # --- adding notifications ---------------------------------------------------------------

    def notify(self, alert: AlertOpened) -> None:
        """Store the notification of an opened alert (once, whatever the number of calls)."""
        if SEVERITY_RANK.get(alert.severity, 0) >= self.min_rank:
            self._add(Notification.opened(alert))

    def notify_escalation(
        self,
        *,
        alert_id: str,
        rule: str,
        entity: str,
        title: str,
        severity: str,
        ts: float,
        branch: str,
        reason: str = "",
        evidence_ids: tuple[str, ...] = (),
    ) -> None:
        """Store the notification of an open alert whose severity rose to ``severity``.

        The worker calls it when an update raises an alert's severity; below the notify
        threshold nothing is sent. Its id is ``<alert_id>:escalated:<severity>``: one per level.
        """
        if SEVERITY_RANK.get(severity, 0) < self.min_rank:
            return
        note = Notification(
            id=f"{alert_id}:escalated:{severity}",
            kind="escalated",
            alert_id=alert_id,
            rule=rule,
            entity=entity,
            severity=severity,
            title=title,
            branch=branch,
            ts=ts,
            evidence_ids=evidence_ids,
            reason=reason,
        )
        self._add(note)

    def _add(self, note: Notification) -> None:
        if not self.channels:
            return
        payload = msgspec.json.encode(note)
        try:
            self.outbox.add(note.id, self._names, payload, self.clock())
        except OutboxError as error:
            self._keep_unsaved(note.id, payload, error)
            return
        self._wake_channels()

    def _keep_unsaved(self, note_id: str, payload: bytes, error: OutboxError) -> None:
        if len(self._unsaved) >= MAX_UNSAVED and note_id not in self._unsaved:
            dropped = next(iter(self._unsaved))
            del self._unsaved[dropped]
            log.error("notify [%s]: notification %s dropped: memory full", error.code, dropped)
        self._unsaved[note_id] = payload
        log.error(
            "notify [%s]: notification %s not saved, kept in memory (%d waiting): %s",
            error.code,
            note_id,
            len(self._unsaved),
            error,
        )

    def _wake_channels(self) -> None:
        if self._loop is None or self._loop.is_closed():
            return  # not started: the channel tasks look at the outbox when they start
        for event in self._wake.values():
            self._loop.call_soon_threadsafe(event.set)  # notify may run in another thread

    # --- delivering ---------------------------------------------------------------------------

    async def _run(self, channel: Channel) -> None:
        wake = self._wake[channel.name]
        lease_s = channel.timeout + LEASE_MARGIN_S
        trouble = ""  # the outbox error last logged, so a lasting one is logged once
        while True:
            try:
                row = await asyncio.to_thread(
                    self.outbox.claim, channel.name, self.clock(), lease_s
                )
                if row is not None:
                    await self._attempt(channel, row)
                    continue
                due = await asyncio.to_thread(self.outbox.next_due, channel.name)
                trouble = ""
            except OutboxError as error:
                if str(error) != trouble:
                    log.error("notify [%s]: %s channel waits: %s", error.code, channel.name, error)
                trouble, due = str(error), None
            wait = IDLE_POLL_S if due is None else min(IDLE_POLL_S, due - self.clock())
            if wait > 0:
                await _wait(wake, wait)
            wake.clear()

    async def _attempt(self, channel: Channel, row: OutboxRow) -> None:
        """Send one claimed row and record the outcome (an OutboxError leaves the row leased:
        it is due again when the lease ends)."""
        self._in_flight.add(channel.name)
        try:
            await self._send_and_record(channel, row)
        finally:
            self._in_flight.discard(channel.name)
            self._settled.set()

    async def _send_and_record(self, channel: Channel, row: OutboxRow) -> None:
        stats = self.stats[channel.name]
        stats.attempts += 1
        error = await self._send(channel, row)
        now = self.clock()
        if error is None:
            stats.delivered += 1
            await asyncio.to_thread(self.outbox.delivered, row, now)
            return
        if row.attempts > self.policy.retries:
            stats.failed += 1
            log.error(
                "notify %s: %s given up after %d attempts: %s",
                channel.name,
                row.id,
                row.attempts,
                error,
            )
            await asyncio.to_thread(self.outbox.attempt_failed, row, error, None)
            return
        delay = self.policy.delay(row.attempts, self.draw())
        log.warning(
            "notify %s: %s failed (%s), retry in %.1f s", channel.name, row.id, error, delay
        )
        await asyncio.to_thread(self.outbox.attempt_failed, row, error, now + delay)

    async def _send(self, channel: Channel, row: OutboxRow) -> str | None:
        """None when the receiver took it, else why not (one line)."""
        try:
            note = DECODE.decode(row.payload)
        except msgspec.DecodeError as error:
            return f"unreadable notification in the outbox: {error}"
        try:
            await channel.send(note)
        except ChannelError as error:
            return str(error)
        except Exception as error:  # any failure of any channel: recorded and retried
            return f"{type(error).__name__}: {error}"
        return None

    # --- housekeeping ------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Give up on rows nobody sends; save unsaved notifications; clean up old rows."""
        with contextlib.suppress(OutboxError):  # logged by the channel tasks
            await asyncio.to_thread(self._give_up_unconfigured)
        cleaned_at = 0.0
        while True:
            if self._unsaved:
                await asyncio.to_thread(self._save_unsaved)
                self._settled.set()
            now = self.clock()
            if now - cleaned_at >= CLEAN_UP_EVERY_S:
                with contextlib.suppress(OutboxError):
                    removed = await asyncio.to_thread(
                        self.outbox.clean_up, now - self.policy.keep_s, CLEAN_UP_ROWS
                    )
                    cleaned_at = now
                    if removed:
                        log.info("notify: %d old notifications removed from the outbox", removed)
            await asyncio.sleep(HOUSEKEEPING_S)

    def _give_up_unconfigured(self) -> None:
        abandoned = self.outbox.give_up_channels_except(self._names, self.clock())
        if abandoned:
            log.warning(
                "notify: %d notifications of unconfigured channels marked failed", abandoned
            )

    def _save_unsaved(self) -> None:
        saved = 0
        for note_id, payload in list(self._unsaved.items()):
            try:
                self.outbox.add(note_id, self._names, payload, self.clock())
            except OutboxError:
                break  # still unwritable: try again at the next round, no new log line
            del self._unsaved[note_id]
            saved += 1
        if saved:
            log.warning("notify: %d notifications saved to the outbox after a failure", saved)
            self._wake_channels()

    # --- stopping ----------------------------------------------------------------------------

    async def drain(self, limit_s: float) -> None:
        """Wait until every notification was delivered or given up (TimeoutError after
        ``limit_s``; what is left stays in the outbox for the next start)."""
        async with asyncio.timeout(limit_s):
            while await self._busy():
                self._settled.clear()
                await _wait(self._settled, DRAIN_POLL_S)

    async def _busy(self) -> bool:
        if not self.channels:
            return False
        if self._in_flight or self._unsaved:
            return True
        try:
            return await asyncio.to_thread(self.outbox.pending, self._names) > 0
        except OutboxError:
            return True

    async def close(self) -> None:
        """Stop the tasks and close the outbox (notifications left in it wait for the next
        start; unsaved ones are lost, and said so)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._unsaved:
            log.error(
                "notify [outbox_unavailable]: %d notifications never saved: %s",
                len(self._unsaved),
                ", ".join(self._unsaved),
            )
        self.outbox.close()


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until ``event`` is set, or ``seconds`` have passed.

    A timer sets the event, rather than ``asyncio.wait_for``: under Python 3.11, a
    cancellation that lands just as wait_for's own timeout fires can be lost, and ``close``
    would then wait for its channel task forever.
    """
    timer = asyncio.get_running_loop().call_later(seconds, event.set)
    try:
        await event.wait()
    finally:
        timer.cancel()
