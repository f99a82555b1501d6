"""Notifications reach real receivers on loopback: HTTP (signed webhook), SMTP, UDP syslog."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from netmon.app.analysis.classifier import Classifier
from netmon.app.analysis.notify import (
    EmailChannel,
    Notifier,
    NotifyConfigError,
    SyslogChannel,
    WebhookChannel,
    channels_from_settings,
)
from netmon.app.analysis.summaries import Summarizer
from netmon.app.analysis.worker import AnalysisWorker
from netmon.app.settings import AnalysisSettings, load_settings
from netmon.storage.contract.events import AlertOpened, Detection, DetectionRaised, new_event_id
from netmon.storage.eventlog import EventLog
from tests.ports import free_port

SECRET = "test-webhook-secret-0123456789"


class Webhook:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = 0
        self.url = ""


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    state = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["content-length"]))
            status = 500 if state.fail_first > 0 else 204
            state.fail_first -= 1
            if status == 204:
                state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


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


async def _deliver(notifier: Notifier, *alerts: AlertOpened, limit_s: float = 20) -> None:
    notifier.start()
    for item in alerts:
        notifier.notify(item)
    await notifier.drain(limit_s)
    await notifier.close()


def test_every_channel_delivers_and_the_webhook_signature_verifies(
    webhook: Webhook, smtp: tuple[Mailbox, int], syslog: socket.socket
) -> None:
    box, smtp_port = smtp
    channels = channels_from_settings(settings(webhook.url, syslog.getsockname()[1], smtp_port))
    notifier = Notifier(channels, retries=2, backoff=0.01)
    asyncio.run(_deliver(notifier, alert()))

    [(headers, body)] = webhook.received
    stamp = headers["x-netmon-timestamp"]
    expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-netmon-signature"], "sha256=" + expected)
    assert abs(int(stamp) - time.time()) < 60
    payload = json.loads(body)
    assert payload["alert_id"] == "c" * 32 and payload["evidence_ids"] == ["e" * 32]

    datagram = syslog.recv(4096)
    pattern = (
        rb"^<130>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \S+ netmon - ALERT "
        rb'\[netmon@32473 alert_id="c{32}" rule="detection:critical_port" entity="10\.0\.0\.9" '
        rb'severity="critical" branch="paris"\] \xef\xbb\xbf'
    )
    assert re.match(pattern, datagram), datagram
    assert datagram.endswith(b'Telnet from 10.0.0.9 "quoted"]')

    [(recipients, content)] = box.messages
    assert recipients == ["soc@example.test", "oncall@example.test"]
    mail = message_from_bytes(content)
    assert mail["Subject"].startswith("[netmon critical] Telnet from 10.0.0.9")
    assert "e" * 32 in mail.get_payload()
    assert {n: (s.delivered, s.failed) for n, s in notifier.stats.items()} == {
        "webhook": (1, 0),
        "syslog": (1, 0),
        "email": (1, 0),
    }


def test_a_failing_webhook_is_retried_with_backoff(webhook: Webhook) -> None:
    webhook.fail_first = 2
    notifier = Notifier([WebhookChannel(webhook.url, SECRET)], retries=3, backoff=0.01)
    asyncio.run(_deliver(notifier, alert()))
    assert len(webhook.received) == 1
    assert notifier.stats["webhook"].attempts == 3 and notifier.stats["webhook"].delivered == 1


def test_a_dead_channel_never_blocks_the_others(
    smtp: tuple[Mailbox, int], syslog: socket.socket
) -> None:
    box, smtp_port = smtp
    dead = WebhookChannel(f"http://127.0.0.1:{free_port('127.0.0.1')}/nobody", SECRET, timeout=1)
    s = settings("", syslog.getsockname()[1], smtp_port)
    notifier = Notifier(
        [dead, SyslogChannel("127.0.0.1", s.syslog_port), EmailChannel(s)], retries=2, backoff=1.0
    )

    async def scenario() -> None:
        notifier.start()
        notifier.notify(alert())
        notifier.notify(alert())
        # the others deliver both alerts while the webhook is still failing and backing off
        deadline = time.monotonic() + 15
        while len(box.messages) < 2 or notifier.stats["syslog"].delivered < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        # the webhook needs >= 6 s of backoff to give up on both alerts: it is still at it
        assert notifier.stats["webhook"].attempts < 6 and notifier.stats["webhook"].delivered == 0
        await notifier.drain(15)
        await notifier.close()

    asyncio.run(scenario())
    assert notifier.stats["webhook"].failed == 2 and notifier.stats["webhook"].attempts == 6
    assert syslog.recv(4096) and syslog.recv(4096)


def test_alerts_below_the_minimum_severity_are_not_sent(syslog: socket.socket) -> None:
    notifier = Notifier([SyslogChannel("127.0.0.1", syslog.getsockname()[1])], min_severity="high")
    asyncio.run(_deliver(notifier, alert("medium"), alert("high")))
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


def test_the_worker_notifies_opened_alerts(
    webhook: Webhook, default_model: Path, tmp_path: Path
) -> None:
    environ = {
        "NETMON_STORE__DATA_DIR": str(tmp_path),
        "NETMON_ANALYSIS__WEBHOOK_URL": webhook.url,
        "NETMON_ANALYSIS__WEBHOOK_SECRET": SECRET,
    }
    config = load_settings(environ=environ, dotenv_file=None)
    raised = DetectionRaised(
        id=new_event_id(),
        ts=time.time(),
        branch="b",
        agent_id="a",
        flow_id="f" * 32,
        src_ip="10.7.7.7",
        src_port=4000,
        dst_ip="10.0.0.1",
        dst_port=3389,
        protocol=6,
        detection=Detection(kind="critical_port", detail="RDP (3389/tcp)", severity="critical"),
    )
    with EventLog(tmp_path, "replica-1") as writer:
        writer.append([raised])
    notifier = Notifier(channels_from_settings(config.analysis), retries=1, backoff=0.01)
    worker = AnalysisWorker(config, Classifier(default_model), Summarizer(None), notifier)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        deadline = time.monotonic() + 20
        while not webhook.received:
            assert time.monotonic() < deadline, "no webhook call"
            await asyncio.sleep(0.02)
        stop.set()
        await task

    asyncio.run(scenario())
    payload = json.loads(webhook.received[0][1])
    assert payload["entity"] == "10.7.7.7" and payload["evidence_ids"] == [raised.id]
