"""Windows and Model pages over the analysis worker's real output formats."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from netmon.app.analysis.training import evaluate, save_model
from netmon.storage.contract.events import WindowSummarized, new_event_id
from tests.web.flows import XSS_DOMAIN, flow, store


def window(end: float, *, summary: str, evidence: tuple[str, ...] = ()) -> WindowSummarized:
    return WindowSummarized(
        id=new_event_id(end),
        ts=end,
        branch="hq",
        window_start=end - 300,
        window_end=end,
        flows=1234,
        labels={"benign": 1200, "attack": 34},
        attack_types={"portscan": 34},
        critical_detections=2,
        evidence_ids=evidence,
        summary=summary,
        summary_fallback_reason="no provider configured",
    )


async def test_windows_show_summaries_newest_first_escaped(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    now = time.time()
    evidence = flow(now - 400)
    store(
        data_dir,
        [
            evidence,
            window(now - 600, summary="older window"),
            window(now - 300, summary=f"scan from {XSS_DOMAIN}", evidence=(evidence.id,)),
            window(now - 30 * 3600, summary="too old to show"),
        ],
    )
    page = await client.get("/windows")
    assert page.status_code == 200
    text = page.text
    assert text.index("scan from") < text.index("older window")
    assert "too old to show" not in text
    assert "&lt;img src=x" in text and "<img" not in text
    assert f'href="/events/{evidence.id}"' in text
    assert "portscan 34" in text and "no provider configured" in text


def _train(path: Path) -> str:
    rng = np.random.default_rng(1)
    x = rng.random((40, 3))
    y = np.array(["benign", "portscan"] * 20)
    model = DecisionTreeClassifier(random_state=1).fit(x, y)
    return save_model(model, evaluate(model, x, y), path, source="test", labels=y.tolist())


async def test_model_page_shows_the_saved_evaluation(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    empty = await client.get("/model")
    assert "No model evaluation yet" in empty.text
    version = _train(data_dir / "analysis" / "model.joblib")
    page = await client.get("/model")
    assert version in page.text
    assert 'id="scores-fine"' in page.text and 'id="confusion-coarse"' in page.text
    assert "portscan" in page.text


async def test_damaged_evaluation_is_reported_and_logged(
    client: httpx.AsyncClient, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    report = data_dir / "analysis" / "model.eval.json"
    report.parent.mkdir(parents=True)
    report.write_text("{not json")
    with caplog.at_level(logging.ERROR, logger="netmon.web.analysis_pages"):
        page = await client.get("/model")
    assert page.status_code == 200 and "could not be read" in page.text
    assert "model.eval.json" in caplog.text
    assert report.read_text() == "{not json"  # nothing stored is touched


async def test_model_page_shows_each_evaluation_apart_held_out_first(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    path = data_dir / "analysis" / "model.joblib"
    _train(path)
    report_path = path.with_suffix(".eval.json")
    report = json.loads(report_path.read_text())
    held_out = {
        **report,
        "key": "real-heldout",
        "title": "Held-out real capture",
        "trained_on": False,
    }
    row = {"truth": "benign", "flows": 10, "attack": 0, "benign": 7, "unknown": 3, "right": 0.7}
    held_out["verdicts"] = {
        "threshold": 0.9,
        "by_class": {"benign": row},
        "by_scenario": {"monitoring": row},
    }
    split = {**report, "key": "generated", "title": "Generated corpus", "trained_on": True}
    report_path.write_text(json.dumps({**report, "evaluations": [held_out, split]}))
    text = (await client.get("/model")).text
    assert text.index("Held-out real capture") < text.index("Generated corpus")
    assert "never trained on" in text and "no evidence" in text
    assert 'id="real-heldout-verdicts-scenario"' in text and "monitoring" in text
    assert 'id="generated-confusion-fine"' in text
