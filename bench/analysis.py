"""Analysis benchmarks: classifier throughput on one core, and the worker's lag behind ingest.

Run: .venv/bin/python bench/analysis.py [--flows 200000] [--rate 10000] [--seconds 20]
     [--model PATH] [--no-real-tools]

1. Flows classified per second (target >= 50,000/s on one core): feature extraction, model
   prediction and FlowClassified construction, next to the baselines measured in the same run:
   msgspec decoding the same flows from JSON (the cost every consumer pays) and the model's
   predict_proba on a ready-made matrix (the model alone).
2. Worker lag: this process appends FlowObserved at --rate events/s (1,000-event batches, fsync
   per batch) for --seconds while a real `netmon analyze` subprocess follows the log; the lag
   of a flow is the time from its ts (stamped when appended) to its verdict's ts. Printed: p50,
   p95, max, the last verdict's delay, and the worker's CPU per flow (start-up excluded).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, whatever the BLAS would like

import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import msgspec  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from netmon.app.analysis.classifier import Classifier  # noqa: E402
from netmon.app.analysis.corpus.build import build_default_model  # noqa: E402
from netmon.app.analysis.features import flow_matrix  # noqa: E402
from netmon.app.analysis.training import LabelledFlow  # noqa: E402
from netmon.storage.contract.events import FlowClassified, FlowObserved, json_decoder, new_event_id  # noqa: E402
from netmon.storage.eventlog import EventLog  # noqa: E402
from netmon.storage.log_reader import EventLogReader  # noqa: E402
from netmon.storage.positions import Position  # noqa: E402


def corpus_flows(
    work: Path, model: Path | None, real_tools: bool
) -> tuple[Path, list[FlowObserved]]:
    """The model to use and the corpus flows to replicate (builds both when no model is given)."""
    if model is None:
        model = work / "model.joblib"
        print("building the default model (corpus + training) ...", flush=True)
        build_default_model(model, keep=work, real_tools=real_tools, progress=False)
    labelled = work / "labelled.jsonl"
    if not labelled.exists():
        build_default_model(work / "scratch.joblib", keep=work, real_tools=False, progress=False)
    decoder = msgspec.json.Decoder(LabelledFlow)
    return model, [decoder.decode(line).flow for line in labelled.read_bytes().splitlines()]


def replicate(flows: list[FlowObserved], count: int, branch: str = "bench") -> list[FlowObserved]:
    now = time.time()
    return [
        msgspec.structs.replace(flows[i % len(flows)], id=new_event_id(now), ts=now, branch=branch)
        for i in range(count)
    ]


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>12,.0f} /s"


def bench_classifier(model: Path, flows: list[FlowObserved], count: int, batch: int) -> None:
    sample = replicate(flows, count)
    lines = [msgspec.json.encode(f) for f in sample]
    classifier = Classifier(model)
    classifier.predict(sample[:batch])  # warm-up

    def timed(work: Callable[[], object]) -> tuple[float, float]:
        """(wall, CPU of this thread) seconds: CPU is what one core delivers on a busy machine."""
        wall, cpu = time.perf_counter(), time.thread_time()
        work()
        return time.perf_counter() - wall, time.thread_time() - cpu

    matrices = [flow_matrix(sample[i : i + batch]) for i in range(0, count, batch)]
    batches = [sample[i : i + batch] for i in range(0, count, batch)]
    now = time.time()
    rows = [
        (
            "baseline: msgspec JSON decode of the flows",
            timed(lambda: [json_decoder.decode(x) for x in lines]),
        ),
        (
            "baseline: model predict_proba on a matrix",
            timed(lambda: [classifier.estimator.predict_proba(m) for m in matrices]),
        ),
        ("feature extraction (flow_matrix)", timed(lambda: [flow_matrix(b) for b in batches])),
        (
            "classify: features+model+FlowClassified",
            timed(lambda: [classifier.classify(b, now) for b in batches]),
        ),
    ]
    print(f"\n1. classifier, {count:,} flows in batches of {batch}, model {classifier.version}")
    print(f"   {'step':<44}{'wall':>15}{'CPU (one core)':>19}")
    for name, (wall_s, cpu_s) in rows:
        print(f"   {name:<44}{rate(count, wall_s)}{rate(count, cpu_s)}")
    predict_cpu, classify_cpu = rows[1][1][1], rows[3][1][1]
    per_core = count / classify_cpu
    print(
        f"   classify / predict-only ratio (CPU): {predict_cpu / classify_cpu:.2f}; "
        f"target >= 50,000 flows/s on one core: {'met' if per_core >= 50_000 else 'NOT met'} "
        f"({per_core:,.0f}); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


def bench_lag(
    model: Path,
    flows: list[FlowObserved],
    rate_per_s: int,
    seconds: float,
    work: Path,
    worker_batch: int,
) -> None:
    data = work / "lag-data"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NETMON_STORE__DATA_DIR": str(data),
        "NETMON_ANALYSIS__MODEL_PATH": str(model),
        "NETMON_ANALYSIS__BATCH_SIZE": str(worker_batch),
    }
    log_file = (work / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "netmon.app.cli", "analyze"],
        cwd=REPO,
        env=env,
        stdout=log_file,
        stderr=log_file,
    )
    batch = 1000
    template = replicate(flows, batch)
    appended = 0
    try:
        # Wait for the worker to have loaded its model, so its start-up is not counted.
        deadline = time.monotonic() + 120
        while b"analyzing" not in (work / "worker.log").read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    "worker did not start: " + (work / "worker.log").read_text()[-800:]
                )
            time.sleep(0.05)
        cpu_before = _cpu_seconds(worker.pid)
        with EventLog(data, "replica-1") as writer:
            started = time.monotonic()
            tick = 0
            while time.monotonic() - started < seconds:
                now = time.time()
                writer.append(
                    [msgspec.structs.replace(f, id=new_event_id(now), ts=now) for f in template]
                )
                appended += batch
                tick += 1
                pause = started + tick * batch / rate_per_s - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # pacing the generator, not synchronising with the worker
            ingest_s = time.monotonic() - started
        stopped = time.monotonic()
        reader, position, verdicts = EventLogReader(data), Position(), 0
        observed: dict[str, float] = {}
        classified: dict[str, float] = {}
        while verdicts < appended or len(observed) < appended:
            events, position = reader.read_new(position, 50_000)
            for event in events:
                if isinstance(event, FlowObserved):
                    observed[event.id] = event.ts
                elif isinstance(event, FlowClassified):
                    classified[event.flow_id] = event.ts
                    verdicts += 1
            if not events:
                if time.monotonic() - stopped > 120:
                    raise SystemExit(f"worker did not catch up: {verdicts} of {appended}")
                time.sleep(0.05)
        catch_up = max(classified.values()) - max(observed.values())
        cpu_s = _cpu_seconds(worker.pid) - cpu_before
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        log_file.close()
    phases = [line for line in (work / "worker.log").read_text().splitlines() if "phases" in line]

    lags = sorted(classified[i] - observed[i] for i in observed)
    print(
        f"\n2. worker lag, {appended:,} flows appended at {appended / ingest_s:,.0f} events/s "
        f"for {ingest_s:.1f} s (target rate {rate_per_s:,}/s)"
    )
    print(
        f"   lag p50 {statistics.median(lags):.3f} s, p95 {lags[int(len(lags) * 0.95)]:.3f} s, "
        f"max {lags[-1]:.3f} s; last verdict {catch_up:.3f} s after the last flow's ts"
    )
    print(
        f"   worker CPU {cpu_s:.1f} s for {appended:,} flows = {appended / cpu_s:,.0f} flows per "
        f"CPU-second, start-up excluded (its capacity on one free core); "
        f"load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores at the end"
    )
    if phases:
        print("   worker " + phases[-1].partition(": ")[2])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), including its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--worker-batch", type=int, default=10_000, help="analysis.batch_size")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--model", type=Path)
    parser.add_argument(
        "--no-real-tools", action="store_true", help="crafted corpus only (no root)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="netmon-bench-analysis-") as tmp:
        work = Path(tmp)
        model, flows = corpus_flows(work, args.model, not args.no_real_tools)
        bench_classifier(model, flows, args.flows, args.batch)
        bench_lag(model, flows, args.rate, args.seconds, work, args.worker_batch)


if __name__ == "__main__":
    main()
