"""The event contract: every fact Netmon records, as frozen msgspec Structs in one tagged union.

The JSONL event log is the source of truth and these types are its schema. Rules that keep old
logs readable (see docs/events.md):
- an event type is named in the past tense and never renamed (its tag is written to disk);
- a new field always gets a default; a field never changes type;
- ``v`` is the schema version the writer used: absent means 1, a later schema sets it explicitly.

Times are UTC Unix seconds as floats (microsecond resolution), so the agent's hot path does no
datetime work and features are plain arithmetic. Byte counts are frame bytes as captured (what
``tshark -z conv`` counts), payload bytes are counted separately.
"""

from __future__ import annotations

import os
import time
import typing
from typing import Literal

import msgspec

Severity = Literal["none", "low", "medium", "high", "critical"]
SEVERITY_RANK: dict[str, int] = {"none": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}

FlowLabel = Literal["benign", "attack", "unknown"]
EndReason = Literal["fin", "rst", "idle", "active", "evicted", "shutdown"]
DomainSource = Literal["dns", "sni", "http", "pdns"]


def new_event_id(now: float | None = None) -> str:
    """A 32-hex-digit id whose first 48 bits are the millisecond time, so ids sort by creation."""
    millis = int((time.time() if now is None else now) * 1000) & 0xFFFF_FFFF_FFFF
    return f"{millis:012x}{os.urandom(10).hex()}"


def max_severity(severities: list[str] | tuple[str, ...]) -> Severity:
    """The highest of the given severities ("none" for none)."""
    best: Severity = "none"
    for severity in severities:
        if SEVERITY_RANK[severity] > SEVERITY_RANK[best]:
            best = severity  # type: ignore[assignment]
    return best


