"""Build the labelled corpus and the default model: pcaps -> real agent -> labelled flows -> model.

Crafted scenarios (scenarios.py) and real tools on loopback (tools.py) each write one pcap in
which every flow belongs to the scenario; ``netmon agent replay`` turns each pcap into
FlowObserved events exactly as production would, and every flow gets its scenario's label.
A real-tool scenario whose program is missing is skipped with a warning (the crafted
counterpart still covers the class). Servers are started before the recording begins, so their
readiness probes are not in the capture.

The real captures of a source checkout (tests/data/real: real tools in network namespaces,
committed pcaps with their ground truth) are added: the ``train`` set is trained on, the
``heldout`` set only scored, and the Model page shows each apart. Each scenario there ran from
its own addresses, so a flow's truth is the scenario whose source host it joins; flows joining
none are left out. Replaying committed pcaps needs no root.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import msgspec
from tqdm import tqdm

from netmon.app.analysis.corpus import lookalikes, scenarios, tools
from netmon.app.analysis.training import (
    LabelledFlow,
    TrainingError,
    evaluate_flows,
    load_labelled,
    save_model,
    train_model,
)
from netmon.storage.contract.events import FlowObserved, json_decoder

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
REAL_NET = "127.66.0"  # training captures; the accuracy test uses other addresses and ports
# The committed real captures of a source checkout (absent from an installed wheel).
REAL_CAPTURES = Path(__file__).resolve().parents[3] / "tests" / "data" / "real"
# A real capture's behaviour (tests/data/captures.py) -> the model's attack class.
ATTACK_CLASSES = {
    "port_scan": "portscan",
    "addr_scan": "portscan",
    "slow_scan": "portscan",
    "udp_scan": "portscan",
    "syn_flood": "synflood",
    "auth_guess": "password_guess",
    "beacon": "c2_beacon",
    "dns_tunnel": "dns_tunnel",
}
GROUP_TITLES = {
    "generated": "Generated corpus (crafted frames, tools on loopback)",
    "real-train": "Real capture, train set",
}


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
    "real_ssh": ("password_guess", _real_ssh, 6),
}


class CaptureScenario(msgspec.Struct, frozen=True):
    """What the builder reads of a real capture's scenario (the truth file holds more)."""

    name: str
    kind: str  # "attack", "benign" or "lookalike"
    sources: tuple[str, ...]
    behaviour: str | None = None


class CaptureTruth(msgspec.Struct, frozen=True):
    """What the builder reads of a real capture's truth file (tests/data/captures.py)."""

    name: str
    pcap: str
    scenarios: tuple[CaptureScenario, ...]


def load_truth(directory: Path, name: str) -> CaptureTruth:
    """The truth of real capture ``name`` in directory; raise TrainingError (and log it)."""
    path = directory / f"{name}.json"
    try:
        truth = msgspec.json.decode(path.read_bytes(), type=CaptureTruth)
        for scenario in truth.scenarios:
            _truth_label(scenario)
        if not (directory / truth.pcap).is_file():
            raise ValueError(f"its capture {truth.pcap} is not in {directory}")
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as error:
        log.error("real capture truth %s rejected: %s", path, error)
        raise TrainingError(f"real capture truth {path}: {error}") from None
    return truth


def real_capture_flows(directory: Path, truth: CaptureTruth) -> list[LabelledFlow]:
    """The labelled flows of a real capture (its pcap replayed by the real agent).

    A flow's scenario is the one whose source host is its source, else its destination;
    look-alikes are benign, attacks get their behaviour's class.
    """
    owners = {address: scenario for scenario in truth.scenarios for address in scenario.sources}
    labelled: list[LabelledFlow] = []
    unowned = 0
    for flow in replay(directory / truth.pcap):
        scenario = owners.get(flow.src_ip) or owners.get(flow.dst_ip)
        if scenario is None:
            unowned += 1
            continue
        labelled.append(
            LabelledFlow(
                label=_truth_label(scenario),
                flow=flow,
                capture=f"real-{truth.name}",
                scenario=scenario.name,
            )
        )
    log.info(
        "real capture %s: %d labelled flows, %d joining no scenario left out",
        truth.name,
        len(labelled),
        unowned,
    )
    return labelled


