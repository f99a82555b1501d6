"""The notification outbox: rows, leases and counts; hostile receivers (one that hangs, one that
answers 500 with an endless body); a full disk under the outbox; a worker killed between
appending an alert and saving its notification."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netmon.app.analysis.channels import WebhookChannel
from netmon.app.analysis.classifier import Classifier
from netmon.app.analysis.notify import Notifier, RetryPolicy
from netmon.app.analysis.summaries import Summarizer
from netmon.app.analysis.worker import AnalysisWorker
from netmon.app.settings import load_settings
from netmon.storage.contract.events import AlertOpened
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from netmon.storage.outbox import Outbox, OutboxCounts, outbox_path, read_status
from tests.analysis.receivers import (
    SECRET,
    RawReceiver,
    critical_detection,
    error_with_endless_body,
    hang_first_then_take,
    serve_webhook,
)
from tests.polling import wait_until, wait_until_async
from tests.soak.chaos import fill_up, mount_tmpfs, unmount

NETMON = Path(sys.executable).parent / "netmon"
T0 = 1_800_000_000.0
PAYLOAD = b'{"id":"a:opened"}'


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "analysis" / "outbox.sqlite")
    yield box
    box.close()


# --- the outbox alone -----------------------------------------------------------------------


def test_the_same_notification_added_twice_is_one_row_per_channel(outbox: Outbox) -> None:
    assert outbox.add("a:opened", ["webhook", "syslog"], PAYLOAD, T0) == 2
    assert outbox.add("a:opened", ["webhook", "syslog"], PAYLOAD, T0 + 5) == 0
    assert outbox.status().counts == OutboxCounts(pending=2)
    assert outbox.pending(["webhook"]) == 1


def test_a_claimed_row_is_leased_and_due_again_if_its_sender_dies(outbox: Outbox) -> None:
    outbox.add("a:opened", ["webhook"], PAYLOAD, T0)
    first = outbox.claim("webhook", T0, lease_s=40)
    assert first is not None and (first.id, first.attempts, first.payload) == (
        "a:opened",
        1,
        PAYLOAD,
    )
    # The sender died mid-send: nothing is due during the lease, the row is due again after it.
    assert outbox.claim("webhook", T0 + 39, lease_s=40) is None
    assert outbox.next_due("webhook") == T0 + 40
    again = outbox.claim("webhook", T0 + 40, lease_s=40)
    assert again is not None and again.attempts == 2
    outbox.delivered(again, T0 + 41)
    assert outbox.claim("webhook", T0 + 1000, lease_s=40) is None
    assert outbox.status().counts == OutboxCounts(delivered=1)


def test_failing_rows_are_counted_and_listed_newest_first(outbox: Outbox) -> None:
    for number in range(3):
        outbox.add(f"n{number}:opened", ["webhook"], PAYLOAD, T0 + number)
    for number in range(3):
        row = outbox.claim("webhook", T0 + 10 + number, lease_s=40)
        assert row is not None
        retry_at = None if number == 0 else T0 + 100
        outbox.attempt_failed(row, f"HTTP 500: {'x' * 900}", retry_at)
    status = outbox.status()
    assert status.counts == OutboxCounts(retrying=2, failed=1)
    assert status.failing_total == 3
    assert [(r.id, r.status, r.next_attempt_at) for r in status.failing] == [
        ("n2:opened", "retrying", T0 + 100),
        ("n1:opened", "retrying", T0 + 100),
        ("n0:opened", "failed", None),
    ]
    assert len(status.failing[0].last_error) == 500  # a receiver's text is kept bounded


def test_old_finished_rows_are_cleaned_up_in_bounded_passes(outbox: Outbox) -> None:
    for number in range(5):
        outbox.add(f"n{number}:opened", ["webhook"], PAYLOAD, T0)
        row = outbox.claim("webhook", T0, lease_s=40)
        assert row is not None
        outbox.delivered(row, T0)
    outbox.add("fresh:opened", ["webhook"], PAYLOAD, T0)  # pending: never cleaned up
    assert outbox.clean_up(before=T0 + 1, limit=3) == 3
    assert outbox.clean_up(before=T0 + 1, limit=3) == 2
    assert outbox.clean_up(before=T0 + 1, limit=3) == 0
    assert outbox.status().counts == OutboxCounts(pending=1)


def test_rows_of_a_channel_no_longer_configured_are_marked_failed(outbox: Outbox) -> None:
    outbox.add("a:opened", ["webhook", "email"], PAYLOAD, T0)
    assert outbox.give_up_channels_except(["webhook"], T0 + 1) == 1
    [row] = outbox.status().failing
    assert (row.channel, row.status, row.last_error) == (
        "email",
        "failed",
        "channel no longer configured",
    )


def test_the_status_of_a_missing_or_damaged_outbox(tmp_path: Path) -> None:
    assert read_status(tmp_path / "nothing.sqlite").counts == OutboxCounts()
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"this is not a database" * 100)
    status = read_status(damaged)
    assert "file is not a database" in status.error and status.failing_total == 0


def test_retry_delays_double_up_to_the_cap_and_are_jittered_downwards() -> None:
    policy = RetryPolicy(backoff_s=1.0, backoff_max_s=60.0, jitter=0.5)
    assert [policy.delay(n, 0.0) for n in (1, 2, 3, 7, 8, 500)] == [1, 2, 4, 60, 60, 60]
    assert policy.delay(3, 0.999) == pytest.approx(2.002)
    assert RetryPolicy.of(load_settings(environ={}, dotenv_file=None).analysis).retries == 12


# --- hostile receivers -----------------------------------------------------------------------


def deliver_once(notifier: Notifier, limit_s: float = 30) -> None:
    async def scenario() -> None:
        notifier.start()
        notifier.notify(alert_opened())
        await notifier.drain(limit_s)
        await notifier.close()

    asyncio.run(scenario())


def alert_opened() -> AlertOpened:
    return AlertOpened(
        id="e" * 32,
        ts=T0,
        branch="paris",
        alert_id="c" * 32,
        rule="detection:critical_port",
        entity="10.0.0.9",
        severity="critical",
        title="RDP from 10.0.0.9",
    )


def test_a_receiver_that_hangs_times_out_and_gets_the_same_id_again(tmp_path: Path) -> None:
    """It took the first request but never answered: the attempt times out and the retry
    brings the same id (at least once; the receiver drops the repeat)."""
    with RawReceiver(hang_first_then_take) as receiver:
        channel = WebhookChannel(receiver.url, SECRET, timeout=0.5)
        policy = RetryPolicy(retries=2, backoff_s=0.05)
        notifier = Notifier([channel], Outbox(tmp_path / "outbox.sqlite"), policy=policy)
        started = time.monotonic()
        deliver_once(notifier)
        assert time.monotonic() - started < 10
    assert receiver.requests == ["c" * 32 + ":opened"] * 2
    assert notifier.stats["webhook"].attempts == 2 and notifier.stats["webhook"].delivered == 1


def test_a_500_with_an_endless_body_is_read_only_in_part(tmp_path: Path) -> None:
    with RawReceiver(error_with_endless_body) as receiver:
        channel = WebhookChannel(receiver.url, SECRET, timeout=5)
        policy = RetryPolicy(retries=0)
        notifier = Notifier([channel], Outbox(tmp_path / "outbox.sqlite"), policy=policy)
        deliver_once(notifier)
        wait_until(lambda: receiver.answered == 1, 10, "the answer to end")
    [row] = read_status(tmp_path / "outbox.sqlite").failing
    assert row.status == "failed" and row.last_error.startswith("HTTP 500: <html>xxxx")
    assert len(row.last_error) <= len("HTTP 500: ") + 200
    # The client hung up after a few KiB; only socket buffers' worth was ever written.
    assert receiver.sent_bytes < 64 << 20, receiver.sent_bytes


# --- a full disk, a killed worker ------------------------------------------------------------


@pytest.fixture
def full_volume(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounts a tmpfs: run as root")
    volume = tmp_path / "volume"
    mount_tmpfs(volume, 2)
    try:
        yield volume
    finally:
        unmount(volume)


def test_a_full_disk_under_the_outbox_costs_a_coded_line_and_the_worker_keeps_running(
    full_volume: Path, default_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    data = tmp_path / "data"
    config = load_settings(environ={"NETMON_STORE__DATA_DIR": str(data)}, dotenv_file=None)
    outbox = Outbox(full_volume / "outbox.sqlite")
    outbox.status()  # the file exists before the disk fills up, as after a first alert
    ballast = full_volume / "ballast"
    fill_up(ballast)
    with EventLog(data, "replica-1") as writer, serve_webhook() as webhook:
        notifier = Notifier(
            [WebhookChannel(webhook.url, SECRET)], outbox, policy=RetryPolicy(backoff_s=0.05)
        )
        worker = AnalysisWorker(config, Classifier(default_model), Summarizer(None), notifier)

        async def scenario() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            writer.append([critical_detection("10.9.9.1")])
            await wait_until_async(lambda: "[outbox_full]" in caplog.text, 30, "the log line")
            writer.append([critical_detection("10.9.9.2")])  # the worker is still at work
            await wait_until_async(lambda: worker.stats.alerts_opened == 2, 30, "a 2nd alert")
            assert webhook.received == [] and not task.done()
            ballast.unlink()  # room again: the notifications kept in memory reach the receiver
            await wait_until_async(lambda: len(webhook.received) == 2, 30, "both deliveries")
            stop.set()
            await task

        asyncio.run(scenario())
    lines = [r for r in caplog.records if r.name == "netmon.app.analysis.notify"]
    full = [r.getMessage() for r in lines if "[outbox_full]" in r.getMessage()]
    assert len([m for m in full if "not saved, kept in memory" in m]) == 2, full
    assert all(r.exc_info is None for r in caplog.records), "a traceback was logged"
    assert any("saved to the outbox after a failure" in r.getMessage() for r in lines)
    assert read_status(full_volume / "outbox.sqlite").counts == OutboxCounts(delivered=2)


def test_a_worker_killed_between_appending_an_alert_and_saving_its_notification(
    default_model: Path, tmp_path: Path
) -> None:
    """SIGKILL after the alert is in the log and before its notification is in the outbox (a
    test connection holds the outbox's write lock, so the worker's insert waits): after a
    restart the notification is delivered, once, with the alert's stable id."""
    data = tmp_path / "data"
    path = outbox_path(data)
    made = Outbox(path)
    made.status()  # the file exists: the blocker below locks it
    made.close()
    with EventLog(data, "replica-1") as writer:
        writer.append([critical_detection("10.8.8.8")])
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with serve_webhook() as webhook:
        env = worker_env(data, webhook.url)
        argv = [str(NETMON), "analyze", "--model", str(default_model)]
        output = (tmp_path / "worker.log").open("wb")
        first = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=output, stderr=output)
        opened = wait_until(lambda: alerts_in(data), 60, "the alert in the log")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        blocker.execute("ROLLBACK")
        blocker.close()
        assert read_status(path).counts == OutboxCounts(), "saved before the kill"
        second = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=output, stderr=output)
        try:
            wait_until(
                lambda: webhook.received,
                60,
                f"the notification after restart\n{(tmp_path / 'worker.log').read_text()}",
            )
        finally:
            second.terminate()
            second.wait(30)
            output.close()
    [alert] = opened
    assert webhook.ids() == [f"{alert.alert_id}:opened"]
    assert len(alerts_in(data)) == 1  # the restart did not open it twice


