"""The default model on a real capture it never saw: an nmap SYN scan mixed with curl and dig.

The classifier judges a flow in its source's context (the source's last minute), so the scanner
is a host of its own here (nmap -S), as it is on a real network: the curl and dig clients run
from 127.0.0.1. Were they the scanner's own address, their flows would rightly carry its
context.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from netmon.app.analysis.classifier import Classifier
from netmon.app.analysis.corpus import tools
from netmon.app.analysis.corpus.build import replay

NET = "127.99.0"  # training used 127.66.0.x and 127.77.x.x
SCAN_TARGET, WEB, DNS, SCANNER = f"{NET}.40", f"{NET}.41", f"{NET}.42", f"{NET}.50"

pytestmark = [
    pytest.mark.skipif(
        any(shutil.which(p) is None for p in ("nmap", "tcpdump", "curl", "dig", "dnsmasq")),
        reason="needs nmap, tcpdump, curl, dig and dnsmasq",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="nmap -sS and tcpdump need root"),
]


def nmap_syn_scan_from(source: str, target: str, ports: str) -> None:
    """nmap -sS with its own source address on lo (-S; the answers come back through lo)."""
    subprocess.run(
        ["nmap", "-sS", "-Pn", "-n", "-T4", "--max-retries", "1", "-S", source, "-e", "lo"]
        + ["-p", ports, target],
        capture_output=True,
        timeout=120,
        check=True,
    )


def test_default_model_labels_a_real_nmap_scan_and_benign_traffic(
    default_model: Path, tmp_path: Path
) -> None:
    capture = tmp_path / "mixed.pcap"
    web_port, dns_port = tools.free_port(WEB), tools.free_port(DNS, kind=2)
    with (
        tools.http_server(WEB, web_port) as pages,
        tools.dns_server(DNS, dns_port),
        tools.recording(capture, f"net {NET}.0/24"),
    ):
        tools.curl_fetches(WEB, web_port, pages, 30)
        nmap_syn_scan_from(SCANNER, SCAN_TARGET, "2000-2600,40000-40400")
        tools.dig_queries(DNS, dns_port, 40)
    flows = replay(capture)
    classifier = Classifier(default_model, threshold=0.9)
    verdicts = classifier.predict(flows)

    table: dict[str, Counter[str]] = {"scan": Counter(), "benign": Counter()}
    for flow, (label, _kind, _score) in zip(flows, verdicts, strict=True):
        truth = "scan" if SCAN_TARGET in (flow.src_ip, flow.dst_ip) else "benign"
        table[truth][label] += 1
    print(f"\n{'truth':<8}{'flows':>7}{'attack':>8}{'benign':>8}{'unknown':>9}  share right")
    for truth, counts in table.items():
        total = sum(counts.values())
        right = counts["attack" if truth == "scan" else "benign"]
        print(
            f"{truth:<8}{total:>7}{counts['attack']:>8}{counts['benign']:>8}{counts['unknown']:>9}"
            f"  {right / max(total, 1):.3f}"
        )
    scan, benign = table["scan"], table["benign"]
    assert sum(scan.values()) >= 900, "the scan should yield one flow per port"
    assert sum(benign.values()) >= 60
    assert scan["attack"] / sum(scan.values()) >= 0.90
    assert benign["benign"] / sum(benign.values()) >= 0.95
