"""Analysis benchmarks: classifier throughput on one core, and the worker's lag behind ingest.

Run: .venv/bin/python bench/analysis.py [--flows 200000] [--rate 10000] [--seconds 20]
     [--model PATH] [--no-real-tools]

1. Flows classified per second (target >= 50,000/s on one core): feature extraction, model
   prediction and FlowClassified construction, next to the baselines measured in the same run:
   msgspec decoding the same flows from JSON (the cost every consumer pays) and the model's
   predict_proba on a ready-made matrix (the model alone); then the behaviour detectors (all
   rules, app/analysis/behaviour) on the same flows, as a cost per flow and a ratio to classify.
2. Worker lag: this process appends FlowObserved at --rate events/s (1,000-event batches, fsync
   per batch) for --seconds while a real `netmon analyze` subprocess follows the log; the lag
   of a flow is the time from its ts (stamped when appended) to its verdict's ts. Printed: p50,
   p95, max, the last verdict's delay, and the worker's CPU per flow (start-up excluded). Run
   twice: with the behaviour detectors, and with them off (the classifier alone).
3. Detector state at --sources distinct sources (default a million), each sending a failed
   probe, a DNS query and a connection: entities tracked per detector (capped by
   detection.max_tracked), the saved state's size and the process's memory growth.
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

from netmon.app.analysis.behaviour.engine import BehaviourEngine  # noqa: E402
from netmon.app.analysis.classifier import Classifier  # noqa: E402
from netmon.app.analysis.context import ContextTracker  # noqa: E402
from netmon.app.analysis.corpus.build import build_default_model  # noqa: E402
from netmon.app.analysis.features import flow_matrix  # noqa: E402
from netmon.app.analysis.training import LabelledFlow  # noqa: E402
from netmon.app.detection_settings import DetectionSettings  # noqa: E402
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

    matrices = [
        flow_matrix(sample[i : i + batch], ContextTracker()) for i in range(0, count, batch)
    ]
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
        (
            "feature extraction with context (flow_matrix)",
            timed(lambda: [flow_matrix(b, ContextTracker()) for b in batches]),
        ),
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
    engine = BehaviourEngine(Settled(DetectionSettings()))
    _, behaviour_cpu = timed(lambda: [engine.observe(b) for b in batches])
    print(
        f"   behaviour detectors: {behaviour_cpu / count * 1e6:.2f} us of CPU per flow "
        f"({rate(count, behaviour_cpu).strip()}), {behaviour_cpu / classify_cpu:.2f}x the "
        f"classifier's cost; tracked {engine.tracked()}"
    )


class Settled:
    """A DetectionSource that always answers the same settings (no override file)."""

    def __init__(self, settings: DetectionSettings) -> None:
        self.settings = settings

    def current(self) -> DetectionSettings:
        return self.settings


def bench_state(sources: int, batch: int) -> None:
    """Memory of the detectors' state when ``sources`` distinct addresses each send a failed
    probe, a DNS query and a short connection (the worst case for the per-entity tables)."""
    settings = DetectionSettings()
    engine = BehaviourEngine(Settled(settings))
    rss_before = _rss_bytes()
    started, now = time.process_time(), time.time()
    template = FlowObserved(
        id="", ts=now, branch="bench", agent_id="a", first_seen=now, last_seen=now,
        src_ip="", src_port=40000, dst_ip="10.20.0.9", dst_port=80, protocol=6,
        src2dst_packets=1, dst2src_packets=1, src2dst_tcp_flags=0x02, dst2src_tcp_flags=0x14,
    )  # fmt: skip
    for first in range(0, sources, batch):
        flows = []
        for n in range(first, min(first + batch, sources)):
            src = f"{10 + n // 16_777_216 % 200}.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
            flows.append(msgspec.structs.replace(template, id=new_event_id(now), src_ip=src))
            flows.append(
                msgspec.structs.replace(
                    template,
                    id=new_event_id(now),
                    src_ip=src,
                    protocol=17,
                    dst_port=53,
                    domain=f"h{n}.example.org",
                    domain_source="dns",
                    src2dst_tcp_flags=0,
                )  # fmt: skip
            )
        engine.observe(flows)
    cpu = time.process_time() - started
    size = len(msgspec.msgpack.encode(engine.state))
    grown = _rss_bytes() - rss_before
    print(
        f"\n3. detector state after {sources:,} distinct sources ({2 * sources:,} flows, "
        f"max_tracked {settings.max_tracked:,} per detector): tracked {engine.tracked()}; "
        f"saved state {size / 1e6:.1f} MB; process memory grew {grown / 1e6:.0f} MB; "
        f"{cpu / (2 * sources) * 1e6:.2f} us CPU per flow"
    )


def _rss_bytes() -> int:
    """Resident memory of this process (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def bench_lag(
    model: Path,
    flows: list[FlowObserved],
    rate_per_s: int,
    seconds: float,
    work: Path,
    worker_batch: int,
    behaviour: bool = True,
) -> None:
    work = work / ("with-detectors" if behaviour else "classifier-alone")
    work.mkdir()
    data = work / "lag-data"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NETMON_STORE__DATA_DIR": str(data),
        "NETMON_ANALYSIS__MODEL_PATH": str(model),
        "NETMON_ANALYSIS__BATCH_SIZE": str(worker_batch),
        "NETMON_DETECTION__ENABLED": "true" if behaviour else "false",
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
    what = "with the behaviour detectors" if behaviour else "classifier alone (detectors off)"
    print(
        f"\n2. worker lag, {what}, {appended:,} flows appended at "
        f"{appended / ingest_s:,.0f} events/s for {ingest_s:.1f} s (target rate {rate_per_s:,}/s)"
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
    parser.add_argument("--sources", type=int, default=1_000_000, help="for the state bench")
    parser.add_argument(
        "--no-real-tools", action="store_true", help="crafted corpus only (no root)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="netmon-bench-analysis-") as tmp:
        work = Path(tmp)
        model, flows = corpus_flows(work, args.model, not args.no_real_tools)
        bench_classifier(model, flows, args.flows, args.batch)
        bench_lag(model, flows, args.rate, args.seconds, work, args.worker_batch)
        bench_lag(model, flows, args.rate, args.seconds, work, args.worker_batch, behaviour=False)
        bench_state(args.sources, args.batch)


if __name__ == "__main__":
    main()