def test_a_worker_killed_before_delivery_delivers_the_saved_notification_after_restart(
    default_model: Path, tmp_path: Path
) -> None:
    """The notification is in the outbox and the receiver is failing when the worker is
    killed; the restarted worker delivers it, with the id the receiver saw before."""
    data = tmp_path / "data"
    with EventLog(data, "replica-1") as writer:
        writer.append([critical_detection("10.8.8.9")])
    with serve_webhook() as webhook:
        webhook.fail_first = 1_000_000
        env = worker_env(data, webhook.url)
        argv = [str(NETMON), "analyze", "--model", str(default_model)]
        output = (tmp_path / "worker.log").open("wb")
        first = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=output, stderr=output)
        wait_until(lambda: webhook.arrivals, 60, "a first, refused, attempt")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert read_status(outbox_path(data)).counts.delivered == 0
        webhook.fail_first = 0
        second = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=output, stderr=output)
        try:
            wait_until(lambda: webhook.received, 60, "the delivery after restart")
        finally:
            second.terminate()
            second.wait(30)
            output.close()
    [alert] = alerts_in(data)
    assert set(webhook.ids()) == {f"{alert.alert_id}:opened"}
    assert [status for _, _, status in webhook.arrivals][-1] == 204
    assert read_status(outbox_path(data)).counts == OutboxCounts(delivered=1)


def worker_env(data: Path, url: str) -> dict[str, str]:
    """``netmon analyze`` over ``data``, notifying the webhook at ``url``."""
    return {
        **os.environ,
        "NETMON_STORE__DATA_DIR": str(data),
        "NETMON_ANALYSIS__WEBHOOK_URL": url,
        "NETMON_ANALYSIS__WEBHOOK_SECRET": SECRET,
        "NETMON_ANALYSIS__NOTIFY_BACKOFF_S": "0.05",
    }


def alerts_in(data: Path) -> list[AlertOpened]:
    events = EventLogReader(data).scan(None, None)
    return [e for e in events if isinstance(e, AlertOpened)]
