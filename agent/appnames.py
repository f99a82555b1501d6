"""Application names from raw payloads: DNS questions/answers, TLS SNI, HTTP Host; passive DNS.

Only the few packets that can carry a name reach these parsers (DNS on port 53, the first
payload segments of a TCP flow's initiator), so they favour clarity over speed. Every parser
takes bytes and returns ``None`` on anything it does not understand: payloads are hostile.

DNS labels are bytes, and a tunnel fills them with anything (iodine's base128 uses bytes
0xbc-0xfd). A name becomes text lower-cased, with every byte outside ``a-z 0-9 - _`` written
as ``\\DDD`` (RFC 1035 presentation format, decimal): names reach web pages, logs and CSV
files, so they hold nothing a page could read as markup. Names that differ only in letter case
are one name (DNS compares them so); no two others render alike.
"""

from __future__ import annotations

import ipaddress
import struct

MAX_CLIENT_HELLO = 16 * 1024  # bigger "ClientHellos" are not buffered (memory bound per flow)
_HTTP_METHODS = (
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
)
_u16 = struct.Struct("!H").unpack_from
# Label bytes that stand for themselves in a rendered name; any other byte is escaped.
_PLAIN = b"abcdefghijklmnopqrstuvwxyz0123456789-_"
_PLAIN_OR_DOT = _PLAIN + b"."
_ESCAPED = tuple(chr(b) if b in _PLAIN else f"\\{b:03d}" for b in range(256))


class DnsMessage:
    """The parts of a DNS message Netmon uses."""

    __slots__ = ("is_response", "qname", "addresses")

    def __init__(self, is_response: bool, qname: str, addresses: list[tuple[bytes, str]]):
        self.is_response = is_response
        self.qname = qname
        # (packed IP, name it answers for): A/AAAA records, CNAME chains resolved to the qname.
        self.addresses = addresses


def parse_dns(payload: bytes) -> DnsMessage | None:
    """Parse a DNS message (UDP payload); None when it is not one."""
    if len(payload) < 12:
        return None
    flags, qdcount, ancount = struct.unpack_from("!HHH", payload, 2)
    if qdcount < 1 or flags & 0x7800:  # only standard queries (opcode 0)
        return None
    try:
        qname, pos = _read_name(payload, 12)
        pos += 4  # qtype, qclass
        addresses: list[tuple[bytes, str]] = []
        for _ in range(qdcount - 1):
            pos = _skip_name(payload, pos) + 4
        for _ in range(min(ancount, 64)):
            pos = _skip_name(payload, pos)
            rtype, _rclass, _ttl, rdlength = struct.unpack_from("!HHIH", payload, pos)
            pos += 10
            rdata = payload[pos : pos + rdlength]
            if len(rdata) != rdlength:
                return None
            if (rtype == 1 and rdlength == 4) or (rtype == 28 and rdlength == 16):
                addresses.append((rdata, qname))
            pos += rdlength
    except (IndexError, struct.error, ValueError):
        return None
    if not qname:
        return None
    return DnsMessage(bool(flags & 0x8000), qname, addresses)


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    """A (possibly compressed) domain name at ``pos``; returns (name, position after it)."""
    labels: list[bytes] = []
    end = -1
    jumps = 0
    while True:
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            jumps += 1
            if jumps > 32:
                raise ValueError("DNS compression loop")
            continue
        if length & 0xC0:
            raise ValueError("bad DNS label type")
        pos += 1
        if length == 0:
            break
        label = data[pos : pos + length]
        if len(label) != length:
            raise IndexError("truncated DNS label")
        labels.append(label)
        pos += length
    return name_text(labels), (end if end >= 0 else pos)


def _skip_name(data: bytes, pos: int) -> int:
    """The position after the name at ``pos``, not read: an answer's owner name (a pointer to
    the question, as a rule) is not needed, since answers are mapped to the question's name."""
    while True:
        length = data[pos]
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length & 0xC0:
            raise ValueError("bad DNS label type")
        pos += 1 + length
        if not length:
            return pos


def name_text(labels: list[bytes]) -> str:
    """A DNS name's labels as safe lower-case text (see the module docstring)."""
    name = b".".join(labels).lower()
    # The common case, one check for the whole name: nothing to escape, no dot in a label.
    if not name.translate(None, _PLAIN_OR_DOT) and name.count(b".") == len(labels) - 1:
        return name.decode("ascii")
    return ".".join([label_text(label) for label in labels])


