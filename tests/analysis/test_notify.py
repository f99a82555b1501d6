"""Notifications reach real receivers on loopback: HTTP (signed webhook), SMTP, UDP syslog;
each carries its stable id, and the outbox keeps what a receiver has not taken yet."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import socket
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiosmtpd.controller import Controller

from netmon.app.analysis.channels import (
    Channel,
    EmailChannel,
    NotifyConfigError,
    SyslogChannel,
    WebhookChannel,
    channels_from_settings,
)
from netmon.app.analysis.classifier import Classifier
from netmon.app.analysis.notify import Notifier, RetryPolicy
from netmon.app.analysis.summaries import Summarizer
from netmon.app.analysis.worker import AnalysisWorker
from netmon.app.settings import AnalysisSettings, SettingsError, load_settings
from netmon.storage.contract.events import AlertOpened, new_event_id
from netmon.storage.eventlog import EventLog
from netmon.storage.outbox import Outbox, outbox_path, read_status
from tests.analysis.receivers import SECRET, Webhook, critical_detection, serve_webhook
from tests.polling import wait_until_async
from tests.ports import free_port


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with serve_webhook() as receiver:
        yield receiver


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port("127.0.0.1")
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def syslog() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    yield sock
    sock.close()


def alert(severity: str = "critical") -> AlertOpened:
    return AlertOpened(
        id=new_event_id(),
        ts=1_800_000_000.0,
        branch="paris",
        alert_id="c" * 32,
        rule="detection:critical_port",
        entity="10.0.0.9",
        severity=severity,  # type: ignore[arg-type]
        title='Telnet from 10.0.0.9 "quoted"]',
        evidence_ids=("e" * 32,),
    )


def settings(webhook_url: str, syslog_port: int, smtp_port: int, **extra: Any) -> AnalysisSettings:
    return AnalysisSettings(
        webhook_url=webhook_url,
        webhook_secret=SECRET,
        syslog_host="127.0.0.1",
        syslog_port=syslog_port,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        email_from="netmon@example.test",
        email_to="soc@example.test, oncall@example.test",
        **extra,
    )


def notifier_for(
    tmp_path: Path, channels: list[Channel], retries: int = 2, backoff: float = 0.01, **kw: Any
) -> Notifier:
    """A notifier over a fresh outbox under tmp_path."""
    policy = RetryPolicy(retries=retries, backoff_s=backoff)
    return Notifier(channels, Outbox(tmp_path / "outbox.sqlite"), policy=policy, **kw)


async def _deliver(notifier: Notifier, *alerts: AlertOpened, limit_s: float = 20) -> None:
    notifier.start()
    for item in alerts:
        notifier.notify(item)
    await notifier.drain(limit_s)
    await notifier.close()


def test_every_channel_delivers_with_its_stable_id_and_the_webhook_signature_verifies(
    webhook: Webhook, smtp: tuple[Mailbox, int], syslog: socket.socket, tmp_path: Path
) -> None:
    box, smtp_port = smtp
    channels = channels_from_settings(settings(webhook.url, syslog.getsockname()[1], smtp_port))
    notifier = notifier_for(tmp_path, channels)
    asyncio.run(_deliver(notifier, alert()))
    note_id = "c" * 32 + ":opened"

    [(headers, body)] = webhook.received
    stamp = headers["x-netmon-timestamp"]
    expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-netmon-signature"], "sha256=" + expected)
    assert abs(int(stamp) - time.time()) < 60
    assert headers["x-netmon-notification-id"] == note_id
    payload = json.loads(body)
    assert payload["alert_id"] == "c" * 32 and payload["evidence_ids"] == ["e" * 32]
    assert (payload["id"], payload["kind"]) == (note_id, "opened")

    datagram = syslog.recv(4096)
    pattern = (
        rb"^<130>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \S+ netmon - ALERT "
        rb'\[netmon@32473 alert_id="c{32}" rule="detection:critical_port" entity="10\.0\.0\.9" '
        rb'severity="critical" branch="paris" notification_id="c{32}:opened"\] \xef\xbb\xbf'
    )
    assert re.match(pattern, datagram), datagram
    assert datagram.endswith(b'Telnet from 10.0.0.9 "quoted"]')

    [(recipients, content)] = box.messages
    assert recipients == ["soc@example.test", "oncall@example.test"]
    mail = message_from_bytes(content)
    assert mail["Subject"].startswith("[netmon critical] Telnet from 10.0.0.9")
    assert mail["X-Netmon-Notification-Id"] == note_id
    assert mail["Message-ID"] == f"<{'c' * 32}.opened@netmon.invalid>"
    text = mail.get_payload()
    assert "e" * 32 in text and f"notification: {note_id}" in text
    assert {n: (s.delivered, s.failed) for n, s in notifier.stats.items()} == {
        "webhook": (1, 0),
        "syslog": (1, 0),
        "email": (1, 0),
    }
    status = read_status(tmp_path / "outbox.sqlite")
    assert (status.counts.delivered, status.counts.pending, status.failing_total) == (3, 0, 0)


def test_a_failing_webhook_is_retried_with_backoff_and_the_same_id(
    webhook: Webhook, tmp_path: Path
) -> None:
    """At least once: the receiver sees the notification three times, always with the same
    id; the gaps between its arrivals show the backoff doubling (no jitter drawn here)."""
    webhook.fail_first = 2
    notifier = notifier_for(
        tmp_path, [WebhookChannel(webhook.url, SECRET)], retries=3, backoff=0.2, draw=lambda: 0.0
    )
    asyncio.run(_deliver(notifier, alert()))
    assert [(note_id, status) for _, note_id, status in webhook.arrivals] == [
        ("c" * 32 + ":opened", 500),
        ("c" * 32 + ":opened", 500),
        ("c" * 32 + ":opened", 204),
    ]
    times = [at for at, _, _ in webhook.arrivals]
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    assert 0.2 <= first_gap < 2 and 0.4 <= second_gap < 3, (first_gap, second_gap)
    assert len(webhook.received) == 1
    assert notifier.stats["webhook"].attempts == 3 and notifier.stats["webhook"].delivered == 1
    status = read_status(tmp_path / "outbox.sqlite")
    assert status.counts.delivered == 1 and status.failing == []


def test_the_same_alert_notified_twice_is_sent_once(webhook: Webhook, tmp_path: Path) -> None:
    notifier = notifier_for(tmp_path, [WebhookChannel(webhook.url, SECRET)])
    asyncio.run(_deliver(notifier, alert(), alert(), alert()))
    assert [note_id for _, note_id, _ in webhook.arrivals] == ["c" * 32 + ":opened"]


def test_an_escalation_into_the_threshold_is_notified_once_per_level(
    webhook: Webhook, tmp_path: Path
) -> None:
    notifier = notifier_for(tmp_path, [WebhookChannel(webhook.url, SECRET)])
    common = {
        "alert_id": "d" * 32,
        "rule": "behaviour:port_scan",
        "entity": "198.51.100.66",
        "title": "198.51.100.66 scans 10.20.0.9",
        "branch": "paris",
        "reason": "500 ports",
    }

    async def scenario() -> None:
        notifier.start()
        notifier.notify_escalation(severity="medium", ts=1.0, **common)  # below: not sent
        notifier.notify_escalation(severity="high", ts=2.0, **common)
        notifier.notify_escalation(severity="high", ts=3.0, **common)  # the same level again
        notifier.notify_escalation(severity="critical", ts=4.0, **common)
        await notifier.drain(20)
        await notifier.close()

    asyncio.run(scenario())
    sent = [json.loads(body) for _, body in webhook.received]
    assert [(p["id"], p["kind"], p["severity"]) for p in sent] == [
        ("d" * 32 + ":escalated:high", "escalated", "high"),
        ("d" * 32 + ":escalated:critical", "escalated", "critical"),
    ]
    assert sent[0]["reason"] == "500 ports" and sent[0]["ts"] == 2.0


def test_a_dead_channel_never_blocks_the_others(
    smtp: tuple[Mailbox, int], syslog: socket.socket, tmp_path: Path
) -> None:
    box, smtp_port = smtp
    dead = WebhookChannel(f"http://127.0.0.1:{free_port('127.0.0.1')}/nobody", SECRET, timeout=1)
    s = settings("", syslog.getsockname()[1], smtp_port)
    channels: list[Channel] = [dead, SyslogChannel("127.0.0.1", s.syslog_port), EmailChannel(s)]
    notifier = notifier_for(tmp_path, channels, retries=2, backoff=1.0, draw=lambda: 0.0)
    other = msgspec.structs.replace(alert(), alert_id="f" * 32)

    async def scenario() -> None:
        notifier.start()
        notifier.notify(alert())
        notifier.notify(other)
        # the others deliver both alerts while the webhook is still failing and backing off
        await wait_until_async(
            lambda: len(box.messages) == 2 and notifier.stats["syslog"].delivered == 2,
            15,
            "email and syslog deliveries",
        )
        # the webhook needs >= 3 s of backoff to give up on both alerts: it is still at it
        assert notifier.stats["webhook"].attempts < 6 and notifier.stats["webhook"].delivered == 0
        await notifier.drain(15)
        await notifier.close()

    asyncio.run(scenario())
    assert notifier.stats["webhook"].failed == 2 and notifier.stats["webhook"].attempts == 6
    assert syslog.recv(4096) and syslog.recv(4096)
    status = read_status(tmp_path / "outbox.sqlite")
    assert (status.counts.failed, status.counts.delivered) == (2, 4)
    assert {(row.channel, row.status, row.attempts) for row in status.failing} == {
        ("webhook", "failed", 3)
    }
    assert "ConnectError" in status.failing[0].last_error


def test_alerts_below_the_minimum_severity_are_not_sent(
    syslog: socket.socket, tmp_path: Path
) -> None:
    notifier = notifier_for(
        tmp_path, [SyslogChannel("127.0.0.1", syslog.getsockname()[1])], min_severity="high"
    )
    high = msgspec.structs.replace(alert("high"), alert_id="b" * 32)
    asyncio.run(_deliver(notifier, alert("medium"), high))
    assert notifier.stats["syslog"].delivered == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"webhook_url": "http://127.0.0.1:9/x"}, "webhook_secret is empty"),
        ({"smtp_host": "127.0.0.1", "email_to": "a@b.test"}, "email_from or email_to"),
        (
            {
                "smtp_host": "127.0.0.1",
                "email_from": "a@b.test",
                "email_to": "c@d.test",
                "smtp_user": "u",
            },
            "smtp_password is empty",
        ),
    ],
)
def test_channels_missing_their_secret_or_addresses_are_refused(
    fields: dict[str, str], message: str
) -> None:
    with pytest.raises(NotifyConfigError, match=message):
        channels_from_settings(AnalysisSettings(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("NETMON_ANALYSIS__NOTIFY_RETRIES", "-1"),
        ("NETMON_ANALYSIS__NOTIFY_BACKOFF_S", "0"),
        ("NETMON_ANALYSIS__NOTIFY_TIMEOUT_S", "-5"),
    ],
)
def test_nonsensical_retry_settings_are_refused(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings(environ={variable: value}, dotenv_file=None)


def test_the_worker_notifies_opened_alerts(
    webhook: Webhook, default_model: Path, tmp_path: Path
) -> None:
    environ = {
        "NETMON_STORE__DATA_DIR": str(tmp_path),
        "NETMON_ANALYSIS__WEBHOOK_URL": webhook.url,
        "NETMON_ANALYSIS__WEBHOOK_SECRET": SECRET,
    }
    config = load_settings(environ=environ, dotenv_file=None)
    raised = critical_detection("10.7.7.7")
    with EventLog(tmp_path, "replica-1") as writer:
        writer.append([raised])
    notifier = Notifier(
        channels_from_settings(config.analysis),
        Outbox(outbox_path(config.data_dir)),
        policy=RetryPolicy.of(config.analysis),
    )
    worker = AnalysisWorker(config, Classifier(default_model), Summarizer(None), notifier)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await wait_until_async(lambda: webhook.received, 20, "the webhook call")
        stop.set()
        await task

    asyncio.run(scenario())
    payload = json.loads(webhook.received[0][1])
    assert payload["entity"] == "10.7.7.7" and payload["evidence_ids"] == [raised.id]
    assert read_status(outbox_path(tmp_path)).counts.delivered == 1
