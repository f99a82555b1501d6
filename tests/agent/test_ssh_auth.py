"""SSH logins judged from encrypted sizes: real captures of sshpass, hydra and key logins, and
built streams for the edges (splits, retransmissions, gaps, garbage, caps, compression).

The real captures (tests/data/real/) are read with scapy's raw reader and the agent's own
decoder; each TCP connection's payload segments are fed in capture order, as the flow table
feeds them.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import defaultdict
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.utils import RawPcapReader

from netmon.agent.capture import FileSource
from netmon.agent.config import AgentConfig
from netmon.agent.decode import decode
from netmon.agent.pipeline import run_pipeline
from netmon.agent.ssh_auth import (
    MAX_BANNER_BYTES,
    MAX_KEXINIT_BYTES,
    MAX_SEGMENTS,
    SshAuthObserver,
)
from netmon.storage.contract.events import Event, FlowObserved
from tests.data.captures import load_set, pcap_path

Segment = tuple[bool, bytes]  # (from the client, payload)
SSH_PORT = 22


# --- the real captures -------------------------------------------------------------------------


def _connections(set_name: str) -> dict[str, list[SshAuthObserver]]:
    """Every TCP connection to port 22 of a capture set, fed to an observer, by scenario."""
    truth = load_set(set_name)
    streams: dict[bytes, list[tuple[bool, int, bytes]]] = defaultdict(list)
    reader = RawPcapReader(str(pcap_path(truth)))
    linktype = reader.linktype
    with reader:
        for data, _meta in reader:
            decoded = decode(data, linktype)
            if not decoded or decoded[0][0] != 6:
                continue
            key, _flags, _win, seq, poff, plen, _frag, _frag_id = decoded
            to_server = int.from_bytes(key[-2:], "big") == SSH_PORT
            if not to_server and int.from_bytes(key[-4:-2], "big") != SSH_PORT:
                continue
            client = key if to_server else _client_key(key)
            streams[client].append((to_server, seq, data[poff : poff + plen]))
    by_scenario: dict[str, list[SshAuthObserver]] = defaultdict(list)
    for client, segments in streams.items():
        observer = SshAuthObserver()
        for from_client, seq, payload in segments:
            observer.feed(from_client, seq, payload)
        half = (len(client) - 7) // 2
        scenario = truth.owner(str(ipaddress.ip_address(client[3 : 3 + half])))
        by_scenario[scenario.name if scenario else "other"].append(observer)
    return by_scenario


def _client_key(key: bytes) -> bytes:
    """The key of the other direction (addresses and ports swapped)."""
    half = (len(key) - 7) // 2
    src, dst, ports = key[3 : 3 + half], key[3 + half : 3 + 2 * half], key[3 + 2 * half :]
    return key[:3] + dst + src + ports[2:] + ports[:2]


@pytest.fixture(scope="module")
def train() -> dict[str, list[SshAuthObserver]]:
    return _connections("train")


@pytest.fixture(scope="module")
def heldout() -> dict[str, list[SshAuthObserver]]:
    return _connections("heldout")


def test_each_sshpass_guess_is_one_failure_and_no_success(
    train: dict[str, list[SshAuthObserver]],
) -> None:
    expected = load_set("train").scenario("ssh_guess_sshpass").expected
    guesses = train["ssh_guess_sshpass"]
    assert len(guesses) == expected.connections == 12
    assert [(o.failures, o.success) for o in guesses] == [(1, False)] * 12
    assert sum(o.failures for o in guesses) == expected.attempts


def test_scripted_key_logins_succeed_without_failures(
    heldout: dict[str, list[SshAuthObserver]],
) -> None:
    logins = heldout["ssh_logins_ok"]
    assert len(logins) == 30
    assert all(o.success and o.failures == 0 and o.done for o in logins)


@pytest.mark.parametrize("set_name", ["train", "heldout"])
def test_interactive_sessions_succeed(
    set_name: str,
    train: dict[str, list[SshAuthObserver]],
    heldout: dict[str, list[SshAuthObserver]],
) -> None:
    sessions = (train if set_name == "train" else heldout)["ssh_sessions"]
    expected = load_set(set_name).scenario("ssh_sessions").expected
    assert len(sessions) == expected.connections  # IPv4 and IPv6 alike
    assert all(o.success and o.failures == 0 for o in sessions)


def test_hydra_failures_and_its_one_success_add_up_to_its_attempts(
    heldout: dict[str, list[SshAuthObserver]],
) -> None:
    expected = load_set("heldout").scenario("hydra_ssh").expected
    connections = heldout["hydra_ssh"]
    failures = sum(o.failures for o in connections)
    successes = sum(o.success for o in connections)
    # 39 wrong passwords, then the right one; a sixth try that sshd answers with a disconnect
    # (MaxAuthTries) is retried by hydra on a new connection, so each is counted once.
    assert (failures, successes) == (39, 1)
    assert failures + successes == expected.attempts
    assert max(o.failures for o in connections) == 5


def test_port_22_probes_without_a_login_get_no_verdict(
    train: dict[str, list[SshAuthObserver]],
    heldout: dict[str, list[SshAuthObserver]],
) -> None:
    probes = train["addr_scan_ssh"] + heldout["monitoring"]
    assert probes
    assert not any(o.failures or o.success for o in probes)


# --- built streams -----------------------------------------------------------------------------


def packet(kind: int, body: bytes = b"") -> bytes:
    """A plaintext binary packet (RFC 4253 6): padded to 8 bytes, at least 4 of padding."""
    payload = bytes((kind,)) + body
    padding = 8 - (5 + len(payload)) % 8
    if padding < 4:
        padding += 8
    return struct.pack("!IB", 1 + len(payload) + padding, padding) + payload + bytes(padding)


def kexinit(compression: bytes = b"none") -> bytes:
    """A KEXINIT offering ``compression`` both ways."""
    lists = [
        b"curve25519-sha256,ext-info-c",
        b"ssh-ed25519",
        b"chacha20-poly1305@openssh.com",
        b"chacha20-poly1305@openssh.com",
        b"umac-64-etm@openssh.com",
        b"umac-64-etm@openssh.com",
        compression,
        compression,
        b"",
        b"",
    ]
    body = bytes(16) + b"".join(struct.pack("!I", len(x)) + x for x in lists) + bytes(5)
    return packet(20, body)


def sealed(size: int) -> bytes:
    """An encrypted segment: only its size matters."""
    return b"\xa5" * size


ACCEPT, FAILURE, SUCCESS = 44, 52, 28  # OpenSSH 9.2 with chacha20-poly1305, as captured


def handshake(compression: bytes = b"none") -> list[Segment]:
    """Identification lines, key exchange, NEWKEYS, service request and accept."""
    return [
        (True, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"),
        (False, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"),
        (True, kexinit(compression)),
        (False, kexinit(compression)),
        (True, packet(30, bytes(36))),
        # the server's reply, its NEWKEYS and its first encrypted message (EXT_INFO) in one
        (False, packet(31, bytes(300)) + packet(21) + sealed(200)),
        (True, packet(21)),
        (True, sealed(ACCEPT)),  # SERVICE_REQUEST
        (False, sealed(ACCEPT)),  # SERVICE_ACCEPT
    ]


def attempts(*answers: int) -> list[Segment]:
    """Method "none" refused, then one client request per answer size."""
    segments: list[Segment] = [(True, sealed(60)), (False, sealed(FAILURE))]
    for answer in answers:
        segments += [(True, sealed(84)), (False, sealed(answer))]
    return segments


def feed(segments: Iterable[Segment], observer: SshAuthObserver | None = None) -> SshAuthObserver:
    """Feed segments with consecutive sequence numbers per direction."""
    observer = observer or SshAuthObserver()
    seq = {True: 1_000, False: 4_294_967_000}  # the server's wraps around 2**32
    for from_client, data in segments:
        observer.feed(from_client, seq[from_client], data)
        seq[from_client] = (seq[from_client] + len(data)) % (1 << 32)
    return observer


def test_two_refused_passwords_then_a_success() -> None:
    observer = feed(handshake() + attempts(FAILURE, FAILURE, SUCCESS))
    assert (observer.failures, observer.success, observer.done) == (2, True, True)
    assert observer.client.buffer == observer.server.buffer == b""


def test_refusals_alone_leave_the_observer_listening() -> None:
    observer = feed(handshake() + attempts(FAILURE, FAILURE, FAILURE))
    assert (observer.failures, observer.success, observer.done) == (3, False, False)


def test_method_none_accepted_is_a_success_without_failures() -> None:
    observer = feed(handshake() + [(True, sealed(60)), (False, sealed(SUCCESS))])
    assert (observer.failures, observer.success) == (0, True)


def test_a_login_banner_before_the_first_refusal_is_skipped() -> None:
    banner = [(True, sealed(60)), (False, sealed(ACCEPT + 600))]
    observer = feed(handshake() + banner + [(False, sealed(FAILURE))] + attempts(FAILURE))
    # the refusal after the banner answers "none"; attempts() adds one more "none" and one try
    assert (observer.failures, observer.success) == (2, False)


def test_replies_of_other_sizes_are_neither_failures_nor_success() -> None:
    pk_ok = 100  # a public key the server would accept, asked before signing
    observer = feed(handshake() + attempts(pk_ok, SUCCESS))
    assert (observer.failures, observer.success) == (0, True)


def test_server_data_before_the_client_encrypts_is_not_the_service_accept() -> None:
    segments = handshake()
    segments.insert(7, (False, sealed(ACCEPT + 24)))  # more EXT_INFO, before SERVICE_REQUEST
    observer = feed(segments + attempts(SUCCESS))
    assert observer.service_accept == ACCEPT and observer.success


def test_a_plaintext_segment_split_at_any_byte_reads_the_same() -> None:
    stream = handshake() + attempts(FAILURE, SUCCESS)
    for index in range(7):  # every segment up to the client's NEWKEYS
        from_client, data = stream[index]
        for at in range(1, len(data)):
            halves = [(from_client, data[:at]), (from_client, data[at:])]
            observer = feed(stream[:index] + halves + stream[index + 1 :])
            assert (observer.failures, observer.success) == (1, True), (index, at)


def test_a_retransmitted_refusal_is_counted_once() -> None:
    observer = feed(handshake() + attempts(FAILURE))
    server_next = observer.server.next_seq
    observer.feed(False, server_next - FAILURE, sealed(FAILURE))  # the same segment again
    assert observer.failures == 1 and not observer.done


def test_a_gap_stops_the_observer_without_a_verdict() -> None:
    segments = handshake()
    observer = feed(segments[:4])
    observer.feed(True, observer.client.next_seq + 100, segments[4][1])  # a segment lost
    assert observer.done
    observer = feed(segments[5:] + attempts(FAILURE, SUCCESS), observer)
    assert (observer.failures, observer.success) == (0, False)
    assert observer.client.buffer == observer.server.buffer == b""


def test_a_gap_after_refusals_keeps_what_was_counted() -> None:
    observer = feed(handshake() + attempts(FAILURE))
    observer.feed(False, observer.server.next_seq + 1_448, sealed(FAILURE))
    assert (observer.done, observer.failures, observer.success) == (True, 1, False)


@pytest.mark.parametrize(
    "client, server",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 400 Bad Request\r\n\r\n" * 10),
        (bytes.fromhex("16030100c8010000c40303") + bytes(200), b"\x15\x03\x03\x00\x02\x02\x28"),
        (b"SSH-1.5-OpenSSH_1.2.3\n", b"SSH-1.5-OpenSSH_1.2.3\n"),
        (b"SSH-2.0-x\r\n" + b"\x00\x00\x00\x0c\x0a\x99" + bytes(10), b"SSH-2.0-y\r\n"),
    ],
    ids=["http", "tls", "ssh1", "bad-message-type"],
)
def test_streams_that_are_not_ssh2_stop_and_keep_nothing(client: bytes, server: bytes) -> None:
    observer = feed([(True, client), (False, server)])
    assert observer.done and not observer.failures and not observer.success
    assert observer.client.buffer == observer.server.buffer == b""


def test_a_stream_cut_anywhere_gives_no_verdict() -> None:
    stream = handshake() + attempts(SUCCESS)
    for cut in range(len(stream) - 1):  # the last segment is the success itself
        last_from, last_data = stream[cut]
        for keep in (0, 1, 5, len(last_data) - 1):
            observer = feed([*stream[:cut], (last_from, last_data[:keep])])
            assert not observer.success and not observer.failures


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=600)), max_size=40))
def test_garbage_never_raises_and_never_judges(segments: list[Segment]) -> None:
    observer = feed(segments)
    assert not observer.success and not observer.failures
    assert len(observer.client.buffer) <= MAX_KEXINIT_BYTES
    assert len(observer.server.buffer) <= MAX_KEXINIT_BYTES


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.data())
def test_garbage_after_a_real_handshake_never_raises(data: st.DataObject) -> None:
    start = data.draw(st.integers(min_value=0, max_value=len(handshake())))
    tail = data.draw(
        st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=200)), max_size=30)
    )
    observer = feed(handshake()[:start] + tail)
    assert observer.failures <= len(tail)


def test_an_endless_identification_line_is_dropped_at_its_cap() -> None:
    observer = feed([(True, b"SSH-2.0-" + b"x" * 600), (True, b"x" * 600)])
    assert observer.done and observer.client.buffer == b""
    assert len(b"SSH-2.0-") + 1200 > MAX_BANNER_BYTES


def test_too_many_lines_before_the_identification_stop_the_observer() -> None:
    observer = feed([(False, b"welcome\r\n" * 9 + b"SSH-2.0-x\r\n")])
    assert observer.done
    observer = feed([(False, b"welcome\r\n" * 8 + b"SSH-2.0-x\r\n")])
    assert not observer.done and observer.server.phase == 1  # reading packets


def test_an_oversized_kexinit_is_not_buffered() -> None:
    header = struct.pack("!IBB", MAX_KEXINIT_BYTES, 8, 20)
    observer = feed([(True, b"SSH-2.0-x\r\n" + header + bytes(1000))])
    assert observer.done and observer.client.buffer == b""


def test_the_observer_stops_after_its_segment_cap() -> None:
    observer = feed(handshake() + attempts(*[FAILURE] * 200))
    assert observer.done and not observer.success
    assert observer.failures == (MAX_SEGMENTS - len(handshake()) - 2) // 2
    held = feed(handshake() + attempts(FAILURE))
    assert held.client.buffer == held.server.buffer == b""  # encrypted: no bytes kept


def test_zlib_from_the_start_gives_no_verdict_but_delayed_zlib_does() -> None:
    observer = feed(handshake(b"zlib") + attempts(FAILURE, SUCCESS))
    assert observer.done and not observer.success and not observer.failures
    observer = feed(handshake(b"zlib@openssh.com,zlib,none") + attempts(FAILURE, SUCCESS))
    assert (observer.failures, observer.success) == (1, True)


def test_a_late_observer_may_start_at_the_servers_key_exchange() -> None:
    segments = [s for s in handshake() if s != (False, handshake()[1][1])]
    late = feed(segments + attempts(FAILURE, SUCCESS), SshAuthObserver(late=True))
    assert (late.failures, late.success) == (1, True)
    strict = feed(segments + attempts(FAILURE, SUCCESS))
    assert not strict.success and not strict.failures


@pytest.mark.parametrize(
    "set_name, scenario, flows, failures, successes",
    [
        ("train", "ssh_guess_sshpass", 12, 12, 0),
        ("train", "ssh_sessions", 8, 0, 8),
        ("train", "ssh_idle_70s", 2, 0, 1),  # cut by the idle timeout: the first piece judges
        ("heldout", "ssh_logins_ok", 30, 0, 30),
        ("heldout", "hydra_ssh", -1, 39, 1),  # -1: one flow per connection tshark counted
        ("heldout", "monitoring", 120, 0, 0),
    ],
)
def test_the_flow_records_carry_the_verdicts(
    set_name: str, scenario: str, flows: int, failures: int, successes: int
) -> None:
    truth = load_set(set_name)
    events: list[Event] = []
    run_pipeline(FileSource(pcap_path(truth)), AgentConfig(agent_id="test"), events.append)
    sources = set(truth.scenario(scenario).sources)
    mine = [
        e
        for e in events
        if isinstance(e, FlowObserved) and e.src_ip in sources and 22 in (e.src_port, e.dst_port)
    ]
    assert len(mine) == (flows if flows >= 0 else truth.scenario(scenario).measured.tcp_connections)
    assert sum(e.auth_failures for e in mine) == failures
    assert sum(e.auth_success for e in mine) == successes