def label_text(label: bytes) -> str:
    """One label, lower-cased, every byte outside ``a-z 0-9 - _`` as ``\\DDD``."""
    label = label.lower()  # ASCII letters only: other bytes are escaped below
    if not label.translate(None, _PLAIN):  # the common case: nothing to escape
        return label.decode("ascii")
    return "".join([_ESCAPED[b] for b in label])


def sni_from_segments(data: bytes) -> tuple[bool, str | None]:
    """``(done, server_name)`` for the initiator's first bytes of a TCP flow.

    ``done`` is False while ``data`` is the start of a TLS ClientHello that is not complete yet
    (it spans several segments or records): the caller buffers the next segment and asks again.
    """
    if len(data) < 6:
        return (not data or data[0] != 0x16), None
    if data[0] != 0x16 or data[1] != 3 or data[5] != 1:
        return True, None
    handshake = _join_records(data)
    if handshake is None or len(handshake) < 4:
        return len(data) > MAX_CLIENT_HELLO, None
    if len(handshake) < 4 + (handshake[1] << 16 | handshake[2] << 8 | handshake[3]):
        return len(data) > MAX_CLIENT_HELLO, None
    return True, parse_sni(handshake)


def parse_sni(handshake: bytes) -> str | None:
    """The server_name of a complete ClientHello handshake message; None if absent."""
    if len(handshake) < 4 or handshake[0] != 1:
        return None
    try:
        pos = 4 + 2 + 32  # type+length, client_version, random
        pos += 1 + handshake[pos]  # session id
        pos += 2 + _u16(handshake, pos)[0]  # cipher suites
        pos += 1 + handshake[pos]  # compression methods
        ext_end = pos + 2 + _u16(handshake, pos)[0]
        pos += 2
        while pos + 4 <= ext_end:
            ext_type, ext_len = struct.unpack_from("!HH", handshake, pos)
            pos += 4
            if ext_type == 0:
                return _server_name(handshake[pos : pos + ext_len])
            pos += ext_len
    except (IndexError, struct.error):
        return None
    return None


def _join_records(data: bytes) -> bytes | None:
    """The handshake bytes of the complete TLS handshake records at the start of ``data``."""
    parts: list[bytes] = []
    pos = 0
    while pos + 5 <= len(data) and data[pos] == 0x16:
        length = _u16(data, pos + 3)[0]
        if pos + 5 + length > len(data):
            break
        parts.append(data[pos + 5 : pos + 5 + length])
        pos += 5 + length
    return b"".join(parts) if parts else None


def _server_name(ext: bytes) -> str | None:
    pos = 2  # server_name_list length
    while pos + 3 <= len(ext):
        name_type = ext[pos]
        length = _u16(ext, pos + 1)[0]
        name = ext[pos + 3 : pos + 3 + length]
        if name_type == 0 and len(name) == length and name:
            try:
                return name.decode("ascii").lower().rstrip(".")
            except UnicodeDecodeError:
                return None
        pos += 3 + length
    return None


def parse_http_host(payload: bytes) -> str | None:
    """The Host header of an HTTP/1.x request at the start of ``payload``, without port."""
    if not payload.startswith(_HTTP_METHODS):
        return None
    head = payload[:4096]
    lower = head.lower()
    start = lower.find(b"\r\nhost:")
    if start < 0:
        return None
    start += 7
    stop = head.find(b"\r\n", start)
    value = head[start : stop if stop >= 0 else len(head)].strip()
    if value.startswith(b"["):  # [v6]:port
        value = value[1 : value.find(b"]")] if b"]" in value else b""
    elif value.count(b":") == 1:
        value = value.split(b":", 1)[0]
    try:
        host = value.decode("ascii").lower().rstrip(".")
    except UnicodeDecodeError:
        return None
    return host or None


def is_ip_literal(name: str) -> bool:
    """True for "127.0.0.1" or "::1" (a Host/SNI that is no domain)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class PassiveDns:
    """Bounded map from IP (packed bytes) to the last name a DNS answer gave it; FIFO eviction."""

    __slots__ = ("_names", "_capacity")

    def __init__(self, capacity: int):
        self._names: dict[bytes, str] = {}
        self._capacity = capacity

    def learn(self, address: bytes, name: str) -> None:
        """Remember that ``address`` answered for ``name`` (the newest answer wins)."""
        names = self._names
        names.pop(address, None)
        if len(names) >= self._capacity:
            del names[next(iter(names))]
        names[address] = name

    def lookup(self, address: bytes) -> str | None:
        """The name last seen for ``address``."""
        return self._names.get(address)

    def __len__(self) -> int:
        return len(self._names)
