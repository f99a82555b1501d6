"""The worker over a real event log: classification, windows, alerts, and kill -9 restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from netmon.app.analysis.classifier import Classifier
from netmon.app.analysis.summaries import Summarizer
from netmon.app.analysis.worker import AnalysisWorker, load_checkpoint
from netmon.app.settings import load_settings
from netmon.storage.contract.events import (
    AlertOpened,
    AlertUpdated,
    Detection,
    DetectionRaised,
    FlowClassified,
    FlowObserved,
    WindowSummarized,
    new_event_id,
)
from netmon.storage.eventlog import EventLog
from netmon.storage.log_reader import EventLogReader
from netmon.storage.positions import Position
from tests.factories import tcp_flow
from tests.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
T0 = 1_790_000_100.0  # a window boundary (divisible by 300)


def restamp(
    flows: list[FlowObserved], start: float, span: float, branch: str
) -> list[FlowObserved]:
    """Copies of flows with fresh ids, spread over [start, start + span), on one branch."""
    step = span / max(len(flows), 1)
    return [
        msgspec.structs.replace(
            f, id=new_event_id(start + i * step), ts=start + i * step, branch=branch
        )
        for i, f in enumerate(flows)
    ]


def all_events(data_dir: Path) -> list[object]:
    reader = EventLogReader(data_dir)
    position, events = Position(), []
    while True:
        batch, position = reader.read_new(position, 50_000)
        if not batch:
            return events
        events += batch


def settings_for(data_dir: Path, model: Path, **analysis: str):  # type: ignore[no-untyped-def]
    environ = {"NETMON_STORE__DATA_DIR": str(data_dir), "NETMON_ANALYSIS__MODEL_PATH": str(model)}
    environ.update({f"NETMON_ANALYSIS__{k.upper()}": v for k, v in analysis.items()})
    return load_settings(environ=environ, dotenv_file=None), environ


def test_worker_classifies_windows_and_alerts_from_the_log(
    default_model: Path, corpus_flows: list[FlowObserved], tmp_path: Path
) -> None:
    settings, _ = settings_for(tmp_path, default_model, batch_size="700")
    paris = restamp(corpus_flows[::2], T0, 600, "paris")  # two windows
    lyon = restamp(corpus_flows[1::2][:500], T0, 290, "lyon")  # one window
    critical = DetectionRaised(
        id=new_event_id(T0 + 10),
        ts=T0 + 10,
        branch="lyon",
        agent_id="a1",
        flow_id="f" * 32,
        src_ip="10.9.9.9",
        src_port=40000,
        dst_ip="10.0.0.250",  # no corpus flow goes there: the alert rests on this one only
        dst_port=23,
        protocol=6,
        detection=Detection(
            kind="critical_port", detail="Telnet (23/tcp)", severity="critical", rule="telnet"
        ),
    )
    with EventLog(tmp_path, "replica-1") as writer:
        writer.append([*paris, *lyon, critical])
    classifier = Classifier(default_model, settings.analysis.threshold)
    worker = AnalysisWorker(settings, classifier, Summarizer(None))
    asyncio.run(worker.run(once=True))

    events = all_events(tmp_path)
    verdicts = [e for e in events if isinstance(e, FlowClassified)]
    assert Counter(v.flow_id for v in verdicts) == Counter(f.id for f in [*paris, *lyon])
    by_flow = {f.id: f for f in [*paris, *lyon]}
    assert all(by_flow[v.flow_id].branch == v.branch for v in verdicts)
    windows = sorted(
        (w for w in events if isinstance(w, WindowSummarized)),
        key=lambda w: (w.branch, w.window_start),
    )
    assert [(w.branch, w.window_start) for w in windows] == [
        ("lyon", T0),
        ("paris", T0),
        ("paris", T0 + 300),
    ]
    assert sum(w.flows for w in windows if w.branch == "paris") == len(paris)
    lyon_window = windows[0]
    assert lyon_window.critical_detections == 1 and critical.id in lyon_window.evidence_ids
    assert sum(lyon_window.labels.values()) == lyon_window.flows == len(lyon)
    expected_labels = Counter(v.label for v in verdicts if v.branch == "lyon")
    assert lyon_window.labels == dict(expected_labels)
    assert lyon_window.summary_source == "template"
    assert lyon_window.summary_fallback_reason == "no LLM provider configured"
    assert lyon_window.summary.startswith("lyon ")
    alerts = [e for e in events if isinstance(e, AlertOpened)]
    # (the corpus flows carry the agent's own critical findings too: scans hit port 23 and 3389)
    critical_alerts = [a for a in alerts if a.entity == "10.0.0.250"]  # about the server
    assert len(critical_alerts) == 1 and critical_alerts[0].rule == "detection:critical_port"
    assert len({(a.rule, a.entity) for a in alerts}) == len(alerts)  # one alert per rule, entity
    assert critical_alerts[0].evidence_ids == (critical.id,)


def test_a_second_run_resumes_without_repeating_work(
    default_model: Path, corpus_flows: list[FlowObserved], tmp_path: Path
) -> None:
    settings, _ = settings_for(tmp_path, default_model)
    first, second = (
        restamp(corpus_flows[:400], T0, 100, "b"),
        restamp(corpus_flows[400:800], T0 + 300, 100, "b"),
    )
    classifier = Classifier(default_model)
    with EventLog(tmp_path, "replica-1") as writer:
        writer.append(first)
    asyncio.run(AnalysisWorker(settings, classifier, Summarizer(None)).run(once=True))
    with EventLog(tmp_path, "replica-1") as writer:
        writer.append(second)
    worker = AnalysisWorker(settings, classifier, Summarizer(None))
    asyncio.run(worker.run(once=True))
    assert worker.stats.flows_classified == len(second)
    assert worker.stats.windows_summarized == 1  # only the new window; the first one is done
    verdicts = [e.flow_id for e in all_events(tmp_path) if isinstance(e, FlowClassified)]
    assert Counter(verdicts) == Counter(f.id for f in first + second)


def _count_verdicts(data_dir: Path) -> Counter[str]:
    return Counter(e.flow_id for e in all_events(data_dir) if isinstance(e, FlowClassified))


def _start_worker(environ: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **environ, "PYTHONPATH": str(REPO)}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "netmon.app.cli", "analyze"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=log,
        )


@pytest.mark.slow
def test_kill_9_mid_stream_leaves_no_duplicate_and_no_gap(
    default_model: Path, corpus_flows: list[FlowObserved], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    _, environ = settings_for(data, default_model, batch_size="300", window_grace_s="5")
    batches = [restamp(corpus_flows, T0 + 60 * i, 60, "b") for i in range(8)]  # 8 x ~3.8k flows
    expected = Counter(f.id for batch in batches for f in batch)
    log_path = tmp_path / "worker.log"
    with EventLog(data, "replica-1") as writer:
        writer.append(batches[0])
        worker = _start_worker(environ, log_path)
        try:
            for batch in batches[1:4]:
                writer.append(batch)
            wait_until(lambda: sum(_count_verdicts(data).values()) >= 2000, 60, "first verdicts")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            killed_at = sum(_count_verdicts(data).values())
            for batch in batches[4:]:
                writer.append(batch)
            worker = _start_worker(environ, log_path)
            wait_until(
                lambda: sum(_count_verdicts(data).values()) >= len(expected), 120, "all verdicts"
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(20)
    print(f"\nkilled after {killed_at} of {len(expected)} verdicts")
    assert 0 < killed_at < len(expected), "the kill should land mid-stream"
    verdicts = _count_verdicts(data)
    assert verdicts == expected  # every flow exactly once
    windows = Counter(
        (e.branch, e.window_start) for e in all_events(data) if isinstance(e, WindowSummarized)
    )
    assert windows and max(windows.values()) == 1
    assert worker.returncode == 0, log_path.read_text()[-2000:]
    # Every flow is counted exactly once across the kill: in a summarised window, in a window
    # still open or waiting for its summary (checkpoint), or as late for a closed window.
    state = load_checkpoint(data / "analysis" / "analyzer.checkpoint.json")
    summarized = sum(e.flows for e in all_events(data) if isinstance(e, WindowSummarized))
    still_open = sum(w.flows for w in state.windows.open.values())
    pending = sum(w.flows for w in state.pending)
    assert summarized + still_open + pending + state.windows.late_flows == len(expected)


def test_a_stale_checkpoint_replays_without_duplicates(
    default_model: Path, corpus_flows: list[FlowObserved], tmp_path: Path
) -> None:
    """A crash after appending outputs but before saving the checkpoint, made deterministic."""
    settings, _ = settings_for(tmp_path, default_model, batch_size="250")
    flows = restamp(corpus_flows[:1500], T0, 900, "b")
    classifier = Classifier(default_model)
    with EventLog(tmp_path, "replica-1") as writer:
        writer.append(flows[:500])
    asyncio.run(AnalysisWorker(settings, classifier, Summarizer(None)).run(once=True))
    checkpoint = tmp_path / "analysis" / "analyzer.checkpoint.json"
    stale = checkpoint.read_bytes()
    with EventLog(tmp_path, "replica-1") as writer:
        writer.append(flows[500:])
    asyncio.run(AnalysisWorker(settings, classifier, Summarizer(None)).run(once=True))
    before = [e for e in all_events(tmp_path) if not isinstance(e, FlowObserved)]
    checkpoint.write_bytes(stale)  # as if the second run died before its checkpoints
    worker = AnalysisWorker(settings, classifier, Summarizer(None))
    asyncio.run(worker.run(once=True))
    assert worker.stats.duplicates_skipped == 1000
    assert worker.stats.flows_classified == 0
    after = [e for e in all_events(tmp_path) if not isinstance(e, FlowObserved)]
    assert len(after) == len(before)  # nothing emitted twice: no verdict, window or alert


def _run_cli(
    args: list[str], environ: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "netmon.app.cli", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_damaged_checkpoint_stops_the_worker_with_a_clear_error(
    default_model: Path, tmp_path: Path
) -> None:
    _, environ = settings_for(tmp_path, default_model)
    checkpoint = tmp_path / "analysis" / "analyzer.checkpoint.json"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b'{"position": {"offsets": {"x": "not a number"}}}')
    result = _run_cli(["analyze", "--once"], environ)
    assert result.returncode == 2
    assert "is damaged" in result.stderr and "move it away" in result.stderr
    assert "ERROR" in result.stderr  # the log line
    assert checkpoint.read_bytes() == b'{"position": {"offsets": {"x": "not a number"}}}'


def test_set_key_stores_the_key_encrypted_and_needs_the_secret(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    environ = {"NETMON_STORE__DATA_DIR": str(tmp_path), "NETMON_SERVER__SECRET_KEY": ""}
    refused = _run_cli(["analyze", "--set-key", "openai"], environ, stdin="sk-live-1\n")
    assert refused.returncode == 2 and "secret_key is not set" in refused.stderr
    environ["NETMON_SERVER__SECRET_KEY"] = Fernet.generate_key().decode()
    stored = _run_cli(["analyze", "--set-key", "openai"], environ, stdin="sk-live-1\n")
    assert stored.returncode == 0, stored.stderr
    data = (tmp_path / "analysis" / "provider_keys.json").read_text()
    assert "openai" in data and "sk-live-1" not in data and "sk-live-1" not in stored.stdout


def test_a_scan_in_the_log_is_one_alert_that_grows_even_across_a_stale_checkpoint(
    default_model: Path, tmp_path: Path
) -> None:
    """2,000 probes of one scanner: one AlertOpened, numbered updates, none written twice when
    the worker replays from an older checkpoint, and the final count right."""
    settings, _ = settings_for(tmp_path, default_model, batch_size="250")
    probes = [tcp_flow("198.51.100.66", "10.20.0.9", 1 + i, T0 + i * 0.3) for i in range(2000)]
    classifier = Classifier(default_model)

    def run() -> None:
        asyncio.run(AnalysisWorker(settings, classifier, Summarizer(None)).run(once=True))

    with EventLog(tmp_path, "replica-1") as writer:
        writer.append(probes[:800])
    run()
    checkpoint = tmp_path / "analysis" / "analyzer.checkpoint.json"
    stale = checkpoint.read_bytes()
    with EventLog(tmp_path, "replica-1") as writer:
        writer.append(probes[800:])
    run()
    checkpoint.write_bytes(stale)  # as if the second run died before its checkpoints
    run()
    events = all_events(tmp_path)
    opened = [e for e in events if isinstance(e, AlertOpened) and e.rule == "port_scan"]
    assert len(opened) == 1 and opened[0].entity == "198.51.100.66"
    updates = [e for e in events if isinstance(e, AlertUpdated)]
    seqs = sorted(u.seq for u in updates)
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # each update once, none missing
    last = max(updates, key=lambda u: u.seq)
    assert last.evidence.count == 2000 and last.evidence.distinct_ports == 2000
    # 250 probes in the first batch already pass 10x the rule's 15 ports: it opens high.
    assert opened[0].severity == "high" and all(u.severity == "none" for u in updates)


def test_a_replay_cut_into_other_batches_keeps_the_stored_alert_id(
    default_model: Path, tmp_path: Path
) -> None:
    """A scan opened after the checkpoint the worker restarts from: the replay reads the log in
    other batches, so its finding comes at another evidence time (another derived id); it must
    still be the one alert already in the log, not a second."""
    probes = [tcp_flow("198.51.100.67", "10.20.0.9", 1 + i, T0 + i * 0.3) for i in range(600)]
    classifier = Classifier(default_model)

    def run(batch_size: str) -> None:
        settings, _ = settings_for(tmp_path, default_model, batch_size=batch_size)
        asyncio.run(AnalysisWorker(settings, classifier, Summarizer(None)).run(once=True))

    with EventLog(tmp_path, "replica-1") as writer:
        writer.append(probes[:5])  # below every threshold: no alert yet
    run("250")
    checkpoint = tmp_path / "analysis" / "analyzer.checkpoint.json"
    stale = checkpoint.read_bytes()
    (tmp_path / "analysis" / "analyzer.behaviour.msgpack").unlink()  # as after a crash
    with EventLog(tmp_path, "replica-1") as writer:
        writer.append(probes[5:])
    run("250")
    checkpoint.write_bytes(stale)  # the second run died before its checkpoint
    run("100")  # the replay reads the same flows in other batches
    opened = [e for e in all_events(tmp_path) if isinstance(e, AlertOpened)]
    assert [(a.rule, a.entity) for a in opened] == [("port_scan", "198.51.100.67")]
    updates = [e for e in all_events(tmp_path) if isinstance(e, AlertUpdated)]
    assert {u.alert_id for u in updates} <= {opened[0].alert_id}
