"""Classifier features: one fixed-order numeric vector per flow, from FlowObserved or a CSV row.

The same vector is built for training and prediction, so a model trained on our own events
sees exactly what production sees: the flow's own counters, flags and statistics, then its
source's context in the last minute (app/analysis/context.py). Port numbers are deliberately
left out: a model keyed on them memorises the corpus instead of learning behaviour (a scan of
other ports must still look like a scan); only the count of distinct ports is in the context.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence

import msgspec
import numpy as np

from netmon.app.analysis.context import CONTEXT_NAMES, ContextTracker
from netmon.storage.contract.events import FlowFeatures, FlowObserved

# TCP flag bits as in the header's flag byte.
FLAG_BITS: tuple[tuple[str, int], ...] = (
    ("fin", 0x01),
    ("syn", 0x02),
    ("rst", 0x04),
    ("psh", 0x08),
    ("ack", 0x10),
    ("urg", 0x20),
)
STAT_NAMES: tuple[str, ...] = tuple(FlowFeatures.__struct_fields__)
COUNT_NAMES: tuple[str, ...] = (
    "is_tcp",
    "is_udp",
    "is_icmp",
    "src2dst_packets",
    "src2dst_bytes",
    "dst2src_packets",
    "dst2src_bytes",
    "src2dst_payload_bytes",
    "dst2src_payload_bytes",
    "auth_failures",  # the agent's verdict on a login exchange (SSH): refused attempts seen
    "auth_success",  # and whether one succeeded (a scripted login is no guess)
)
FLAG_NAMES: tuple[str, ...] = tuple(
    f"{direction}_{name}" for direction in ("src2dst", "dst2src") for name, _ in FLAG_BITS
)
# The application name the agent found (DNS query, TLS SNI, HTTP Host, passive DNS): a tunnel's
# names are long, digit-heavy labels; ordinary names are short words.
NAME_NAMES: tuple[str, ...] = ("name_length", "name_longest_label", "name_digit_share")
FLOW_NAMES: tuple[str, ...] = COUNT_NAMES + FLAG_NAMES + STAT_NAMES + NAME_NAMES
FEATURE_NAMES: tuple[str, ...] = FLOW_NAMES + CONTEXT_NAMES
_NO_CONTEXT = [0.0] * len(CONTEXT_NAMES)
# Flag bytes -> their six 0/1 features, precomputed: flow_vector runs 50,000+ times a second.
_FLAG_TABLE: tuple[list[float], ...] = tuple(
    [1.0 if byte & bit else 0.0 for _, bit in FLAG_BITS] for byte in range(256)
)
_astuple = msgspec.structs.astuple


def flow_vector(flow: FlowObserved) -> list[float]:
    """The flow's own features, in FLOW_NAMES order (no context)."""
    proto = flow.protocol
    row: list[float] = [
        1.0 if proto == 6 else 0.0,
        1.0 if proto == 17 else 0.0,
        1.0 if proto in (1, 58) else 0.0,
        flow.src2dst_packets,
        flow.src2dst_bytes,
        flow.dst2src_packets,
        flow.dst2src_bytes,
        flow.src2dst_payload_bytes,
        flow.dst2src_payload_bytes,
        flow.auth_failures,
        1.0 if flow.auth_success else 0.0,
    ]
    row += _FLAG_TABLE[flow.src2dst_tcp_flags & 0xFF]
    row += _FLAG_TABLE[flow.dst2src_tcp_flags & 0xFF]
    row += _astuple(flow.features)
    row += _name_vector(flow.domain)
    return row


@functools.lru_cache(maxsize=4096)  # names repeat: most flows of a minute share a few
def _name_vector(name: str) -> tuple[float, float, float]:
    if not name:
        return (0.0, 0.0, 0.0)
    digits = sum(character.isdigit() for character in name)
    return (float(len(name)), float(max(map(len, name.split(".")))), digits / len(name))


def flow_matrix(flows: Sequence[FlowObserved], context: ContextTracker | None) -> np.ndarray:
    """Feature vectors of many flows as a float32 matrix (rows in input order).

    With a tracker, each flow is added to it in turn and gets its source's context; without
    one the context columns are 0 (as for CSV rows, which carry no addresses).
    """
    if not flows:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    if context is None:
        return np.asarray([flow_vector(flow) + _NO_CONTEXT for flow in flows], dtype=np.float32)
    observe = context.observe
    return np.asarray([flow_vector(flow) + observe(flow) for flow in flows], dtype=np.float32)


# --- CSV layouts -----------------------------------------------------------------------------
# Column names are normalised (lower case, spaces and slashes to "_") before lookup. CICFlowMeter
# (Java and the Python package) writes durations and IATs in microseconds, NTLFlowLyzer in
# seconds; both measure packet lengths on payload rather than frames, which we accept: a model
# trained on such a CSV should be evaluated on that tool's output, not mixed with ours.
_CIC: dict[str, tuple[str, float]] = {
    "flow_duration": ("duration", 1e-6),
    "total_fwd_packets": ("src2dst_packets", 1),
    "tot_fwd_pkts": ("src2dst_packets", 1),
    "total_backward_packets": ("dst2src_packets", 1),
    "tot_bwd_pkts": ("dst2src_packets", 1),
    "total_length_of_fwd_packets": ("src2dst_payload_bytes", 1),
    "totlen_fwd_pkts": ("src2dst_payload_bytes", 1),
    "total_length_of_bwd_packets": ("dst2src_payload_bytes", 1),
    "totlen_bwd_pkts": ("dst2src_payload_bytes", 1),
    "fwd_packet_length_max": ("fwd_pkt_len_max", 1),
    "fwd_packet_length_min": ("fwd_pkt_len_min", 1),
    "fwd_packet_length_mean": ("fwd_pkt_len_mean", 1),
    "fwd_packet_length_std": ("fwd_pkt_len_std", 1),
    "bwd_packet_length_max": ("bwd_pkt_len_max", 1),
    "bwd_packet_length_min": ("bwd_pkt_len_min", 1),
    "bwd_packet_length_mean": ("bwd_pkt_len_mean", 1),
    "bwd_packet_length_std": ("bwd_pkt_len_std", 1),
    # the Python cicflowmeter package's short names
    **{
        f"{d}_pkt_len_{s}": (f"{d}_pkt_len_{s}", 1)
        for d in ("fwd", "bwd")
        for s in ("max", "min", "mean", "std")
    },
    "flow_bytes_s": ("bytes_per_s", 1),
    "flow_byts_s": ("bytes_per_s", 1),
    "flow_packets_s": ("packets_per_s", 1),
    "flow_pkts_s": ("packets_per_s", 1),
    "flow_iat_mean": ("flow_iat_mean", 1e-6),
    "flow_iat_std": ("flow_iat_std", 1e-6),
    "fwd_iat_min": ("fwd_iat_min", 1e-6),
    "fwd_iat_max": ("fwd_iat_max", 1e-6),
    "fwd_iat_mean": ("fwd_iat_mean", 1e-6),
    "fwd_iat_std": ("fwd_iat_std", 1e-6),
    "bwd_iat_min": ("bwd_iat_min", 1e-6),
    "bwd_iat_max": ("bwd_iat_max", 1e-6),
    "bwd_iat_mean": ("bwd_iat_mean", 1e-6),
    "bwd_iat_std": ("bwd_iat_std", 1e-6),
    "fin_flag_count": ("fin_count", 1),
    "fin_flag_cnt": ("fin_count", 1),
    "syn_flag_count": ("syn_count", 1),
    "syn_flag_cnt": ("syn_count", 1),
    "rst_flag_count": ("rst_count", 1),
    "rst_flag_cnt": ("rst_count", 1),
    "psh_flag_count": ("psh_count", 1),
    "psh_flag_cnt": ("psh_count", 1),
    "ack_flag_count": ("ack_count", 1),
    "ack_flag_cnt": ("ack_count", 1),
    "urg_flag_count": ("urg_count", 1),
    "urg_flag_cnt": ("urg_count", 1),
    "down_up_ratio": ("down_up_ratio", 1),
    "init_win_bytes_forward": ("fwd_init_win", 1),
    "init_fwd_win_byts": ("fwd_init_win", 1),
    "init_win_bytes_backward": ("bwd_init_win", 1),
    "init_bwd_win_byts": ("bwd_init_win", 1),
    "active_mean": ("active_mean", 1e-6),
    "idle_mean": ("idle_mean", 1e-6),
    "protocol": ("protocol", 1),
}
_NTL: dict[str, tuple[str, float]] = {
    "duration": ("duration", 1),
    "fwd_packets_count": ("src2dst_packets", 1),
    "bwd_packets_count": ("dst2src_packets", 1),
    "fwd_total_payload_bytes": ("src2dst_payload_bytes", 1),
    "bwd_total_payload_bytes": ("dst2src_payload_bytes", 1),
    "fwd_payload_bytes_max": ("fwd_pkt_len_max", 1),
    "fwd_payload_bytes_min": ("fwd_pkt_len_min", 1),
    "fwd_payload_bytes_mean": ("fwd_pkt_len_mean", 1),
    "fwd_payload_bytes_std": ("fwd_pkt_len_std", 1),
    "bwd_payload_bytes_max": ("bwd_pkt_len_max", 1),
    "bwd_payload_bytes_min": ("bwd_pkt_len_min", 1),
    "bwd_payload_bytes_mean": ("bwd_pkt_len_mean", 1),
    "bwd_payload_bytes_std": ("bwd_pkt_len_std", 1),
    "bytes_rate": ("bytes_per_s", 1),
    "packets_rate": ("packets_per_s", 1),
    "packets_iat_mean": ("flow_iat_mean", 1),
    "packet_iat_std": ("flow_iat_std", 1),
    "fwd_packets_iat_min": ("fwd_iat_min", 1),
    "fwd_packets_iat_max": ("fwd_iat_max", 1),
    "fwd_packets_iat_mean": ("fwd_iat_mean", 1),
    "fwd_packets_iat_std": ("fwd_iat_std", 1),
    "bwd_packets_iat_min": ("bwd_iat_min", 1),
    "bwd_packets_iat_max": ("bwd_iat_max", 1),
    "bwd_packets_iat_mean": ("bwd_iat_mean", 1),
    "bwd_packets_iat_std": ("bwd_iat_std", 1),
    "fin_flag_counts": ("fin_count", 1),
    "syn_flag_counts": ("syn_count", 1),
    "rst_flag_counts": ("rst_count", 1),
    "psh_flag_counts": ("psh_count", 1),
    "ack_flag_counts": ("ack_count", 1),
    "urg_flag_counts": ("urg_count", 1),
    "down_up_rate": ("down_up_ratio", 1),
    "fwd_init_win_bytes": ("fwd_init_win", 1),
    "bwd_init_win_bytes": ("bwd_init_win", 1),
    "active_mean": ("active_mean", 1),
    "idle_mean": ("idle_mean", 1),
    "protocol": ("protocol", 1),
}
CSV_LAYOUTS: dict[str, dict[str, tuple[str, float]]] = {"cicflowmeter": _CIC, "ntlflowlyzer": _NTL}
_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


def normalise_column(name: str) -> str:
    """'Flow Bytes/s' -> 'flow_bytes_s' (how CSV headers are matched)."""
    return "_".join(name.strip().lower().replace("/", " ").replace("-", " ").split())


def detect_layout(columns: Iterable[str]) -> str:
    """Which known CSV layout a header is; raise ValueError naming what was expected."""
    normal = {normalise_column(c) for c in columns}
    if "flow_duration" in normal:
        return "cicflowmeter"
    if "duration" in normal and "fwd_packets_count" in normal:
        return "ntlflowlyzer"
    raise ValueError(
        "unknown CSV layout: expected a CICFlowMeter header (with 'Flow Duration') or an "
        "NTLFlowLyzer header (with 'duration' and 'fwd_packets_count')"
    )


def csv_row_vector(row: Mapping[str, str], layout: str) -> list[float]:
    """The feature vector of one CSV row (columns the layout lacks, and the context, stay 0)."""
    mapping = CSV_LAYOUTS[layout]
    vector = [0.0] * len(FEATURE_NAMES)
    for column, raw in row.items():
        target = mapping.get(normalise_column(column or ""))
        if target is None:
            continue
        name, scale = target
        value = _number(raw) * scale
        if name == "protocol":
            vector[_INDEX["is_tcp"]] = float(value == 6)
            vector[_INDEX["is_udp"]] = float(value == 17)
            vector[_INDEX["is_icmp"]] = float(value in (1, 58))
        else:
            vector[_INDEX[name]] = value
    return vector


def _number(raw: str | None) -> float:
    """CSV cells hold 'Infinity', 'NaN' or '' in real datasets; those become 0."""
    try:
        value = float(raw) if raw not in (None, "") else 0.0
    except ValueError:
        raise ValueError(f"not a number: {raw!r}") from None
    return value if math.isfinite(value) else 0.0
