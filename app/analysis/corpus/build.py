"""Build the labelled corpus and the default model: pcaps -> real agent -> labelled flows -> model.

Crafted scenarios (scenarios.py) and real tools on loopback (tools.py) each write one pcap in
which every flow belongs to the scenario; ``netmon agent replay`` turns each pcap into
FlowObserved events exactly as production would, and every flow gets its scenario's label.
A real-tool scenario whose program is missing is skipped with a warning (the crafted
counterpart still covers the class). Servers are started before the recording begins, so their
readiness probes are not in the capture.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec
from tqdm import tqdm

from netmon.app.analysis.corpus import scenarios, tools
from netmon.app.analysis.training import LabelledFlow, load_labelled, save_model, train_model
from netmon.storage.contract.events import FlowObserved, json_decoder

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
REAL_NET = "127.66.0"  # training captures; the accuracy test uses other addresses and ports


class AgentReplayError(Exception):
    """``netmon agent replay`` failed on a capture."""


def replay(pcap: Path) -> list[FlowObserved]:
    """Flows of a capture, metered by the real agent in a child process."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "netmon.app.cli",
            "agent",
            "replay",
            str(pcap),
            "--output",
            "-",
            "--no-progress",
        ],
        capture_output=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise AgentReplayError(
            f"agent replay {pcap}: {result.stderr.decode(errors='replace')[-500:]}"
        )
    events = (json_decoder.decode(line) for line in result.stdout.splitlines() if line.strip())
    return [
        event
        for event in events
        if isinstance(event, FlowObserved) and tools.SENTINEL_IP not in (event.src_ip, event.dst_ip)
    ]


def _real_web(path: Path, host: str) -> None:
    port = tools.free_port(host)
    with tools.http_server(host, port) as pages, tools.recording(path, f"host {host}"):
        tools.curl_fetches(host, port, pages, 60)


def _real_tls(path: Path, host: str) -> None:
    port = tools.free_port(host)
    with tools.tls_server(host, port), tools.recording(path, f"host {host}"):
        tools.curl_tls(host, port, 30)


def _real_dns(path: Path, host: str) -> None:
    port = tools.free_port(host, kind=2)
    with tools.dns_server(host, port), tools.recording(path, f"host {host}"):
        tools.dig_queries(host, port, 80)


def _real_scan(path: Path, host: str) -> None:
    with tools.recording(path, f"host {host}"):
        tools.nmap_syn_scan(host, "1-1200")


def _real_flood(path: Path, host: str) -> None:
    port = tools.free_port(host)
    with tools.http_server(host, port), tools.recording(path, f"host {host}"):
        tools.hping_syn_flood(host, port, 300)  # open port: SYN, SYN/ACK, RST from our kernel
        tools.hping_syn_flood(host, tools.free_port(host), 300)  # closed port: SYN, RST/ACK


def _real_ssh(path: Path, host: str) -> None:
    port = tools.free_port(host)
    with tools.ssh_server(host, port), tools.recording(path, f"host {host}"):
        tools.ssh_guesses(host, port, 40)


# name -> (label, recorder, last octet of the target address)
REAL: dict[str, tuple[str, Callable[[Path, str], None], int]] = {
    "real_web": ("benign", _real_web, 2),
    "real_dns": ("benign", _real_dns, 3),
    "real_tls": ("benign", _real_tls, 7),
    "real_scan": ("portscan", _real_scan, 4),
    "real_flood": ("synflood", _real_flood, 5),
    "real_ssh": ("ssh_bruteforce", _real_ssh, 6),
}


def build_corpus(
    out_dir: Path,
    *,
    seed: int = 7,
    scale: float = 1.0,
    real_tools: bool = True,
    progress: bool = True,
) -> Path:
    """Write every scenario's pcap and the labelled JSONL into out_dir; return the JSONL path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    captures: list[tuple[Path, str]] = []
    steps = list(scenarios.SCENARIOS) + (list(REAL) if real_tools else [])
    with tqdm(steps, desc="corpus", unit="scenario", disable=not progress) as bar:
        for name in bar:
            bar.set_postfix_str(name)
            path = out_dir / f"{name}.pcap"
            if name in scenarios.SCENARIOS:
                scenarios.write_scenario(name, path, seed, scale)
                captures.append((path, scenarios.SCENARIOS[name][0]))
                continue
            label, record, octet = REAL[name]
            try:
                record(path, f"{REAL_NET}.{octet}")
            except (tools.ToolMissing, OSError, subprocess.SubprocessError) as error:
                log.warning("corpus: skipping %s: %s", name, error)
                continue
            captures.append((path, label))
    labelled = out_dir / "labelled.jsonl"
    counts: Counter[str] = Counter()
    with labelled.open("wb") as out:
        for path, label in captures:
            for flow in replay(path):
                out.write(_encoder.encode(LabelledFlow(label=label, flow=flow)) + b"\n")
                counts[label] += 1
    log.info("corpus: %d labelled flows %s", sum(counts.values()), dict(counts))
    return labelled


def build_default_model(
    model_path: Path,
    *,
    seed: int = 7,
    real_tools: bool = True,
    keep: Path | None = None,
    progress: bool = True,
) -> str:
    """Generate the corpus, train and save the default model; return its version."""
    with tempfile.TemporaryDirectory(prefix="netmon-corpus-") as tmp:
        work = keep or Path(tmp)
        labelled = build_corpus(work, seed=seed, real_tools=real_tools, progress=progress)
        features, labels = load_labelled([labelled])
        model, report = train_model(features, labels, seed=seed, progress=progress)
        source = f"generated corpus (seed {seed}, real tools {'on' if real_tools else 'off'})"
        return save_model(model, report, model_path, source=source, labels=labels)
