"""``netmon agents list`` says what each agent reported of its domain policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from netmon.app.cli import main
from netmon.app.projections.agents import NO_DOMAIN_POLICY
from netmon.app.projections.runner import ProjectionRunner, snapshot_path
from netmon.storage.agents import AgentRegistry
from tests.live.factory import flow, heartbeat

START = 1_800_000_000.0


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A server config with three enrolled agents; edge-1 reported no policy, edge-2 five
    domains, edge-3 only flows (no heartbeat yet)."""
    secret = Fernet.generate_key().decode()
    data = tmp_path / "data"
    path = tmp_path / "netmon.toml"
    path.write_text(f'[store]\ndata_dir = "{data}"\n[server]\nsecret_key = "{secret}"\n')
    registry = AgentRegistry(data, secret)
    for name in ("edge-1", "edge-2", "edge-3"):
        registry.add(name, "paris")
    runner = ProjectionRunner(snapshot_path(data, "replica-1"))
    runner.apply(
        [
            heartbeat(START, "paris", "edge-1", domain_rules=0),
            heartbeat(START, "paris", "edge-2", domain_rules=-1),
            heartbeat(START + 1, "paris", "edge-2", domain_rules=5),  # the newest counts
            flow(START, "paris", agent_id="edge-3"),
        ],
        {},
    )
    runner.save()
    return path


def _listing(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    assert main(["agents", "--config", str(config), "list"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    return {
        agent.split()[0]: policy.strip()
        for agent, policy in zip(lines[::2], lines[1::2], strict=True)
    }


def test_list_shows_each_agents_domain_policy(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _listing(config, capsys) == {
        "edge-1": f"domain policy: {NO_DOMAIN_POLICY}",
        "edge-2": "domain policy: 5 approved and denied domains",
        "edge-3": "domain policy: not reported (no heartbeat yet, or an agent older than this "
        "server)",
    }
    assert "docs/agent.md#domain-policy" in NO_DOMAIN_POLICY


def test_an_unreadable_snapshot_is_said_once_and_changes_nothing(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = snapshot_path(tmp_path / "data", "replica-1")
    snapshot.write_bytes(b"\xc1 not msgpack")
    listing = _listing(config, capsys)
    assert set(listing.values()) == {
        "domain policy: not reported (no heartbeat yet, or an agent older than this server)"
    }
    assert main(["agents", "--config", str(config), "list"]) == 0
    err = capsys.readouterr().err
    assert err.count("projections at") == 1 and "not read" in err and "Traceback" not in err
    assert snapshot.read_bytes() == b"\xc1 not msgpack"  # left as it was: the server's file
