"""OpenAPI document, /docs, /metrics and the health probes against a real ``netmon serve``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from netmon.app.metrics import record_archive_run
from netmon.app.openapi import OPENAPI_PATH, documented_routes
from netmon.app.settings import ServerSettings, Settings, StoreSettings
from netmon.web.factory import create_app
from tests.polling import wait_until
from tests.web.harness import NETMON, NetmonServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetmonServer]:
    running = NetmonServer(tmp_path_factory.mktemp("ship-api"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def scrape(server: NetmonServer) -> dict[str, float]:
    """Every sample of /metrics, parsed by prometheus_client's own text parser."""
    answer = httpx.get(server.url + "/metrics", timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_openapi_document_validates_and_lists_every_json_route(server: NetmonServer) -> None:
    answer = httpx.get(server.url + OPENAPI_PATH, timeout=5)
    assert answer.status_code == 200
    document = answer.json()
    validate(document)  # OpenAPI 3.1 schema, raises on any violation
    assert document["openapi"].startswith("3.1")
    app = create_app(Settings(store=StoreSettings(data_dir=str(server.data_dir))))
    routes = documented_routes(app.routes)
    assert len(routes) >= 20
    for path, method, route in routes:
        operation = document["paths"].get(path, {}).get(method.lower())
        assert operation is not None, f"{method} {path} is not in the OpenAPI document"
        assert operation["x-netmon-access"] == route.access
    # Every /api route of the router is covered, not only those the walker picked.
    api = {re.sub(r":\w+\}", "}", r.path) for r in app.routes if r.path.startswith("/api/")}
    assert api <= set(document["paths"])
    schemas = document["components"]["schemas"]
    new_user = schemas["NewUser"]  # the handler's own msgspec Struct
    assert {"username", "role"} <= set(new_user["required"])


def test_docs_page_loads_pinned_swagger_ui_with_integrity(server: NetmonServer) -> None:
    page = httpx.get(server.url + "/docs", timeout=5)
    assert page.status_code == 200
    assert "script-src 'self' 'sha256-" in page.headers["content-security-policy"]
    tag = r'<script src="(/static/swagger-ui\.js[^"]*)" integrity="(sha384-[^"]+)"'
    script = re.search(tag, page.text)
    assert script is not None, page.text[:500]
    assert OPENAPI_PATH in page.text
    bundle = httpx.get(server.url + script.group(1), timeout=10)
    assert bundle.status_code == 200 and b"SwaggerUIBundle" in bundle.content


def test_metrics_parse_and_the_ingest_counter_rises_while_an_agent_streams(
    server: NetmonServer, tmp_path: Path
) -> None:
    before = scrape(server)
    assert before["netmon_ingest_events_total"] == 0
    assert before["netmon_agents_connected"] == 0
    enrolled = subprocess.run(
        [str(NETMON), "agents", "add", "metrics-agent", "--branch", "hq",
         "--server-url", server.url.replace("http", "ws")],
        env=server.env, cwd=server.workdir, capture_output=True, text=True, check=True,
    )  # fmt: skip
    config = tomllib.loads(enrolled.stdout)
    agent_toml = tmp_path / "agent.toml"
    agent_toml.write_text(
        enrolled.stdout.replace(config["transport"]["spool_dir"], str(tmp_path / "spool"))
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "netmon.app.demo.agent"]
        + ["--config", str(agent_toml), "--interval", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = wait_until(
            lambda: (s := scrape(server))["netmon_ingest_events_total"] > 0 and s,
            30, "the ingest counter to rise", interval=0.2,
        )  # fmt: skip
        stored = first["netmon_ingest_events_total"]
        wait_until(
            lambda: scrape(server)["netmon_ingest_events_total"] > stored,
            30, "the ingest counter to rise again while the agent streams", interval=0.2,
        )  # fmt: skip
        later = wait_until(
            lambda: (s := scrape(server))["netmon_agents_connected"] == 1 and s,
            30, "the agent to count as connected", interval=0.2,
        )  # fmt: skip
    finally:
        agent.send_signal(signal.SIGTERM)
        _, errors = agent.communicate(timeout=30)
    assert agent.returncode == 0, errors[-2000:]
    assert later["netmon_ingest_bytes_total"] > 0
    assert later["netmon_ingest_batches_total"] >= 1
    assert "netmon_agent_spool_batches{agent=metrics-agent}" in later
    assert later["netmon_projection_lag_bytes"] >= 0
    assert later["netmon_projector_lag_bytes"] >= 0
    assert later["netmon_projector_restarts_total"] == 0
    assert later["netmon_live_clients"] == 0


def test_archive_runs_recorded_by_the_manager_show_in_metrics(server: NetmonServer) -> None:
    before = scrape(server)["netmon_archive_runs_total"]
    record_archive_run(server.data_dir, ok=True, events_archived=5)
    record_archive_run(server.data_dir, ok=False)
    after = scrape(server)
    assert after["netmon_archive_runs_total"] == before + 2
    assert after["netmon_archive_runs_failed_total"] >= 1
    assert after["netmon_archive_last_run_timestamp_seconds"] > 0


def test_a_damaged_archive_runs_file_is_logged_and_counts_as_none(
    server: NetmonServer, caplog: pytest.LogCaptureFixture
) -> None:
    from netmon.app.metrics import ARCHIVE_RUNS_FILE, read_archive_runs

    path = server.data_dir / ARCHIVE_RUNS_FILE
    saved = path.read_bytes() if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    try:
        assert read_archive_runs(server.data_dir).runs == 0
        assert "cannot read" in caplog.text
        assert scrape(server)["netmon_archive_runs_total"] == 0  # the scrape still answers
    finally:
        if saved is not None:
            path.write_bytes(saved)


def test_health_and_readiness_of_a_running_replica(server: NetmonServer) -> None:
    health = httpx.get(server.url + "/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["replica"] == "web-test"
    ready = httpx.get(server.url + "/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "replica": "web-test", "checks": ["store", "sqlite"]}


# --- In-process: access to /metrics and readiness without the lifespan's resources ----------


def app_settings(tmp_path: Path, token: str = "") -> Settings:
    return Settings(
        store=StoreSettings(data_dir=str(tmp_path)),
        server=ServerSettings(replica="unit", metrics_token=token),
    )


@pytest.fixture
async def remote(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client from a non-loopback address, to an app with a metrics token."""
    app = create_app(app_settings(tmp_path, token="s3cret-scrape-token-0123456789"))
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://netmon") as client:
        yield client


async def test_metrics_need_the_bearer_token_when_one_is_set(
    remote: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    refused = await remote.get("/metrics")
    assert refused.status_code == 403
    assert "203.0.113.9" in caplog.text
    wrong = await remote.get("/metrics", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 403
    good = await remote.get(
        "/metrics", headers={"authorization": "Bearer s3cret-scrape-token-0123456789"}
    )
    assert good.status_code == 200
    names = {family.name for family in text_string_to_metric_families(good.text)}
    assert {"netmon_ingest_events", "netmon_live_clients", "netmon_archive_runs"} <= names


async def test_without_a_token_only_loopback_may_scrape(tmp_path: Path) -> None:
    app = create_app(app_settings(tmp_path))
    for client, status in ((("203.0.113.9", 1), 403), (("127.0.0.1", 1), 200), (("::1", 1), 200)):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://netmon") as http:
            assert (await http.get("/metrics")).status_code == status, client
            # Through a proxy (nginx sets X-Forwarded-For) even a loopback peer needs the token.
            proxied = await http.get("/metrics", headers={"x-forwarded-for": "127.0.0.1"})
            assert proxied.status_code == 403, client


async def test_readyz_is_503_naming_the_store_and_database_when_they_are_not_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(app_settings(tmp_path))  # no lifespan: nothing opened
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://netmon") as http:
        answer = await http.get("/readyz")
        live = await http.get("/healthz")
    assert answer.status_code == 503
    assert set(answer.json()["failed"]) == {"store", "sqlite"}
    assert "not ready" in caplog.text
    assert live.status_code == 200


def test_readyz_is_503_when_the_events_directory_is_gone(tmp_path: Path) -> None:
    server = NetmonServer(tmp_path)
    server.start()
    try:
        (server.data_dir / "events").rename(server.data_dir / "events-moved")
        answer = httpx.get(server.url + "/readyz", timeout=5)
        assert answer.status_code == 503
        assert "store" in answer.json()["failed"]
        assert "not ready" in server.log()
    finally:
        server.stop()
    assert os.path.isdir(server.data_dir / "events-moved")


def test_real_answers_match_the_documented_schemas(server: NetmonServer) -> None:
    from jsonschema import Draft202012Validator

    document = httpx.get(server.url + OPENAPI_PATH, timeout=5).json()

    def check(path: str, method: str, answer: httpx.Response) -> None:
        responses = document["paths"][path][method]["responses"]
        entry = responses[str(answer.status_code)]
        schema = entry["content"]["application/json"]["schema"]
        validator = Draft202012Validator({**schema, "components": document["components"]})
        errors = [error.message for error in validator.iter_errors(answer.json())]
        assert errors == [], f"{method.upper()} {path} {answer.status_code}: {errors}"

    password = wait_until(server.admin_password, 10, "the first admin's password")
    token = httpx.post(
        server.url + "/api/v1/auth/token",
        data={"grant_type": "password", "username": "admin", "password": password},
        timeout=30,
    )
    check("/api/v1/auth/token", "post", token)
    auth = {"authorization": f"Bearer {token.json()['access_token']}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as api:
        for path in (
            "/healthz", "/readyz", "/api/v1/auth/me", "/api/v1/users", "/api/v1/audit",
            "/api/v1/summary", "/api/v1/summary/top", "/api/v1/summary/agents",
            "/api/v1/archives",
        ):  # fmt: skip
            answer = api.get(path)
            assert answer.status_code == 200, (path, answer.text)
            check(path, "get", answer)
        created = api.post("/api/v1/users", json={"username": "schema-check", "role": "viewer"})
        check("/api/v1/users", "post", created)
        user = f"/api/v1/users/{created.json()['id']}"
        check("/api/v1/users/{user_id}", "get", api.get(user))
        changed = api.patch(user, json={"display_name": "Schema"})
        check("/api/v1/users/{user_id}", "patch", changed)
        check("/api/v1/users/{user_id}/password", "post", api.post(user + "/password", json={}))
        bad = api.get("/api/v1/summary/top?hours=0")  # documented 400 with the error shape
        assert bad.status_code == 400
        check("/api/v1/summary/top", "get", bad)
