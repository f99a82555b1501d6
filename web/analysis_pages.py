"""Pages over the analysis worker's output: 5-minute window summaries and the model evaluation.

Windows are ``WindowSummarized`` events in the log (searched by type: the sidecar indexes skip
segments without any); the model evaluation is the JSON the trainer saves beside the model
(``model.eval.json``): the held-out real capture, never trained on, first, then the held-out
quarter of each training source. Both pages show an empty state until the worker has produced
them.
"""

from __future__ import annotations

import heapq
import json
import logging
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from netmon.app.state import server_state
from netmon.storage.contract.events import WindowSummarized
from netmon.storage.queries import Query
from netmon.web.principals import allowed_branches
from netmon.web.state import web_state

log = logging.getLogger(__name__)

WINDOW_HOURS = 24
MAX_WINDOWS = 100


def recent_windows(reader: Any, now: float, branches: list[str] | None) -> list[WindowSummarized]:
    """The newest window summaries of the last WINDOW_HOURS hours, newest first."""
    query = Query(
        types=("WindowSummarized",),
        start=now - WINDOW_HOURS * 3600,
        end=now + 60,
        branches=None if branches is None else tuple(branches),
    )
    windows = reader.search(query)  # sidecar indexes skip segments holding no summary
    return heapq.nlargest(MAX_WINDOWS, windows, key=lambda w: (w.window_end, w.branch))


async def windows_page(request: Request) -> Response:
    """GET /windows: what each branch's last 5-minute windows held, and their summaries."""
    web = web_state(request)
    branches = await allowed_branches(request)
    windows = await anyio.to_thread.run_sync(
        recent_windows, web.events.new_reader(), time.time(), branches
    )
    return web.renderer.page(
        request, "windows.html", active="windows", available=True, windows=windows
    )


def model_file(request: Request) -> Path:
    """The classifier's model file (the analysis settings' path, or its default)."""
    settings = server_state(request).settings
    configured = settings.analysis.model_path
    return Path(configured) if configured else settings.data_dir / "analysis" / "model.joblib"


def load_evaluation(path: Path) -> dict[str, Any] | None:
    """The saved evaluation, or None when there is none; a damaged file is logged, not fatal."""
    report = path.with_suffix(".eval.json")
    try:
        data: dict[str, Any] = json.loads(report.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        log.error("model evaluation %s unreadable: %s", report, error)
        return {"error": f"{report.name} could not be read: {error}"}
    return data


class Evaluation(msgspec.Struct, frozen=True):
    """One scored set of flows as the Model page shows it."""

    key: str  # element ids: "" for a report without separate evaluations
    title: str
    trained_on: bool  # False: never trained on (the honest number)
    test_rows: int
    levels: tuple[tuple[str, str, dict[str, Any]], ...]  # (level, title, scores)
    verdicts: dict[str, Any] | None


_LEVELS = (("coarse", "Benign vs attack"), ("fine", "Per class"))


def evaluations_of(report: dict[str, Any]) -> list[Evaluation]:
    """The report's evaluations in the order saved (the held-out real capture first); a report
    from before separate evaluations is one evaluation of its held-out quarter."""
    parts = report.get("evaluations")
    if not isinstance(parts, list) or not parts:
        title = "Held-out quarter of the training rows"
        parts = [{**report, "key": "", "title": title, "trained_on": True}]
    return [
        Evaluation(
            key=str(part.get("key", "")),
            title=str(part.get("title", "")),
            trained_on=bool(part.get("trained_on", True)),
            test_rows=int(part.get("test_rows") or 0),
            levels=tuple(
                (level, title, part[level])
                for level, title in _LEVELS
                if isinstance(part.get(level), dict)
            ),
            verdicts=part.get("verdicts") if isinstance(part.get("verdicts"), dict) else None,
        )
        for part in parts
        if isinstance(part, dict)
    ]


async def model_page(request: Request) -> Response:
    """GET /model: per evaluation (held-out real capture, training splits) per-class precision,
    recall, F1, the confusion matrices and the verdicts the worker would give."""
    path = model_file(request)
    report = await anyio.to_thread.run_sync(load_evaluation, path)
    evaluations = evaluations_of(report) if report and "error" not in report else []
    return web_state(request).renderer.page(
        request,
        "model.html",
        active="model",
        available=True,
        report=report,
        evaluations=evaluations,
        real=any(not e.trained_on for e in evaluations),
        model_path=str(path),
    )
