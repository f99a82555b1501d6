"""Deployment files: systemd units, the Linux and Windows agent installers, docker compose."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from netmon.agent.config import load_agent_config
from netmon.app.cli import build_parser
from netmon.app.commands.agents import agent_toml
from tests.web.harness import NETMON, REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
INSTALL_SH = DEPLOY / "install.sh"


def unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def exec_args(path: Path) -> list[str]:
    """The netmon arguments of a unit's ExecStart (systemd's %i replaced by 1)."""
    argv = shlex.split(unit(path)["Service"]["ExecStart"].replace("%i", "1"))
    assert argv[0].endswith("/bin/netmon"), argv
    return argv[1:]


def test_there_is_a_unit_for_server_worker_archiver_and_agent() -> None:
    names = {path.name for path in UNITS}
    assert names == {
        "netmon-server@.service",
        "netmon-analyzer.service",
        "netmon-archiver.service",
        "netmon-agent.service",
    }


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_every_unit_runs_an_existing_cli_command_as_an_unprivileged_user(path: Path) -> None:
    build_parser().parse_args(exec_args(path))  # SystemExit on an unknown command or option
    service = unit(path)["Service"]
    assert service["User"] not in ("", "root")
    assert service["NoNewPrivileges"] == "yes"
    assert "NETMON_SERVER__SECRET_KEY" not in path.read_text()  # secrets: EnvironmentFile only


def test_the_agent_unit_grants_only_the_capture_capabilities() -> None:
    service = unit(DEPLOY / "systemd" / "netmon-agent.service")["Service"]
    assert service["User"] == "netmon-agent"
    assert set(service["AmbientCapabilities"].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert set(service["CapabilityBoundingSet"].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert service["StateDirectory"] == "netmon/spool"  # /var/lib/netmon/spool
    assert "/etc/netmon/agent.toml" in service["ExecStart"]


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    copies = []
    for path in UNITS:
        # verify checks that ExecStart's binary exists: point it at this venv's netmon.
        text = path.read_text().replace("/opt/netmon-agent/bin/netmon", str(NETMON))
        name = path.name.replace("@.", "@1.")
        copy = tmp_path / name
        copy.write_text(text.replace("/opt/netmon/bin/netmon", str(NETMON)))
        copies.append(str(copy))
    result = subprocess.run(
        ["systemd-analyze", "verify", *copies], capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    if "Failed to" in output and "bus" in output.lower():
        pytest.skip(f"systemd-analyze cannot run here: {output[:300]}")
    assert result.returncode == 0, output
    assert "Unknown key" not in output and "Unknown section" not in output, output


def test_shellcheck_passes_on_the_installer() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is missing: scripts/setup.sh installs it")
    result = subprocess.run(["shellcheck", str(INSTALL_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_install_sh_stages_a_private_config_spool_and_unit(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    config = tmp_path / "agent.toml"
    config.write_text(agent_toml("gw-1", "paris", key, "wss://netmon.example.org"))
    root = tmp_path / "root"
    result = subprocess.run(
        ["bash", str(INSTALL_SH), "--config", str(config), "--interface", "eth7",
         "--root", str(root), "--skip-package"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    installed = root / "etc/netmon/agent.toml"
    assert stat.S_IMODE(installed.stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "etc/netmon").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "var/lib/netmon/spool").stat().st_mode) == 0o750
    parsed = load_agent_config(installed)  # the agent accepts what the installer wrote
    assert parsed.interface == "eth7"
    assert parsed.transport.spool_dir == "/var/lib/netmon/spool"
    assert parsed.transport.key == key and parsed.agent_id == "gw-1"
    unit_file = root / "etc/systemd/system/netmon-agent.service"
    assert unit_file.read_text() == (DEPLOY / "systemd/netmon-agent.service").read_text()


def test_install_sh_refuses_a_config_without_a_key(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('agent_id = "gw-1"\nbranch = "paris"\n')
    result = subprocess.run(
        ["bash", str(INSTALL_SH), "--config", str(config), "--root", str(tmp_path / "r"),
         "--skip-package"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "has no [transport] key" in result.stderr
    assert not (tmp_path / "r").exists()  # nothing half-installed


def test_install_bat_checks_npcap_creates_programdata_and_registers_a_startup_task() -> None:
    raw = (DEPLOY / "install.bat").read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n"), "cmd.exe needs CRLF line endings"
    text = raw.decode("ascii")
    assert r"%SystemRoot%\System32\Npcap\wpcap.dll" in text and r"HKLM\SOFTWARE\Npcap" in text
    assert r'set "APPDIR=%ProgramData%\NetflowMonitor"' in text
    assert "/SC ONSTART /RU SYSTEM" in text and r'/TR "%APPDIR%\run-agent.cmd"' in text
    # Every goto has its label (cmd.exe only finds out when it gets there).
    labels = set(re.findall(r"^:(\w+)", text, re.MULTILINE))
    assert set(re.findall(r"goto (\w+)", text)) <= labels
    assert set(re.findall(r"call :(\w+)", text)) <= labels
    assert "icacls" in text and "/inheritance:r" in text  # the key is not world-readable
    # The command the task runs exists in the CLI.
    build_parser().parse_args(["agent", "run", "--config", "agent.toml"])


def test_compose_file_is_accepted_and_runs_existing_commands(tmp_path: Path) -> None:
    compose = REPO_ROOT / "docker-compose.yml"
    has_plugin = (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    )
    if has_plugin:
        work = tmp_path / "compose"
        work.mkdir()
        shutil.copy(compose, work / "docker-compose.yml")
        shutil.copy(REPO_ROOT / ".env.example", work / ".env")
        result = subprocess.run(
            ["docker", "compose", "config", "--quiet"], cwd=work, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
    services = yaml.safe_load(compose.read_text())["services"]
    for name, service in services.items():
        if name == "nginx":
            continue
        build_parser().parse_args(service["command"])  # SystemExit on an unknown command
        assert "healthcheck" in service or name.startswith("replica"), name
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "/readyz" in dockerfile  # replicas are healthy once store and SQLite are usable