def _truth_label(scenario: CaptureScenario) -> str:
    """benign for benign and look-alike scenarios, else the attack class of the behaviour."""
    if scenario.kind in ("benign", "lookalike"):
        return "benign"
    label = ATTACK_CLASSES.get(scenario.behaviour or "") if scenario.kind == "attack" else None
    if label is None:
        raise ValueError(
            f"scenario {scenario.name} (kind {scenario.kind!r}, behaviour "
            f"{scenario.behaviour!r}): expected kind benign, lookalike or attack with one of "
            f"the behaviours {', '.join(sorted(ATTACK_CLASSES))}"
        )
    return label


def build_corpus(
    out_dir: Path,
    *,
    seed: int = 7,
    scale: float = 1.0,
    real_tools: bool = True,
    real_train: tuple[Path, CaptureTruth] | None = None,
    progress: bool = True,
) -> Path:
    """Write every scenario's pcap and the labelled JSONL into out_dir; return the JSONL path.

    With ``real_train`` (a directory and the truth of a real capture in it), that capture's
    labelled flows are in the JSONL too.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    captures: list[tuple[Path, str]] = []
    steps = [*scenarios.SCENARIOS, *lookalikes.LOOKALIKES, *(REAL if real_tools else ())]
    with tqdm(steps, desc="corpus", unit="scenario", disable=not progress) as bar:
        for name in bar:
            bar.set_postfix_str(name)
            path = out_dir / f"{name}.pcap"
            if name in scenarios.SCENARIOS:
                scenarios.write_scenario(name, path, seed, scale)
                captures.append((path, scenarios.SCENARIOS[name][0]))
                continue
            if name in lookalikes.LOOKALIKES:
                lookalikes.write_lookalike(name, path, seed, scale)
                captures.append((path, "benign"))
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
            stream = f"generated/{path.stem}"
            for flow in replay(path):
                item = LabelledFlow(label=label, flow=flow, capture=stream, scenario=path.stem)
                out.write(_encoder.encode(item) + b"\n")
                counts[label] += 1
        if real_train is not None:
            for item in real_capture_flows(*real_train):
                out.write(_encoder.encode(item) + b"\n")
                counts[item.label] += 1
    log.info("corpus: %d labelled flows %s", sum(counts.values()), dict(counts))
    return labelled


class RealCaptures(NamedTuple):
    """A directory of real captures and the truth of its two sets."""

    directory: Path
    train: CaptureTruth
    heldout: CaptureTruth


def real_captures_in(directory: Path | None) -> RealCaptures | None:
    """The real captures in directory; None (with a warning) when it has none.

    A directory with both truth files that cannot be read raises TrainingError: a model built
    without them would be scored on generated traffic only, which must not pass unnoticed.
    """
    if directory is None:
        return None
    missing = [n for n in ("train.json", "heldout.json") if not (directory / n).exists()]
    if missing:
        log.warning(
            "no real captures in %s (%s missing): the model is trained and scored on the "
            "generated corpus only",
            directory,
            ", ".join(missing),
        )
        return None
    return RealCaptures(directory, load_truth(directory, "train"), load_truth(directory, "heldout"))


def build_default_model(
    model_path: Path,
    *,
    seed: int = 7,
    real_tools: bool = True,
    real_captures: Path | None = REAL_CAPTURES,
    keep: Path | None = None,
    progress: bool = True,
) -> str:
    """Generate the corpus, train (with the real train capture when there is one), score on
    the held-out real capture, save the default model; return its version."""
    real = real_captures_in(real_captures)
    with tempfile.TemporaryDirectory(prefix="netmon-corpus-") as tmp:
        work = keep or Path(tmp)
        labelled = build_corpus(
            work,
            seed=seed,
            real_tools=real_tools,
            real_train=None if real is None else (real.directory, real.train),
            progress=progress,
        )
        data = load_labelled([labelled])
        model, report = train_model(data, seed=seed, progress=progress, group_titles=GROUP_TITLES)
        if real is not None:
            heldout = real_capture_flows(real.directory, real.heldout)
            (work / "heldout.jsonl").write_bytes(
                b"".join(_encoder.encode(item) + b"\n" for item in heldout)
            )
            report.setdefault("evaluations", []).insert(
                0,
                evaluate_flows(
                    model,
                    heldout,
                    key="real-heldout",
                    title="Held-out real capture (other tools and settings, never trained on)",
                ),
            )
        source = f"generated corpus (seed {seed}, real tools {'on' if real_tools else 'off'})"
        if real is not None:
            source += " + real capture train set"
        return save_model(model, report, model_path, source=source, labels=data.labels)
