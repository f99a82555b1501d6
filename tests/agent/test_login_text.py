"""Cleartext logins (FTP, Telnet): refusals counted from the server's own words, per flow."""

from __future__ import annotations

import pytest

from netmon.agent.capture import FileSource
from netmon.agent.config import AgentConfig
from netmon.agent.login_text import MAX_BYTES, TextLoginObserver
from netmon.agent.pipeline import run_pipeline
from netmon.storage.contract.events import Event, FlowObserved
from tests.data.captures import load_set, pcap_path


def fed(port: int, *segments: bytes, start: int = 1000) -> TextLoginObserver:
    observer = TextLoginObserver(port)
    seq = start
    for segment in segments:
        observer.feed(False, seq, segment)
        seq += len(segment)
    return observer


def test_ftp_counts_final_530_lines_and_notes_230() -> None:
    observer = fed(
        21,
        b"220 vsFTPd ready\r\n",
        b"331 Please specify the password.\r\n530 Login incorrect.\r\n",
        b"331 Please specify the password.\r\n530-Login incorrect\r\n530 Try again\r\n",
        b"331 Please specify the password.\r\n230 Login successful.\r\n",
    )
    assert (observer.failures, observer.success) == (2, True)


def test_a_telnet_marker_split_across_segments_counts_once() -> None:
    observer = fed(
        23, b"login: Password: \r\nLogin inc", b"orrect\r\nlogin: ", b"\r\nLogin incorrect\r\n"
    )
    assert (observer.failures, observer.success) == (2, False)
    assert fed(23, b"Password:\r\nLast login: Tue", b" Dec 1\r\n$ ").success


def test_resent_bytes_are_not_counted_twice_and_a_gap_stops_it() -> None:
    observer = TextLoginObserver(23)
    observer.feed(False, 10, b"\r\nLogin incorrect\r\n")
    observer.feed(False, 10, b"\r\nLogin incorrect\r\n")  # the same segment again
    assert observer.failures == 1
    observer.feed(False, 5000, b"\r\nLogin incorrect\r\n")  # bytes missing before it
    assert observer.done and observer.failures == 1


def test_client_bytes_are_ignored_and_reading_stops_at_the_cap() -> None:
    observer = TextLoginObserver(21)
    observer.feed(True, 1, b"\r\n530 Login incorrect.\r\n")  # typed by the client
    assert observer.failures == 0
    big = fed(21, b"x" * (MAX_BYTES + 10), b"\r\n530 Login incorrect.\r\n")
    assert big.done and big.failures == 0


@pytest.mark.parametrize(
    ("set_name", "scenario", "failures", "successes"),
    [
        ("train", "telnet_guess", 12, 0),  # the scripted telnet client: 3 wrong passwords x 4
        ("train", "telnet_sessions", 0, 2),
        ("heldout", "hydra_ftp", 39, 1),  # hydra found the password on its 40th try
    ],
)
def test_the_flows_of_real_captures_carry_the_verdicts(
    set_name: str, scenario: str, failures: int, successes: int
) -> None:
    truth = load_set(set_name)
    events: list[Event] = []
    run_pipeline(FileSource(pcap_path(truth)), AgentConfig(agent_id="test"), events.append)
    sources = set(truth.scenario(scenario).sources)
    mine = [e for e in events if isinstance(e, FlowObserved) and e.src_ip in sources]
    assert sum(e.auth_failures for e in mine) == failures
    assert sum(e.auth_success for e in mine) == successes
