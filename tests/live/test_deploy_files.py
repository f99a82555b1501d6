"""The deployment files agree with each other and with the code: replicas, secrets, limits."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from netmon.app.settings import IngestSettings
from tests.live.cluster import NGINX, NGINX_CONF, REPO_ROOT, render_nginx_conf
from tests.ports import free_port

UVICORN_PING_INTERVAL_S = 20  # uvicorn's ws_ping_interval default, used by `netmon serve`


def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def test_compose_runs_three_named_replicas_and_the_workers_on_one_volume() -> None:
    services = compose()["services"]
    assert {
        "nginx",
        "replica-1",
        "replica-2",
        "replica-3",
        "analyzer",
        "archiver",
    } <= services.keys()
    names = [services[f"replica-{n}"]["environment"]["NETMON_SERVER__REPLICA"] for n in (1, 2, 3)]
    assert len(set(names)) == 3
    assert services["analyzer"]["command"] == ["analyze"]
    assert services["archiver"]["command"] == ["archive", "run"]
    for name, service in services.items():
        assert "healthcheck" in service or name.startswith("replica"), name
        if name != "nginx":
            assert "netmon-data:/data" in service["volumes"] and service["env_file"] == ".env"
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]


def test_no_secret_is_baked_in() -> None:
    for name, service in compose()["services"].items():
        for key in service.get("environment", {}):
            assert "SECRET" not in key and "PASSWORD" not in key, (name, key)
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "SECRET" not in dockerfile.replace("No secret", "")
    assert len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) >= 3
    assert re.search(r"^USER netmon$", dockerfile, re.MULTILINE)
    example = (REPO_ROOT / ".env.example").read_text()
    secrets = re.findall(r"^(NETMON_\w*(?:SECRET|KEY)\w*)=(.*)$", example, re.MULTILINE)
    assert secrets and all(value == "" for _, value in secrets)


def test_nginx_limits_match_the_server() -> None:
    text = NGINX_CONF.read_text()
    ws = re.search(r"location /ws/ \{(.*?)\}", text, re.DOTALL)
    assert ws is not None
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", ws.group(1)).group(1))  # type: ignore[union-attr]
    assert read_timeout > 2 * UVICORN_PING_INTERVAL_S
    archive = re.search(r"location = /api/v1/ingest/archive \{(.*?)\}", text, re.DOTALL)
    assert archive is not None
    limit_mb = int(re.search(r"client_max_body_size (\d+)m;", archive.group(1)).group(1))  # type: ignore[union-attr]
    assert limit_mb * 1024 * 1024 >= IngestSettings().max_archive_bytes


def test_the_rendered_config_is_valid_for_nginx(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    (tmp_path / "cache").mkdir()
    conf.write_text(
        render_nginx_conf(
            NGINX_CONF.read_text(),
            listen_port=free_port(),
            upstream_ports=[1, 2, 3],
            prefix=tmp_path,
        )
    )
    result = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr
