"""Fuzz the agent's capture side: the packet decoder (agent/decode.py) over every supported link
type, and the pcap/pcapng reader (agent/capture.py ``FileSource``) over damaged captures.

A frame decodes to a key, ``NOT_IP`` or ``None`` (garbage), with its payload inside the frame;
a capture file yields frames or raises ``CaptureError`` (a clear message and exit code).
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netmon.agent.capture import CaptureError, FileSource
from netmon.agent.decode import SUPPORTED_LINKTYPES, decode
from tests.conftest import REPO_ROOT
from tests.fuzz.budget import fuzz

DATA = REPO_ROOT / "tests" / "data"
ETHERTYPES = [0x0800, 0x86DD, 0x8100, 0x88A8, 0x0806]


@st.composite
def ipv4(draw: st.DrawFn) -> bytes:
    ihl = draw(st.integers(0, 15))
    proto = draw(st.sampled_from([6, 17, 1, 58, 132, 0, 255]))
    flags_frag = draw(st.integers(0, 0xFFFF))
    total = draw(st.integers(0, 0xFFFF))
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        total,
        draw(st.integers(0, 0xFFFF)),
        flags_frag,
        64,
        proto,
        0,
        draw(st.binary(min_size=4, max_size=4)),
        draw(st.binary(min_size=4, max_size=4)),
    )
    return header + draw(st.binary(max_size=80))


@st.composite
def ipv6(draw: st.DrawFn) -> bytes:
    nxt = draw(st.sampled_from([6, 17, 58, 0, 43, 44, 60, 51, 59, 255]))
    header = struct.pack(
        "!IHBB16s16s",
        0x60000000,
        draw(st.integers(0, 0xFFFF)),
        nxt,
        64,
        draw(st.binary(min_size=16, max_size=16)),
        draw(st.binary(min_size=16, max_size=16)),
    )
    return header + draw(st.binary(max_size=80))


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, int]:
    linktype = draw(st.sampled_from(sorted(SUPPORTED_LINKTYPES)) | st.integers(0, 300))
    ip = draw(ipv4() | ipv6() | st.binary(max_size=60))
    if linktype == 1:
        tags = b"".join(
            struct.pack("!HH", draw(st.sampled_from(ETHERTYPES)), draw(st.integers(0, 0xFFFF)))
            for _ in range(draw(st.integers(0, 3)))
        )
        link = b"\x00" * 12 + tags + struct.pack("!H", draw(st.sampled_from(ETHERTYPES)))
    elif linktype in (113, 276):
        link = draw(st.binary(min_size=14, max_size=20)) + struct.pack(
            "!H", draw(st.sampled_from(ETHERTYPES))
        )
    else:
        link = draw(st.binary(max_size=8))
    data = link + ip
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data, linktype


@fuzz
@given(frames())
def test_any_frame_decodes_to_a_key_not_ip_or_none(frame: tuple[bytes, int]) -> None:
    data, linktype = frame
    result = decode(data, linktype)
    if result:  # a decoded IP packet: a payload of 0 or more bytes, inside the frame if any
        payload_off, payload_len = result[4], result[5]
        assert payload_off >= 0 and payload_len >= 0
        assert payload_len == 0 or payload_off + payload_len <= len(data)


def read_all(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "capture.pcap"
        path.write_bytes(raw)
        try:
            source = FileSource(path)
            for _, data, _, linktype in source:
                decode(data, linktype)
        except CaptureError as error:
            assert str(error) and error.exit_code


@st.composite
def pcaps(draw: st.DrawFn) -> bytes:
    """A classic pcap: valid or random header, records with honest or lying lengths."""
    magic = draw(st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1"]))
    endian = "<" if magic[0] in (0xD4, 0x4D) else ">"
    linktype = draw(st.sampled_from(sorted(SUPPORTED_LINKTYPES)) | st.integers(0, 2**32 - 1))
    out = magic + struct.pack(endian + "HHiIII", 2, 4, 0, 0, 65535, linktype)
    for _ in range(draw(st.integers(0, 4))):
        data = draw(st.binary(max_size=80))
        caplen = len(data) if draw(st.integers(0, 3)) else draw(st.integers(0, 2**32 - 1))
        out += struct.pack(endian + "IIII", draw(st.integers(0, 2**32 - 1)), 0, caplen, len(data))
        out += data
    if draw(st.booleans()):
        out = out[: draw(st.integers(0, len(out)))]
    return out


@fuzz
@given(pcaps() | st.binary(max_size=200))
def test_a_damaged_pcap_yields_frames_or_a_capture_error(raw: bytes) -> None:
    read_all(raw)


@st.composite
def damaged_pcapng(draw: st.DrawFn) -> bytes:
    data = bytearray((DATA / "agent_mixed.pcapng").read_bytes()[:4096])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[at] ^= draw(st.integers(1, 255))
        else:
            del data[at:]
            break
    return bytes(data)


@fuzz
@given(damaged_pcapng())
def test_a_damaged_pcapng_yields_frames_or_a_capture_error(raw: bytes) -> None:
    read_all(raw)


# Findings, kept as regression tests.
ETH_IPV4 = b"\x00" * 12 + b"\x08\x00"


@pytest.mark.parametrize(
    "data",
    [
        # a later fragment whose frame ends inside its IP options: payload length was -4
        ETH_IPV4 + b"F\x00\x00\x18\x00\x00\x00\x01@\x06" + b"\x00" * 10,
        # ICMP with an IP total length shorter than the ICMP header: payload length was -4
        ETH_IPV4 + b"E\x00\x00\x14\x00\x00\x00\x00@\x01" + b"\x00" * 10 + b"\x08\x00\x00\x00",
    ],
)
def test_a_short_frame_never_has_a_negative_payload(data: bytes) -> None:
    result = decode(data, 1)
    assert result is None or result == () or result[5] >= 0


@pytest.mark.parametrize("raw", [b"\n\r\r\n", b"\n\r\r\n\x1c\x00\x00\x00M<+\x1a"])
def test_a_cut_pcapng_is_a_capture_error(raw: bytes, tmp_path: Path) -> None:
    # scapy's Scapy_Exception escaped FileSource (a traceback instead of exit 65)
    path = tmp_path / "cut.pcapng"
    path.write_bytes(raw)
    with pytest.raises(CaptureError) as error:
        list(FileSource(path))
    assert error.value.exit_code == 65
