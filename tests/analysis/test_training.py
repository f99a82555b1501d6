"""`netmon model train/evaluate`: our labelled JSONL and the CICFlowMeter / NTLFlowLyzer CSVs."""

from __future__ import annotations

import csv
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from netmon.app.analysis.classifier import Classifier
from netmon.app.analysis.corpus import scenarios
from netmon.app.analysis.features import FEATURE_NAMES
from netmon.app.analysis.training import (
    Dataset,
    LabelledFlow,
    TrainingError,
    evaluate_flows,
    group_of,
    labelled_matrix,
    load_labelled,
    train_model,
)
from netmon.app.cli import main
from netmon.storage.contract.events import FlowObserved

CIC_HEADER = [
    "Flow Duration",
    "Total Fwd Packets",
    "Total Backward Packets",
    "Fwd Packet Length Max",
    "Flow Bytes/s",
    "Flow IAT Mean",
    "SYN Flag Count",
    "RST Flag Count",
    "Protocol",
    "Label",
]
NTL_HEADER = [
    "duration",
    "fwd_packets_count",
    "bwd_packets_count",
    "fwd_payload_bytes_max",
    "bytes_rate",
    "packets_IAT_mean",
    "syn_flag_counts",
    "rst_flag_counts",
    "protocol",
    "label",
]


def _csv_rows(items: list[LabelledFlow], micro: bool) -> list[list[object]]:
    scale = 1e6 if micro else 1.0
    rows = []
    for item in items:
        f: FlowObserved = item.flow
        rows.append(
            [
                f.features.duration * scale,
                f.src2dst_packets,
                f.dst2src_packets,
                f.features.fwd_pkt_len_max,
                f.features.bytes_per_s,
                f.features.flow_iat_mean * scale,
                f.features.syn_count,
                f.features.rst_count,
                f.protocol,
                "BENIGN"
                if item.label == "benign"
                else "PortScan"
                if item.label == "portscan"
                else item.label,
            ]
        )
    return rows


def _sample(
    labelled: list[LabelledFlow], labels: tuple[str, ...], per_class: int
) -> list[LabelledFlow]:
    picked: list[LabelledFlow] = []
    for label in labels:
        picked += [item for item in labelled if item.label == label][:per_class]
    return picked


def test_train_from_our_jsonl_saves_model_and_held_out_evaluation(
    labelled_flows: list[LabelledFlow], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "flows.jsonl"
    items = _sample(labelled_flows, ("benign", "portscan", "dns_tunnel"), 120)
    data.write_bytes(b"".join(msgspec.json.encode(i) + b"\n" for i in items))
    model = tmp_path / "m.joblib"
    assert (
        main(["model", "train", str(data), "--model", str(model), "--no-progress", "--trees", "20"])
        == 0
    )
    report = json.loads((tmp_path / "m.eval.json").read_text())
    assert report["test_rows"] == 90  # a quarter held out
    assert set(report["fine"]["per_class"]) == {"benign", "portscan", "dns_tunnel"}
    for row in report["fine"]["per_class"].values():
        assert {"precision", "recall", "f1", "support"} <= set(row)
    assert len(report["fine"]["confusion_matrix"]) == 3
    assert "confusion" in capsys.readouterr().out
    verdicts = Classifier(model, threshold=0.5).predict([i.flow for i in items])
    right = sum(
        (label == "benign") == (item.label == "benign")
        for item, (label, _, _) in zip(items, verdicts, strict=True)
    )
    assert right / len(items) > 0.95


PY_CIC_HEADER = [
    "flow_duration",
    "tot_fwd_pkts",
    "tot_bwd_pkts",
    "fwd_pkt_len_max",
    "flow_byts_s",
    "flow_iat_mean",
    "syn_flag_cnt",
    "rst_flag_cnt",
    "protocol",
    "label",
]


@pytest.mark.parametrize(
    ("header", "micro"),
    [(CIC_HEADER, True), (PY_CIC_HEADER, True), (NTL_HEADER, False)],
    ids=["cicflowmeter", "cicflowmeter-python", "ntlflowlyzer"],
)
def test_train_from_flow_meter_csv_layouts(
    labelled_flows: list[LabelledFlow], tmp_path: Path, header: list[str], micro: bool
) -> None:
    items = _sample(labelled_flows, ("benign", "portscan"), 100)
    data = tmp_path / "flows.csv"
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(_csv_rows(items, micro))
    loaded = load_labelled([data])
    assert sorted(set(loaded.labels)) == ["benign", "portscan"]
    # CICFlowMeter writes microseconds, NTLFlowLyzer seconds: both become seconds.
    longest = float(loaded.features[:, FEATURE_NAMES.index("duration")].max())
    assert longest == pytest.approx(max(i.flow.features.duration for i in items), rel=1e-3)
    model = tmp_path / "csv.joblib"
    assert (
        main(["model", "train", str(data), "--model", str(model), "--no-progress", "--trees", "10"])
        == 0
    )
    report = json.loads((tmp_path / "csv.eval.json").read_text())
    assert report["coarse"]["per_class"]["attack"]["recall"] > 0.9


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", b'{"label": "benign", "flow": {"nope": 1}}\n', "bad.jsonl line 1"),
        ("bad2.jsonl", b"not json\n", "bad2.jsonl line 1"),
        ("odd.csv", b"a,b,Label\n1,2,BENIGN\n", "unknown CSV layout"),
        ("nolabel.csv", b"Flow Duration,Total Fwd Packets\n1,2\n", "no 'Label' column"),
        (
            "num.csv",
            b"Flow Duration,Total Fwd Packets,Label\n1,2,BENIGN\nx,3,BENIGN\n",
            "num.csv line 3",
        ),
        ("empty.jsonl", b"", "no labelled rows"),
    ],
)
def test_bad_training_data_is_a_clear_error_and_a_log_line(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes,
    message: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TrainingError, match=message):
        load_labelled([path])
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        code = main(
            ["model", "train", str(path), "--model", str(tmp_path / "m.joblib"), "--no-progress"]
        )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.joblib").exists()


