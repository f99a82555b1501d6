"""Notification channels: webhook (signed JSON), syslog (RFC 5424 over UDP), email (SMTP).

A channel sends one notification and raises ``ChannelError`` when the receiver did not take it;
the notifier (app/analysis/notify.py) keeps the notification in its outbox and retries. Every
notification carries its stable id (``Notification.id``), so a receiver that sees it twice (at
least once delivery) can drop the repeat: the webhook in ``X-Netmon-Notification-Id`` and the
body, syslog in the structured data, email in a header, the Message-ID and the text.

Webhook requests carry ``X-Netmon-Timestamp`` and ``X-Netmon-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``timestamp + "." + body`` with the configured secret (the receiver recomputes
it and rejects stale timestamps to stop replays). A receiver gets ``timeout_s`` for the whole
exchange, and at most ``ERROR_BODY_BYTES`` of an error answer are read.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import smtplib
import socket
import time
from email.message import EmailMessage
from typing import Any, Literal, Protocol

import httpx
import msgspec

from netmon.storage.contract.events import AlertOpened

SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "none": 6}
SYSLOG_FACILITY_LOCAL0 = 16
ERROR_BODY_BYTES = 4096  # of an error answer: a hostile receiver's huge body is never read
ERROR_EXCERPT_CHARS = 200


class NotifyConfigError(Exception):
    """A channel is configured without what it needs (e.g. a webhook without its secret)."""


class ChannelError(Exception):
    """The receiver did not take the notification; the message says what happened."""


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """What every channel sends: an alert opened, or escalated into the notify threshold."""

    id: str  # stable, for receivers to drop repeats: "<alert_id>:opened", ":escalated:<sev>"
    kind: Literal["opened", "escalated"]
    alert_id: str
    rule: str
    entity: str
    severity: str
    title: str
    branch: str
    ts: float
    evidence_ids: tuple[str, ...] = ()
    reason: str = ""  # escalations: why the severity rose

    @classmethod
    def opened(cls, alert: AlertOpened) -> Notification:
        """The notification of an opened alert."""
        return cls(
            id=f"{alert.alert_id}:opened",
            kind="opened",
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
    timeout: float  # seconds one attempt may take, at most

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
            "accept-encoding": "identity",  # an error body is read raw: no decompression bomb
            "x-netmon-notification-id": note.id,
            "x-netmon-timestamp": stamp,
            "x-netmon-signature": sign(self.secret, stamp, body),
        }
        try:
            # One deadline for the whole exchange: httpx's timeouts are per read, which a
            # receiver trickling bytes would reset forever.
            async with (
                asyncio.timeout(self.timeout),
                httpx.AsyncClient(timeout=self.timeout) as client,
                client.stream("POST", self.url, content=body, headers=headers) as response,
            ):
                if response.status_code >= 300:
                    excerpt = await _excerpt(response)
                    raise ChannelError(f"HTTP {response.status_code}: {excerpt}")
        except TimeoutError:
            raise ChannelError(f"no answer within {self.timeout:g} s") from None
        except httpx.HTTPError as error:
            raise ChannelError(f"{type(error).__name__}: {error}") from None


async def _excerpt(response: httpx.Response) -> str:
    """The start of an error answer, read up to ERROR_BODY_BYTES and printable."""
    head = b""
    async for chunk in response.aiter_raw():
        head += chunk
        if len(head) >= ERROR_BODY_BYTES:
            break  # leaving the stream closes the connection: the rest is never read
    text = " ".join(head[:ERROR_BODY_BYTES].decode("utf-8", "replace").split())
    return text[:ERROR_EXCERPT_CHARS] or "(empty body)"


def syslog_message(note: Notification, hostname: str, now: float) -> bytes:
    """One RFC 5424 message (facility local0) with the alert as structured data."""
    pri = SYSLOG_FACILITY_LOCAL0 * 8 + SYSLOG_SEVERITY.get(note.severity, 6)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"

    def param(value: str) -> str:  # RFC 5424 6.3.3: escape '"', '\' and ']'
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")

    sd = (
        f'[netmon@32473 alert_id="{param(note.alert_id)}" rule="{param(note.rule)}" '
        f'entity="{param(note.entity)}" severity="{note.severity}" branch="{param(note.branch)}" '
        f'notification_id="{param(note.id)}"]'
    )
    msgid = "ALERT" if note.kind == "opened" else "ESCALATED"
    header = f"<{pri}>1 {stamp} {hostname or '-'} netmon - {msgid} {sd} "
    return header.encode() + b"\xef\xbb\xbf" + note.title.encode()  # BOM: the MSG is UTF-8


class SyslogChannel:
    """RFC 5424 over UDP (one datagram per alert)."""

    name = "syslog"
    timeout = 5.0  # a datagram leaves at once; this only bounds resolving the host

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.hostname = socket.gethostname()

    async def send(self, note: Notification) -> None:
        data = syslog_message(note, self.hostname, time.time())
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                transport, _ = await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, remote_addr=(self.host, self.port)
                )
        except (OSError, TimeoutError) as error:
            raise ChannelError(f"syslog {self.host}:{self.port}: {error or 'timed out'}") from None
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

    def message(self, note: Notification) -> EmailMessage:
        """The email of one notification; its Message-ID is derived from the stable id."""
        message = EmailMessage()
        message["From"] = self.s.email_from
        message["To"] = self.s.email_to
        escalated = ", escalated" if note.kind == "escalated" else ""
        message["Subject"] = f"[netmon {note.severity}{escalated}] {note.title}"[:200]
        message["Message-ID"] = f"<{note.id.replace(':', '.')}@netmon.invalid>"
        message["X-Netmon-Notification-Id"] = note.id
        reason = f"escalated: {note.reason}\n" if note.reason else ""
        message.set_content(
            f"{note.title}\n\nrule: {note.rule}\nentity: {note.entity}\nbranch: {note.branch}\n"
            f"alert: {note.alert_id}\n{reason}evidence: {', '.join(note.evidence_ids)}\n"
            f"notification: {note.id}\n"
        )
        return message

    def _send_blocking(self, note: Notification) -> None:
        with smtplib.SMTP(self.s.smtp_host, self.s.smtp_port, timeout=self.timeout) as smtp:
            if self.s.smtp_starttls:
                smtp.starttls()
            if self.s.smtp_user:
                smtp.login(self.s.smtp_user, self.s.smtp_password)
            recipients = [r.strip() for r in self.s.email_to.split(",") if r.strip()]
            smtp.send_message(self.message(note), to_addrs=recipients)

    async def send(self, note: Notification) -> None:
        try:
            # smtplib's timeout is per socket operation: the deadline bounds the whole exchange
            # (the thread finishes on its own; its socket times out).
            await asyncio.wait_for(asyncio.to_thread(self._send_blocking, note), self.timeout * 2)
        except TimeoutError:
            raise ChannelError(f"SMTP: no answer within {self.timeout * 2:g} s") from None
        except (OSError, smtplib.SMTPException) as error:
            raise ChannelError(f"SMTP {type(error).__name__}: {error}") from None


def channels_from_settings(analysis: Any) -> list[Channel]:
    """The channels the settings turn on; NotifyConfigError when one lacks what it needs."""
    timeout = analysis.notify_timeout_s
    channels: list[Channel] = []
    if analysis.webhook_url:
        channels.append(WebhookChannel(analysis.webhook_url, analysis.webhook_secret, timeout))
    if analysis.syslog_host:
        channels.append(SyslogChannel(analysis.syslog_host, analysis.syslog_port))
    if analysis.smtp_host:
        channels.append(EmailChannel(analysis, timeout))
    return channels
