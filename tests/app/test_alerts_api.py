"""The alert API against a real server: lists and reads from the projection, actions appended to
the log and audited, branch scoping, and every refusal with its code."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from netmon.storage.contract.events import AlertAcknowledged, AlertNoteAdded
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from tests.app.alert_events import opened, updated
from tests.app.auth.live import LiveServer, live_server
from tests.polling import wait_until

NOW = time.time()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("alerts-api")) as running:
        with EventLog(running.settings.data_dir, "worker", durability="none") as worker:
            worker.append(
                [
                    opened(NOW - 300, "north-scan", branch="north", severity="medium", count=40),
                    updated(NOW - 200, "north-scan", 1, 542, branch="north", severity="high"),
                    opened(
                        NOW - 250,
                        "north-guess",
                        branch="north",
                        rule="password_guessing",
                        entity="203.0.113.9",
                        severity="low",
                    ),
                    opened(NOW - 100, "south-scan", branch="south", entity="192.0.2.77"),
                ]
            )
        wait_until(lambda: _ids(running, "admin") >= {"north-scan", "south-scan"}, 20, "the store")
        yield running


def _ids(server: LiveServer, who: str, query: str = "") -> set[str]:
    answer = httpx.get(f"{server.url}/api/v1/alerts{query}", headers=server.bearer(who), timeout=10)
    return {alert["alert_id"] for alert in answer.json().get("alerts", [])}


def call(server: LiveServer, who: str, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(
        method, f"{server.url}{path}", headers=server.bearer(who), json=body, timeout=10
    )


def test_lists_are_scoped_filtered_sorted_and_counted(server: LiveServer) -> None:
    assert _ids(server, "admin") == {"north-scan", "north-guess", "south-scan"}
    assert _ids(server, "viewer") == {"north-scan", "north-guess"}
    assert _ids(server, "analyst_south", "?branch=north") == set()
    answer = call(server, "viewer", "GET", "/api/v1/alerts?severity=high&sort=count").json()
    (scan,) = answer["alerts"]
    assert (scan["alert_id"], scan["severity"], scan["evidence"]["count"]) == (
        "north-scan",
        "high",
        542,
    )
    assert scan["shown_state"] == "open" and "facts" not in scan
    assert answer["counts"]["by_state"]["open"] == 2 and answer["ready"] is True
    assert answer["next_cursor"] is None
    first = call(server, "admin", "GET", "/api/v1/alerts?limit=1&sort=last_seen").json()
    assert [a["alert_id"] for a in first["alerts"]] == ["south-scan"]
    rest = call(
        server,
        "admin",
        "GET",
        f"/api/v1/alerts?limit=5&sort=last_seen&cursor={first['next_cursor']}",
    )
    assert [a["alert_id"] for a in rest.json()["alerts"]] == ["north-scan", "north-guess"]


@pytest.mark.parametrize(
    "query", ["?severity=urgent", "?limit=9999", "?cursor=zzz", "?sort=ts", "?since=monday"]
)
def test_bad_parameters_are_400_with_the_reason(server: LiveServer, query: str) -> None:
    answer = call(server, "viewer", "GET", f"/api/v1/alerts{query}")
    assert answer.status_code == 400 and answer.json()["error"] == "bad_parameter"


def test_one_alert_and_the_404s(server: LiveServer) -> None:
    alert = call(server, "viewer", "GET", "/api/v1/alerts/north-scan").json()
    assert alert["title"].startswith("198.51.100.66") and alert["escalations"][0]["by"] == "rule"
    for who, alert_id in (("admin", "no-such-alert"), ("analyst_south", "north-scan")):
        answer = call(server, who, "GET", f"/api/v1/alerts/{alert_id}")
        assert (answer.status_code, answer.json()["error"]) == (404, "unknown_alert")


def test_the_lifecycle_through_the_api_is_appended_and_audited(server: LiveServer) -> None:
    path = "/api/v1/alerts/north-guess"
    acked = call(server, "analyst", "POST", f"{path}/acknowledge", {"note": "mine"})
    assert acked.status_code == 200, acked.text
    assert (acked.json()["shown_state"], acked.json()["acknowledged_by"]) == (
        "acknowledged",
        "analyst",
    )
    again = call(server, "analyst", "POST", f"{path}/acknowledge", {})
    assert (again.status_code, again.json()["error"]) == (409, "not_open")
    escalated = call(
        server, "analyst", "POST", f"{path}/escalate", {"severity": "high", "note": "2 sites"}
    )
    assert escalated.json()["severity"] == "high"
    assigned = call(server, "analyst", "POST", f"{path}/assign", {"assignee": "admin"})
    assert assigned.json()["assignee"] == "admin"
    resolved = call(server, "analyst", "POST", f"{path}/resolve", {"note": "blocked"})
    assert resolved.json()["shown_state"] == "resolved"
    # The read right after the action sees it (this replica waited for its store).
    assert call(server, "viewer", "GET", path).json()["resolution"] == "blocked"
    late = call(server, "analyst", "POST", f"{path}/escalate", {"severity": "critical"})
    assert (late.status_code, late.json()["error"]) == (409, "alert_resolved")
    noted = call(server, "analyst", "POST", f"{path}/note", {"note": "ticket 4711 closed"})
    assert noted.status_code == 200 and noted.json()["notes"][-1]["text"] == "ticket 4711 closed"
    logged = [
        (type(e).__name__, e.by)
        for e in EventLogReader(server.settings.data_dir).scan(None, None)
        if getattr(e, "alert_id", "") == "north-guess" and not type(e).__name__.endswith("Opened")
    ]
    assert logged == [
        ("AlertAcknowledged", "analyst"),
        ("AlertEscalated", "analyst"),
        ("AlertAssigned", "analyst"),
        ("AlertResolved", "analyst"),
        ("AlertNoteAdded", "analyst"),
    ]
    audit = call(server, "admin", "GET", "/api/v1/audit?target=north-guess").json()["records"]
    assert [r["action"] for r in audit] == [
        "alert.AlertAcknowledged",
        "alert.AlertEscalated",
        "alert.AlertAssigned",
        "alert.AlertResolved",
        "alert.AlertNoteAdded",
    ]


@pytest.mark.parametrize(
    ("who", "action", "body", "status", "code"),
    [
        ("viewer", "acknowledge", {}, 403, "forbidden"),
        ("analyst_south", "acknowledge", {}, 404, "unknown_alert"),
        ("analyst", "escalate", {"severity": "urgent"}, 422, "invalid"),
        ("analyst", "escalate", {"severity": "low"}, 422, "severity_lower"),
        ("analyst", "assign", {"assignee": "nobody-here"}, 422, "unknown_user"),
        ("analyst", "note", {"note": " "}, 422, "invalid"),
        ("analyst", "note", {"note": "x" * 2001}, 422, "invalid"),
        ("analyst", "acknowledge", {"notes": "typo"}, 422, "invalid"),
    ],
)
def test_refused_actions_have_their_code(
    server: LiveServer, who: str, action: str, body: dict[str, str], status: int, code: str
) -> None:
    answer = call(server, who, "POST", f"/api/v1/alerts/north-scan/{action}", body)
    assert (answer.status_code, answer.json()["error"]) == (status, code)


def test_an_unreadable_body_is_400(server: LiveServer) -> None:
    answer = httpx.post(
        f"{server.url}/api/v1/alerts/north-scan/acknowledge",
        headers={**server.bearer("analyst"), "content-type": "application/json"},
        content=b"{not json",
        timeout=10,
    )
    assert (answer.status_code, answer.json()["error"]) == (400, "bad_request")


def test_suppression_needs_a_reason_a_future_end_and_an_own_branch(server: LiveServer) -> None:
    until = time.time() + 3600
    base = {"rule": "port_scan", "entity": "*", "until": until}
    refusals = [
        ("analyst", {"rule": "port_scan", "entity": "*", "until": until}, 422, "invalid"),
        ("analyst", {**base, "reason": "  "}, 422, "reason_missing"),
        ("analyst", {**base, "reason": "pentest", "until": time.time() - 1}, 422, "until_past"),
        ("admin", {**base, "reason": "pentest"}, 422, "branch_required"),
        ("analyst_south", {**base, "reason": "pentest", "branch": "north"}, 404, "unknown_branch"),
        ("viewer", {**base, "reason": "pentest"}, 403, "forbidden"),
    ]
    for who, body, status, code in refusals:
        answer = call(server, who, "POST", "/api/v1/alerts/suppress", body)
        assert (answer.status_code, answer.json()["error"]) == (status, code), (who, body)
    done = call(server, "analyst", "POST", "/api/v1/alerts/suppress", {**base, "reason": "pentest"})
    assert done.status_code == 201 and done.json()["branch"] == "north"
    assert _ids(server, "admin", "?state=suppressed") == {"north-scan"}
    assert (
        call(server, "viewer", "GET", "/api/v1/alerts/north-scan").json()["shown_state"]
        == "suppressed"
    )


def test_a_browser_session_needs_its_csrf_token(server: LiveServer) -> None:
    client, csrf = server.login("analyst")
    try:
        path = "/api/v1/alerts/north-scan/note"
        refused = client.post(path, json={"note": "from the page"})
        assert refused.status_code == 403
        accepted = client.post(path, json={"note": "from the page"}, headers={"X-CSRF-Token": csrf})
        assert accepted.status_code == 200, accepted.text
    finally:
        client.close()
    notes = [
        e
        for e in EventLogReader(server.settings.data_dir).scan(None, None)
        if isinstance(e, AlertNoteAdded) and e.alert_id == "north-scan"
    ]
    assert [n.note for n in notes] == ["from the page"]
    assert not any(
        isinstance(e, AlertAcknowledged) and e.alert_id == "north-scan"
        for e in EventLogReader(server.settings.data_dir).scan(None, None)
    )
