"""Alert rules: critical detections, window rules, dedup, cooldown, suppression, recovery."""

from __future__ import annotations

import pytest

from netmon.app.analysis.rules import RECOVERED_BY, AlertEngine, suppression
from netmon.app.settings import AnalysisSettings
from netmon.storage.contract.events import (
    AlertAcknowledged,
    AlertOpened,
    AlertResolved,
    AlertUpdated,
    Detection,
    DetectionRaised,
    WindowSummarized,
    new_event_id,
)

T = 1_800_000_000.0
SETTINGS = AnalysisSettings(
    rule_min_flows=20,
    rule_attack_share=0.2,
    rule_unknown_share=0.3,
    rule_surge_factor=5.0,
    rule_surge_history=4,
    alert_cooldown_s=600.0,
)


def detection(
    src: str, ts: float, severity: str = "critical", dst: str = "10.0.0.1"
) -> DetectionRaised:
    return DetectionRaised(
        id=new_event_id(ts),
        ts=ts,
        branch="b",
        agent_id="a",
        flow_id=new_event_id(ts),  # each detection is about its own flow
        src_ip=src,
        src_port=5000,
        dst_ip=dst,
        dst_port=23,
        protocol=6,
        severity=severity,  # type: ignore[arg-type]
        detection=Detection(
            kind="critical_port", detail="Telnet", severity=severity, rule="telnet"
        ),  # type: ignore[arg-type]
    )


def window(start: float, flows: int, attack: int = 0, unknown: int = 0) -> WindowSummarized:
    labels = {"benign": flows - attack - unknown, "attack": attack, "unknown": unknown}
    return WindowSummarized(
        id=new_event_id(start),
        ts=start + 300,
        branch="b",
        window_start=start,
        window_end=start + 300,
        flows=flows,
        labels={k: v for k, v in labels.items() if v},
    )


def test_critical_port_use_is_one_alert_per_server_gathering_its_clients() -> None:
    engine = AlertEngine(SETTINGS)
    first = engine.on_detection(detection("10.0.0.9", T))
    assert len(first) == 1 and isinstance(first[0], AlertOpened)
    assert first[0].severity == "critical" and first[0].entity == "10.0.0.1"
    more = engine.on_detection(detection("10.0.0.8", T + 1))  # another client, same server
    assert [type(e) for e in more] == [AlertUpdated] and more[0].evidence.count == 2
    assert more[0].evidence.sources == ("10.0.0.8", "10.0.0.9")
    assert "Telnet to 10.0.0.1 from 2 sources" in more[0].title
    assert len(engine.on_detection(detection("10.0.0.8", T + 2, dst="10.0.0.2"))) == 1
    assert engine.on_detection(detection("10.0.0.7", T + 3, severity="high")) == []


def test_cooldown_after_resolution_then_reopens() -> None:
    engine = AlertEngine(SETTINGS)
    [opened] = engine.on_detection(detection("10.0.0.9", T))
    engine.apply(
        AlertResolved(id=new_event_id(), ts=T + 10, branch="b", alert_id=opened.alert_id, by="ana")
    )
    assert engine.on_detection(detection("10.0.0.9", T + 100)) == []  # cooling down
    again = engine.on_detection(detection("10.0.0.9", T + 700))
    assert len(again) == 1 and again[0].alert_id != opened.alert_id


def test_suppression_silences_until_it_expires() -> None:
    engine = AlertEngine(SETTINGS)
    engine.apply(
        suppression("detection:critical_port", "*", T + 500, "ana", "pentest week", "b", T)
    )
    assert engine.on_detection(detection("10.0.0.9", T + 10)) == []
    assert len(engine.on_detection(detection("10.0.0.9", T + 600))) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reason": "  "}, "needs a reason"),
        ({"until": T - 1}, "expire in the future"),
        ({"entity": ""}, "names a rule and an entity"),
    ],
)
def test_bad_suppressions_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "rule": "r",
        "entity": "e",
        "until": T + 60,
        "by": "ana",
        "reason": "maintenance",
        "branch": "b",
        "now": T,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        suppression(**args)  # type: ignore[arg-type]


def test_window_rules_open_and_recover() -> None:
    engine = AlertEngine(SETTINGS)
    opened = engine.on_window(window(T, 100, attack=30, unknown=35))
    assert sorted(a.rule for a in opened if isinstance(a, AlertOpened)) == [
        "attack_share",
        "unknown_share",
    ]
    assert {a.entity for a in opened} == {"branch:b"}
    assert engine.on_window(window(T + 300, 100, attack=25, unknown=40)) == []  # still open
    recovered = engine.on_window(window(T + 600, 100, attack=1))
    assert [(type(e), e.by) for e in recovered] == [(AlertResolved, RECOVERED_BY)] * 2  # type: ignore[union-attr]


def test_small_windows_do_not_fire_share_rules() -> None:
    engine = AlertEngine(SETTINGS)
    assert engine.on_window(window(T, 10, attack=10)) == []


def test_flow_surge_against_recent_windows() -> None:
    engine = AlertEngine(SETTINGS)
    for i in range(3):
        assert engine.on_window(window(T + 300 * i, 40)) == []
    surge = engine.on_window(window(T + 900, 400))
    assert [a.rule for a in surge if isinstance(a, AlertOpened)] == ["flow_surge"]


def test_alert_ids_are_stable_across_replays() -> None:
    w = window(T, 100, attack=50)
    first = AlertEngine(SETTINGS).on_window(w)
    replay = AlertEngine(SETTINGS).on_window(window(T, 100, attack=50))  # other window event id
    assert [a.alert_id for a in first] == [a.alert_id for a in replay]  # type: ignore[union-attr]


def test_acknowledgement_is_remembered() -> None:
    engine = AlertEngine(SETTINGS)
    [opened] = engine.on_detection(detection("10.0.0.9", T))
    engine.apply(
        AlertAcknowledged(
            id=new_event_id(), ts=T + 5, branch="b", alert_id=opened.alert_id, by="ana"
        )
    )
    assert next(iter(engine.state.open.values())).acknowledged_by == "ana"
