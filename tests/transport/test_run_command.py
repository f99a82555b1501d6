"""``netmon agent run``: a pcap through the real pipeline and transport into a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from netmon.storage.contract.events import FlowObserved
from tests.conftest import REPO_ROOT
from tests.transport.conftest import stored_events

PCAP = REPO_ROOT / "tests" / "data" / "agent_mixed.pcapng"


def netmon(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netmon.app.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_agent_run_streams_a_capture_into_the_store(make_server, tmp_path: Path) -> None:
    server = make_server().start()
    enrolled = netmon(
        "agents",
        "--config",
        str(server.config),
        "add",
        "edge-1",
        "--branch",
        "paris",
        "--server-url",
        server.url,
        cwd=tmp_path,
    )
    assert enrolled.returncode == 0, enrolled.stderr
    agent_toml = tmp_path / "agent.toml"
    agent_toml.write_text(
        enrolled.stdout.replace("/var/lib/netmon-agent/spool", str(tmp_path / "spool"))
    )
    run = netmon("agent", "run", "--config", str(agent_toml), "--pcap", str(PCAP), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    replay = netmon(
        "agent", "replay", str(PCAP), "--config", str(agent_toml), "--no-progress", cwd=tmp_path
    )
    expected = sorted(
        line["community_id"]
        for line in map(json.loads, replay.stdout.splitlines())
        if line["type"] == "FlowObserved"
    )
    flows = [e for e in stored_events(server.data_dir) if isinstance(e, FlowObserved)]
    assert expected and sorted(flow.community_id for flow in flows) == expected
    assert {flow.branch for flow in flows} == {"paris"} and {f.agent_id for f in flows} == {
        "edge-1"
    }
    assert not list((tmp_path / "spool" / "batches").iterdir())