class Record(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """Base of nested records inside events (not events themselves)."""


class Detection(Record, frozen=True):
    """One finding of one detector about one flow."""

    kind: str  # detector name: "critical_port", "suspicious_ip", "unapproved_domain", ...
    detail: str  # human-readable: "SSH (22/tcp)", "203.0.113.7 in list feodo", ...
    severity: Severity
    rule: str = ""  # the rule inside the detector: "ssh", "feodo", "denylist", ...


class FlowFeatures(Record, frozen=True):
    """Per-flow statistics for the classifier (NTLFlowLyzer / CICFlowMeter style).

    Packet lengths are frame lengths; inter-arrival times (IAT) are seconds between consecutive
    packets of the same direction ("fwd" = initiator to responder, "bwd" = the other way).
    Active/idle: the flow is "active" while packets are less than the idle threshold apart.
    """

    duration: float = 0.0
    fwd_pkt_len_min: float = 0.0
    fwd_pkt_len_max: float = 0.0
    fwd_pkt_len_mean: float = 0.0
    fwd_pkt_len_std: float = 0.0
    bwd_pkt_len_min: float = 0.0
    bwd_pkt_len_max: float = 0.0
    bwd_pkt_len_mean: float = 0.0
    bwd_pkt_len_std: float = 0.0
    fwd_iat_min: float = 0.0
    fwd_iat_max: float = 0.0
    fwd_iat_mean: float = 0.0
    fwd_iat_std: float = 0.0
    bwd_iat_min: float = 0.0
    bwd_iat_max: float = 0.0
    bwd_iat_mean: float = 0.0
    bwd_iat_std: float = 0.0
    flow_iat_mean: float = 0.0
    flow_iat_std: float = 0.0
    bytes_per_s: float = 0.0
    packets_per_s: float = 0.0
    handshake_duration: float = 0.0  # SYN to the initiator's first ACK; 0 when not TCP/unseen
    active_mean: float = 0.0
    idle_mean: float = 0.0
    down_up_ratio: float = 0.0  # bwd packets / fwd packets
    syn_count: int = 0
    fin_count: int = 0
    rst_count: int = 0
    psh_count: int = 0
    ack_count: int = 0
    urg_count: int = 0
    fwd_init_win: int = 0  # TCP window of the first initiator packet
    bwd_init_win: int = 0


class Talker(Record, frozen=True):
    """One row of a top-N list: an IP, domain or port with its totals."""

    key: str
    flows: int = 0
    bytes: int = 0


class Event(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="type",
    forbid_unknown_fields=True,
    omit_defaults=True,
    # Events never form reference cycles; untracked by the cyclic GC, decoding millions of
    # them does not trigger full collections (measured ~2x faster reading in the live feed).
    gc=False,
):
    """Fields every event has. ``ts`` decides the date partition, ``branch`` the branch one."""

    id: str
    ts: float
    branch: str
    # Schema version. Absent means 1 (omit_defaults keeps lines short); a writer of a later
    # version sets it explicitly, so the default never changes.
    v: int = 1


# --- Facts reported by agents ---------------------------------------------------------------


class FlowObserved(Event, frozen=True, tag="FlowObserved"):
    """A bidirectional flow the agent metered, emitted when the flow ended or timed out.

    ``src`` is the initiator (the sender of the first packet seen), ``dst`` the responder.
    ``ts`` is when the flow record was exported (>= last_seen).
    """

    agent_id: str
    first_seen: float
    last_seen: float
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    protocol: int  # IANA number: 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...
    vlan: int = 0  # 802.1Q VLAN id, 0 when untagged
    src2dst_packets: int = 0
    src2dst_bytes: int = 0
    dst2src_packets: int = 0
    dst2src_bytes: int = 0
    src2dst_payload_bytes: int = 0
    dst2src_payload_bytes: int = 0
    src2dst_tcp_flags: int = 0  # OR of every TCP flag byte seen in that direction
    dst2src_tcp_flags: int = 0
    community_id: str = ""  # Community ID v1 ("1:base64"), empty for non-IP
    domain: str = ""  # best known application name for the flow
    domain_source: DomainSource | None = None
    # DNS carried by the flow (UDP or TCP): one socket may ask many names (a resolver's client,
    # a DNS tunnel), so the flow reports how many queries and distinct names it carried, with a
    # bounded sample of the names; ``domain`` stays the first.
    dns_queries: int = 0
    dns_names: int = 0
    dns_sample: tuple[str, ...] = ()
    # Logins, judged by the agent: SSH from the encrypted packet sizes as Zeek does, FTP and
    # Telnet from the server's replies. Refused attempts seen, and whether one succeeded (both
    # 0/false when not a login protocol or not judged).
    auth_failures: int = 0
    auth_success: bool = False
    end_reason: EndReason = "idle"
    features: FlowFeatures = FlowFeatures()
    detections: tuple[Detection, ...] = ()
    severity: Severity = "none"  # the highest severity among detections


class DetectionRaised(Event, frozen=True, tag="DetectionRaised"):
    """A critical finding, emitted on the first matching packet, before the flow ends.

    ``flow_id`` is the id the later ``FlowObserved`` of the same flow will carry.
    """

    agent_id: str
    flow_id: str
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    protocol: int
    detection: Detection
    domain: str = ""
    severity: Severity = "critical"


class AgentHeartbeat(Event, frozen=True, tag="AgentHeartbeat"):
    """An agent's periodic health report."""

    agent_id: str
    boot_id: str
    version: str = ""
    uptime_s: float = 0.0
    packets_seen: int = 0
    packets_dropped: int = 0  # dropped by the kernel / capture buffer
    packets_malformed: int = 0
    flows_active: int = 0
    flows_evicted: int = 0
    events_per_s: float = 0.0
    spool_batches: int = 0
    spool_bytes: int = 0
    lag_s: float = 0.0  # age of the oldest unacknowledged batch
    # Domains in the agent's approved+denied policy; 0: none configured, so unapproved-domain
    # detection finds nothing (the dashboard says so); -1: an agent too old to say.
    domain_rules: int = -1


class GapReported(Event, frozen=True, tag="GapReported"):
    """An agent dropped batches it could not keep (spool cap reached): they are lost."""

    agent_id: str
    boot_id: str
    first_seq: int
    last_seq: int
    batches_dropped: int
    events_dropped: int
    reason: str = "spool_cap"


# --- Facts derived by the server's analysis pipeline ------------------------------------------


class FlowClassified(Event, frozen=True, tag="FlowClassified"):
    """The classifier's verdict about one flow (``flow_id`` = the FlowObserved's id)."""

    flow_id: str
    label: FlowLabel
    score: float  # probability of the top class
    model_version: str
    attack_type: str = ""
    agent_id: str = ""


class WindowSummarized(Event, frozen=True, tag="WindowSummarized"):
    """A 5-minute window of one branch, summarised (``ts`` = window end)."""

    window_start: float
    window_end: float
    flows: int = 0
    bytes: int = 0
    packets: int = 0
    labels: dict[str, int] = {}
    attack_types: dict[str, int] = {}
    top_talkers: tuple[Talker, ...] = ()
    top_domains: tuple[Talker, ...] = ()
    critical_detections: int = 0
    evidence_ids: tuple[str, ...] = ()  # ids of the events the summary rests on
    summary: str = ""
    summary_source: str = "template"  # "template" or "llm:<provider>/<model>"
    summary_fallback_reason: str = ""  # why the template was used, when it was


# --- Alert lifecycle ---------------------------------------------------------------------------
# The one alert state model (docs/events.md, "Alerts"): an alert is opened once per (rule,
# entity), gathers evidence through AlertUpdated while open, and changes hands through the
# user events. app/projections/alert_model.py folds these events into one AlertRecord each;
# every reader (the triage pages, the alert API, the wall) reads that record.

AlertState = Literal["open", "acknowledged", "resolved"]


class AlertEvidence(Record, frozen=True):
    """What an alert rests on, so far: totals, and bounded samples of targets and ports.

    ``count`` counts the rule's unit (probes, guesses, flows, queries, windows); the distinct
    counts are exact up to the detector's cap and the samples hold at most a few dozen values.
    """

    count: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    distinct_targets: int = 0
    distinct_ports: int = 0
    targets: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    bytes: int = 0
    sources: tuple[str, ...] = ()  # for rules about a victim (a SYN flood): who sent it


class AlertOpened(Event, frozen=True, tag="AlertOpened"):
    """A rule fired for an entity; one open alert per (rule, entity)."""

    alert_id: str
    rule: str
    entity: str  # what the alert is about: an IP, "branch:NAME", an agent id, ...
    severity: Severity
    title: str
    evidence_ids: tuple[str, ...] = ()
    evidence: AlertEvidence = AlertEvidence()
    # Where the rule lives: "behaviour" (entity detectors), "detection" (an agent's finding),
    # "window" (a branch's 5-minute window); empty in alerts written before this field.
    source: str = ""
    tags: tuple[str, ...] = ()  # extra facts that raise interest: "threat list", "critical port"


class AlertUpdated(Event, frozen=True, tag="AlertUpdated"):
    """More evidence for an open alert (rate-limited by the worker: not one per flow).

    ``seq`` numbers the updates of one alert from 1, so a replay after a crash recognises the
    ones already written. ``severity`` above the alert's escalates it (``reason`` says why).
    """

    alert_id: str
    seq: int
    evidence: AlertEvidence
    evidence_ids: tuple[str, ...] = ()  # new sample ids since the previous update
    severity: Severity = "none"  # "none": unchanged
    title: str = ""  # "": unchanged
    reason: str = ""
    tags: tuple[str, ...] = ()  # tags added


class AlertAcknowledged(Event, frozen=True, tag="AlertAcknowledged"):
    """A user took ownership of an alert."""

    alert_id: str
    by: str
    note: str = ""


class AlertResolved(Event, frozen=True, tag="AlertResolved"):
    """A user (or a rule's recovery) closed an alert."""

    alert_id: str
    by: str
    note: str = ""


class AlertEscalated(Event, frozen=True, tag="AlertEscalated"):
    """A user raised an alert's severity (or flagged it for attention at the same severity)."""

    alert_id: str
    by: str
    severity: Severity
    note: str = ""


class AlertAssigned(Event, frozen=True, tag="AlertAssigned"):
    """A user gave an alert to someone (``assignee`` empty: unassigned)."""

    alert_id: str
    by: str
    assignee: str = ""


class AlertNoteAdded(Event, frozen=True, tag="AlertNoteAdded"):
    """A user wrote a note on an alert."""

    alert_id: str
    by: str
    note: str


class AlertSuppressed(Event, frozen=True, tag="AlertSuppressed"):
    """No alerts for (rule, entity) until ``until``; ``reason`` is required and audited."""

    rule: str
    entity: str
    until: float
    by: str
    reason: str


# Every event type, listed here only: the union types and decodes a log line; EVENT_TYPES (and
# the live feed's decoder, app/projections/brief.py) derive from it.
AnyEvent = (
    FlowObserved
    | DetectionRaised
    | AgentHeartbeat
    | GapReported
    | FlowClassified
    | WindowSummarized
    | AlertOpened
    | AlertUpdated
    | AlertAcknowledged
    | AlertResolved
    | AlertEscalated
    | AlertAssigned
    | AlertNoteAdded
    | AlertSuppressed
)

# The same types as a tuple, in the same order, for runtime checks (isinstance, iteration).
EVENT_TYPES: tuple[type[Event], ...] = typing.get_args(AnyEvent)
# What an agent may send (a batch's events; storage/contract/wire.py), listed once.
AgentEvent = FlowObserved | DetectionRaised | AgentHeartbeat | GapReported
AGENT_EVENT_TYPES: tuple[type[Event], ...] = typing.get_args(AgentEvent)

# Created once and reused: msgspec encoders/decoders are cheap to call, not to build.
json_encoder = msgspec.json.Encoder()
json_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)
msgpack_encoder = msgspec.msgpack.Encoder()
msgpack_decoder: msgspec.msgpack.Decoder[list[AnyEvent]] = msgspec.msgpack.Decoder(list[AnyEvent])


def encode_json_line(event: Event) -> bytes:
    """One event as a JSON line (with the trailing newline)."""
    return json_encoder.encode(event) + b"\n"


def decode_json_line(line: bytes) -> AnyEvent:
    """Parse one JSON line; raises msgspec.ValidationError/DecodeError naming the bad field."""
    return json_decoder.decode(line)