def test_one_class_only_is_refused(labelled_flows: list[LabelledFlow], tmp_path: Path) -> None:
    data = tmp_path / "benign.jsonl"
    items = _sample(labelled_flows, ("benign",), 20)
    data.write_bytes(b"".join(msgspec.json.encode(i) + b"\n" for i in items))
    code = main(
        ["model", "train", str(data), "--model", str(tmp_path / "m.joblib"), "--no-progress"]
    )
    assert code == 2


def test_evaluate_prints_scores_for_an_existing_model(
    default_model: Path, corpus_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            ["model", "evaluate", str(corpus_dir / "labelled.jsonl"), "--model", str(default_model)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "fine classes" in out and "portscan" in out


def test_build_default_from_crafted_traffic_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "default.joblib"
    args = ["model", "build-default", "--no-real-tools", "--no-captures", "--no-progress"]
    args += ["--model", str(model)]
    assert main([*args, "--keep-corpus", str(tmp_path / "corpus")]) == 0
    assert "default model rf-" in capsys.readouterr().out
    report = json.loads((tmp_path / "default.eval.json").read_text())
    assert "generated corpus" in report["source"] and "real tools off" in report["source"]
    assert set(report["rows"]) >= {"benign", "portscan", "c2_beacon", "exfiltration"}
    assert sorted(p.name for p in (tmp_path / "corpus").glob("real_*")) == []
    assert "evaluations" not in report  # one source: nothing to score apart
    assert Classifier(model).version == report["model_version"]


# --- Context and separate evaluations ----------------------------------------------------------


def _probe(src: str, port: int, ts: float) -> FlowObserved:
    return FlowObserved(
        id=f"{src}-{port}-{ts}",
        ts=ts,
        branch="b",
        agent_id="a",
        first_seen=ts,
        last_seen=ts,
        src_ip=src,
        src_port=40000,
        dst_ip="10.0.0.9",
        dst_port=port,
        protocol=6,
        src2dst_packets=1,
        dst2src_packets=1,
        src2dst_tcp_flags=0x02,
        dst2src_tcp_flags=0x14,
    )


def test_context_is_built_per_capture_in_ts_order() -> None:
    ports = FEATURE_NAMES.index("ctx_dst_ports")
    first = [LabelledFlow("portscan", _probe("10.1.1.1", p, 100.0 + p), "one") for p in range(30)]
    # the same address in another capture at the same times: a stream of its own
    second = [LabelledFlow("benign", _probe("10.1.1.1", 7, 100.0 + i), "two") for i in range(3)]
    shuffled = first[::-1] + second  # the file's order is not the stream's
    rows = labelled_matrix(shuffled)
    assert rows[: len(first), ports].tolist()[::-1] == [float(p + 1) for p in range(30)]
    assert rows[len(first) :, ports].tolist() == [1.0, 1.0, 1.0]


def test_each_group_of_the_held_out_quarter_is_scored_apart(
    labelled_flows: list[LabelledFlow],
) -> None:
    items = _sample(labelled_flows, ("benign", "portscan", "c2_beacon"), 80)
    items = [
        msgspec.structs.replace(item, capture=("real-train" if i % 2 else "generated/x"))
        for i, item in enumerate(items)
    ]
    data = Dataset(
        labelled_matrix(items), [i.label for i in items], [group_of(i.capture) for i in items]
    )
    model, report = train_model(data, trees=10, progress=False, group_titles={"real-train": "Real"})
    parts = {part["key"]: part for part in report["evaluations"]}
    assert set(parts) == {"generated", "real-train"}
    assert parts["real-train"]["title"] == "Real: held-out quarter"
    assert sum(p["test_rows"] for p in parts.values()) == report["test_rows"]
    verdicts = parts["generated"]["verdicts"]
    assert verdicts["threshold"] == 0.9
    assert (
        sum(row["flows"] for row in verdicts["by_class"].values())
        == parts["generated"]["test_rows"]
    )
    heldout = evaluate_flows(model, items[:30], key="h", title="Held out")
    assert heldout["trained_on"] is False and heldout["test_rows"] == 30
    assert "by_scenario" in heldout["verdicts"]  # corpus flows name their scenario


def _truth_scenario(name: str, kind: str, behaviour: str | None, source: str) -> dict[str, object]:
    # The real truth files hold more than the builder reads (tests/data/captures.py).
    return {"name": name, "kind": kind, "behaviour": behaviour, "sources": [source], "tool": "x"}


# (scenario, kind, behaviour, generator, source address, flows)
FAKE_PLAN = (
    ("web_client", "benign", None, scenarios.web, "10.20.2.11", 40),
    ("poller", "lookalike", None, scenarios.tls, "10.20.2.12", 20),
    ("scanner", "attack", "port_scan", scenarios.portscan, "10.20.1.11", 150),
    ("guesser", "attack", "auth_guess", scenarios.ssh_bruteforce, "10.20.1.12", 25),
)


def fake_real_captures(directory: Path) -> Path:
    """Both capture sets in the layout of tests/data/real, made of crafted traffic."""
    directory.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(("train", "heldout")):
        rng = random.Random(seed)
        capture = scenarios.Capture()
        truth: list[dict[str, object]] = []
        for scenario, kind, behaviour, generate, source, flows in FAKE_PLAN:
            generate(rng, capture, source, "10.20.0.9", flows)
            truth.append(_truth_scenario(scenario, kind, behaviour, source))
        capture.write(directory / f"{name}.pcap")
        body = {"name": name, "pcap": f"{name}.pcap", "made": "2026-12-02", "scenarios": truth}
        (directory / f"{name}.json").write_text(json.dumps(body))
    return directory


def test_build_default_trains_on_the_real_train_capture_and_scores_the_held_out_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    captures = fake_real_captures(tmp_path / "real")
    model, corpus = tmp_path / "default.joblib", tmp_path / "corpus"
    args = ["model", "build-default", "--no-real-tools", "--no-progress", "--model", str(model)]
    assert main([*args, "--captures", str(captures), "--keep-corpus", str(corpus)]) == 0
    out = capsys.readouterr().out
    assert "Held-out real capture" in out and "never trained on" in out
    report = json.loads((tmp_path / "default.eval.json").read_text())
    assert "real capture train set" in report["source"]
    keys = [part["key"] for part in report["evaluations"]]
    assert keys == ["real-heldout", "generated", "real-train"]  # the honest number first
    heldout = report["evaluations"][0]
    assert heldout["trained_on"] is False
    scenario_rows = heldout["verdicts"]["by_scenario"]
    assert set(scenario_rows) == {"web_client", "poller", "scanner", "guesser"}
    assert scenario_rows["poller"]["truth"] == "benign"  # a look-alike is benign
    assert scenario_rows["guesser"]["truth"] == "password_guess"
    trained = [json.loads(line) for line in (corpus / "labelled.jsonl").read_text().splitlines()]
    assert {"real-train"} <= {item.get("capture") for item in trained}
    assert main(["model", "evaluate", str(corpus / "heldout.jsonl"), "--model", str(model)]) == 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "train.json").write_text("{not json"), "train.json"),
        (lambda d: (d / "heldout.pcap").unlink(), "heldout.pcap is not in"),
        (
            lambda d: (d / "train.json").write_text(
                json.dumps(
                    {
                        "name": "train",
                        "pcap": "train.pcap",
                        "scenarios": [_truth_scenario("x", "attack", "teleport", "10.0.0.1")],
                    }
                )
            ),
            "behaviour 'teleport'",
        ),
    ],
    ids=["not-json", "pcap-missing", "unknown-behaviour"],
)
def test_damaged_real_captures_are_a_clear_error_and_a_log_line(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], object],
    message: str,
) -> None:
    captures = fake_real_captures(tmp_path / "real")
    damage(captures)
    model = tmp_path / "m.joblib"
    args = ["model", "build-default", "--no-real-tools", "--no-progress", "--model", str(model)]
    with caplog.at_level(logging.ERROR):
        assert main([*args, "--captures", str(captures)]) == 2
    assert message in capsys.readouterr().err
    assert message in caplog.text
    assert not model.exists()
