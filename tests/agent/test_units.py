"""Unit tests of the agent's parts: Community ID, name parsers, decoder robustness, config."""

from __future__ import annotations

import socket
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from netmon.agent.appnames import PassiveDns, parse_dns, parse_http_host, sni_from_segments
from netmon.agent.communityid import community_id
from netmon.agent.config import AgentConfigError, load_agent_config
from netmon.agent.decode import SUPPORTED_LINKTYPES, decode


def _ip(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


@pytest.mark.parametrize(
    ("proto", "src", "dst", "sport", "dport", "expected"),
    [  # the Community ID specification's reference vectors
        (6, "128.232.110.120", "66.35.250.204", 34855, 80, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
        (6, "66.35.250.204", "128.232.110.120", 80, 34855, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
        (17, "192.168.1.52", "8.8.8.8", 54585, 53, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
        (1, "192.168.0.89", "192.168.0.1", 8, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="),
        (1, "192.168.0.1", "192.168.0.89", 0, 8, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="),
        (1, "192.168.0.89", "192.168.0.1", 20, 1, "1:tz/fHIDUHs19NkixVVoOZywde+I="),
        (
            58,
            "fe80::200:86ff:fe05:80da",
            "fe80::260:97ff:fe07:69ea",
            135,
            0,
            "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
        ),
        (58, "fe80::260:97ff:fe07:69ea", "ff02::1", 134, 0, "1:pkvHqCL88/tg1k4cPigmZXUtL00="),
        (132, "192.168.170.8", "192.168.170.56", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="),
    ],
)
def test_community_id_reference_vectors(
    proto: int, src: str, dst: str, sport: int, dport: int, expected: str
) -> None:
    assert community_id(_ip(src), _ip(dst), proto, sport, dport) == expected


def _dns_bytes(packet: DNS) -> bytes:
    return bytes(packet)


def test_dns_answer_maps_addresses_to_the_question() -> None:
    answer = _dns_bytes(
        DNS(
            id=1,
            qr=1,
            qd=DNSQR(qname="Alias.Example.test"),
            an=[
                DNSRR(rrname="alias.example.test", type="CNAME", rdata="www.example.test"),
                DNSRR(rrname="www.example.test", rdata="192.0.2.7"),
            ],
        )
    )
    message = parse_dns(answer)
    assert message is not None and message.is_response
    assert message.qname == "alias.example.test"
    assert message.addresses == [(_ip("192.0.2.7"), "alias.example.test")]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00" * 11,
        b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c",  # name points at itself
        b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3f" + b"a" * 5,  # label past the end
        b"\x00\x01\x81\x80\x00\x01\x00\x05\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01",  # no answers
    ],
)
def test_hostile_dns_payloads_give_none(payload: bytes) -> None:
    assert parse_dns(payload) is None


@pytest.mark.parametrize(
    ("payload", "host"),
    [
        (b"GET / HTTP/1.1\r\nHost: Example.TEST:8080\r\n\r\n", "example.test"),
        (
            b"POST /x HTTP/1.1\r\nUser-Agent: a\r\nhost:  api.example.test\r\n\r\n",
            "api.example.test",
        ),
        (b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", "::1"),
        (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", None),
        (b"SSH-2.0-OpenSSH_9.2\r\n", None),
    ],
)
def test_http_host(payload: bytes, host: str | None) -> None:
    assert parse_http_host(payload) == host


def test_sni_needs_more_data_until_the_hello_is_complete() -> None:
    from tests.data.make_agent_pcaps import client_hello, tls_records

    records = tls_records(client_hello("more.example.test", padding=3000))
    assert sni_from_segments(records[:1000]) == (False, None)
    assert sni_from_segments(records) == (True, "more.example.test")
    assert sni_from_segments(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00") == (
        True,
        None,
    )  # not a hello


def test_passive_dns_is_bounded_and_newest_wins() -> None:
    cache = PassiveDns(capacity=2)
    cache.learn(b"\x01" * 4, "a.test")
    cache.learn(b"\x02" * 4, "b.test")
    cache.learn(b"\x01" * 4, "c.test")  # refreshes address 1
    cache.learn(b"\x03" * 4, "d.test")  # evicts address 2, the oldest
    assert (cache.lookup(b"\x01" * 4), cache.lookup(b"\x02" * 4), len(cache)) == ("c.test", None, 2)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), linktype=st.sampled_from(sorted(SUPPORTED_LINKTYPES)))
def test_decoder_never_raises_on_garbage(data: bytes, linktype: int) -> None:
    decode(data, linktype)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=80))
def test_truncated_real_frames_are_malformed_not_errors(cut: int) -> None:
    frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / b"xy")
    result = decode(frame[:cut], 1)
    assert result is None or cut >= 42


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('idle_timeout = "soon"\n')
    with pytest.raises(AgentConfigError, match="idle_timeout"):
        load_agent_config(path)
    path.write_text("idle_timout = 5\n")  # a typo is an error, not a silent default
    with pytest.raises(AgentConfigError, match="idle_timout"):
        load_agent_config(path)
    path.write_text("max_flows = 0\n")
    with pytest.raises(AgentConfigError, match="max_flows must be > 0"):
        load_agent_config(path)
    path.write_text("[[critical_ports]\n")
    with pytest.raises(AgentConfigError, match="not valid TOML"):
        load_agent_config(path)
    with pytest.raises(AgentConfigError, match="not found"):
        load_agent_config(tmp_path / "missing.toml")


def test_config_file_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        'agent_id = "edge-1"\nbranch = "paris"\nidle_timeout = 15\n'
        '[[critical_ports]]\nport = 5900\nrule = "vnc"\nname = "VNC"\nseverity = "critical"\n'
        '[domains]\napproved = ["example.com"]\n'
    )
    config = load_agent_config(path)
    assert (config.agent_id, config.branch, config.idle_timeout) == ("edge-1", "paris", 15.0)
    assert [p.rule for p in config.critical_ports] == ["vnc"]
    assert config.domains.approved == ("example.com",)


def test_flow_and_its_forward_stats_share_no_field_name() -> None:
    from netmon.agent.flowrecord import DirStats, Flow

    assert not set(Flow.__slots__) & set(DirStats.__slots__)


def test_every_config_field_is_documented() -> None:
    from netmon.agent.config import AgentConfig

    text = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text()
    forms = ("`{}`", "`[[{}]]`", "`[{}]`")
    missing = [
        name
        for name in AgentConfig.__struct_fields__
        if not any(form.format(name) in text for form in forms)
    ]
    assert missing == []


def test_the_documented_examples_are_valid_agent_configs(tmp_path: Path) -> None:
    import tomllib

    from netmon.agent.config import parse_agent_config
    from netmon.agent.detectors.domains import DomainDetector

    text = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text()
    blocks = [part.split("```", 1)[0] for part in text.split("```toml\n")[1:]]
    assert len(blocks) == 2  # making SSH critical; the domain policy
    ssh = parse_agent_config(tomllib.loads(blocks[0]))
    assert {(p.port, p.protocol) for p in ssh.critical_ports} == {
        (22, "tcp"),
        (23, "tcp"),
        (3389, "tcp"),
        (3389, "udp"),
    }
    policy = parse_agent_config(tomllib.loads(blocks[1])).domains
    listed = tmp_path / "approved.txt"
    listed.write_text("intranet.example\n")
    detector = DomainDetector(msgspec.structs.replace(policy, approved_files=(str(listed),)))
    assert detector.rules == 7
