"""Notifications of opened alerts: webhook (signed JSON), syslog (RFC 5424 over UDP), email.

Every channel has its own queue and task: a channel that is down retries with exponential
backoff (``backoff * 2**attempt``) and then gives up with a log line, while the other channels
and the worker carry on. ``notify`` only enqueues; it never waits for the network.

Webhook requests carry ``X-Netmon-Timestamp`` and ``X-Netmon-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``timestamp + "." + body`` with the configured secret (the receiver recomputes
it and rejects stale timestamps to stop replays).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import smtplib
import socket
import time
from email.message import EmailMessage
from typing import Any, Protocol

import httpx
import msgspec

from netmon.storage.contract.events import SEVERITY_RANK, AlertOpened

log = logging.getLogger(__name__)
QUEUE_LIMIT = 1000
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "none": 6}
SYSLOG_FACILITY_LOCAL0 = 16


class NotifyConfigError(Exception):
    """A channel is configured without what it needs (e.g. a webhook without its secret)."""


class Notification(msgspec.Struct, frozen=True):
    """What every channel sends about one opened alert."""

    alert_id: str
    rule: str
    entity: str
    severity: str
    title: str
    branch: str
    ts: float
    evidence_ids: tuple[str, ...] = ()

    @classmethod
    def of(cls, alert: AlertOpened) -> Notification:
        return cls(
            alert_id=alert.alert_id,
            rule=alert.rule,
            entity=alert.entity,
            severity=alert.severity,
            title=alert.title,
            branch=alert.branch,
            ts=alert.ts,
            evidence_ids=alert.evidence_ids,
        )


class Channel(Protocol):
    """One way out; ``send`` raises on failure (the notifier retries)."""

    name: str

    async def send(self, note: Notification) -> None: ...


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature header value for a body sent at timestamp."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookChannel:
    """POST the notification as JSON, signed."""

    name = "webhook"

    def __init__(self, url: str, secret: str, timeout: float = 10.0) -> None:
        if not secret:
            raise NotifyConfigError(
                "analysis.webhook_url is set but analysis.webhook_secret is empty"
            )
        self.url, self.secret, self.timeout = url, secret, timeout

    async def send(self, note: Notification) -> None:
        body = msgspec.json.encode(note)
        stamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "x-netmon-timestamp": stamp,
            "x-netmon-signature": sign(self.secret, stamp, body),
        }
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            response = await client.post(self.url, content=body, headers=headers)
        if response.status_code >= 300:
            raise OSError(f"webhook answered HTTP {response.status_code}")


def syslog_message(note: Notification, hostname: str, now: float) -> bytes:
    """One RFC 5424 message (facility local0) with the alert as structured data."""
    pri = SYSLOG_FACILITY_LOCAL0 * 8 + SYSLOG_SEVERITY.get(note.severity, 6)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"

    def param(value: str) -> str:  # RFC 5424 6.3.3: escape '"', '\' and ']'
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")

    sd = (
        f'[netmon@32473 alert_id="{param(note.alert_id)}" rule="{param(note.rule)}" '
        f'entity="{param(note.entity)}" severity="{note.severity}" branch="{param(note.branch)}"]'
    )
    header = f"<{pri}>1 {stamp} {hostname or '-'} netmon - ALERT {sd} "
    return header.encode() + b"\xef\xbb\xbf" + note.title.encode()  # BOM: the MSG is UTF-8


class SyslogChannel:
    """RFC 5424 over UDP (one datagram per alert)."""

    name = "syslog"

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.hostname = socket.gethostname()

    async def send(self, note: Notification) -> None:
        data = syslog_message(note, self.hostname, time.time())
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=(self.host, self.port)
        )
        try:
            transport.sendto(data)
        finally:
            transport.close()


class EmailChannel:
    """A plain-text email through SMTP (optionally STARTTLS and login), sent in a thread."""

    name = "email"

    def __init__(self, settings: Any, timeout: float = 15.0) -> None:
        self.s, self.timeout = settings, timeout
        if not settings.email_from or not settings.email_to:
            raise NotifyConfigError("analysis.smtp_host is set but email_from or email_to is empty")
        if settings.smtp_user and not settings.smtp_password:
            raise NotifyConfigError("analysis.smtp_user is set but analysis.smtp_password is empty")

    def _send_blocking(self, note: Notification) -> None:
        message = EmailMessage()
        message["From"] = self.s.email_from
        message["To"] = self.s.email_to
        message["Subject"] = f"[netmon {note.severity}] {note.title}"[:200]
        message.set_content(
            f"{note.title}\n\nrule: {note.rule}\nentity: {note.entity}\nbranch: {note.branch}\n"
            f"alert: {note.alert_id}\nevidence: {', '.join(note.evidence_ids)}\n"
        )
        with smtplib.SMTP(self.s.smtp_host, self.s.smtp_port, timeout=self.timeout) as smtp:
            if self.s.smtp_starttls:
                smtp.starttls()
            if self.s.smtp_user:
                smtp.login(self.s.smtp_user, self.s.smtp_password)
            recipients = [r.strip() for r in self.s.email_to.split(",") if r.strip()]
            smtp.send_message(message, to_addrs=recipients)

    async def send(self, note: Notification) -> None:
        await asyncio.to_thread(self._send_blocking, note)


class ChannelStats(msgspec.Struct):
    """Per-channel counters (for logs, metrics and tests)."""

    delivered: int = 0
    failed: int = 0  # notifications given up after the last retry
    attempts: int = 0


class Notifier:
    """Fans opened alerts out to every channel; each channel retries on its own."""

    def __init__(
        self,
        channels: list[Channel],
        *,
        retries: int = 4,
        backoff: float = 1.0,
        min_severity: str = "high",
    ) -> None:
        self.channels = channels
        self.retries, self.backoff = retries, backoff
        self.min_rank = SEVERITY_RANK[min_severity]
        self.stats = {c.name: ChannelStats() for c in channels}
        self._queues: dict[str, asyncio.Queue[Notification]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start one task per channel (inside the running event loop)."""
        for channel in self.channels:
            queue: asyncio.Queue[Notification] = asyncio.Queue(QUEUE_LIMIT)
            self._queues[channel.name] = queue
            self._tasks.append(
                asyncio.create_task(self._run(channel, queue), name=f"notify-{channel.name}")
            )

    def notify(self, alert: AlertOpened) -> None:
        """Queue an alert for every channel; never blocks (a full queue drops its oldest)."""
        if SEVERITY_RANK.get(alert.severity, 0) < self.min_rank:
            return
        note = Notification.of(alert)
        for name, queue in self._queues.items():
            if queue.full():
                dropped = queue.get_nowait()
                self.stats[name].failed += 1
                log.error("notify %s: queue full, dropped alert %s", name, dropped.alert_id)
            queue.put_nowait(note)

    async def _run(self, channel: Channel, queue: asyncio.Queue[Notification]) -> None:
        stats = self.stats[channel.name]
        while True:
            note = await queue.get()
            for attempt in range(self.retries + 1):
                stats.attempts += 1
                try:
                    await channel.send(note)
                except Exception as error:  # any failure of any channel: retry, never propagate
                    if attempt == self.retries:
                        stats.failed += 1
                        log.error(
                            "notify %s: alert %s given up: %s", channel.name, note.alert_id, error
                        )
                        break
                    delay = self.backoff * 2**attempt
                    log.warning(
                        "notify %s failed (%s), retry in %.1f s", channel.name, error, delay
                    )
                    await asyncio.sleep(delay)
                else:
                    stats.delivered += 1
                    break
            queue.task_done()

    async def drain(self, limit_s: float) -> None:
        """Wait until every queued notification was delivered or given up (bounded)."""
        await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues.values())), limit_s)

    async def close(self) -> None:
        """Stop the channel tasks."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


def channels_from_settings(analysis: Any) -> list[Channel]:
    """The channels the settings turn on; NotifyConfigError when one lacks what it needs."""
    channels: list[Channel] = []
    if analysis.webhook_url:
        channels.append(WebhookChannel(analysis.webhook_url, analysis.webhook_secret))
    if analysis.syslog_host:
        channels.append(SyslogChannel(analysis.syslog_host, analysis.syslog_port))
    if analysis.smtp_host:
        channels.append(EmailChannel(analysis))
    return channels
