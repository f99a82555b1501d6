"""`netmon model train/evaluate`: our labelled JSONL and the CICFlowMeter / NTLFlowLyzer CSVs."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import msgspec
import pytest

from netmon.app.analysis.classifier import Classifier
from netmon.app.analysis.features import FEATURE_NAMES
from netmon.app.analysis.training import LabelledFlow, TrainingError, load_labelled
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
    features, labels = load_labelled([data])
    assert sorted(set(labels)) == ["benign", "portscan"]
    # CICFlowMeter writes microseconds, NTLFlowLyzer seconds: both become seconds.
    longest = float(features[:, FEATURE_NAMES.index("duration")].max())
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
    args = ["model", "build-default", "--no-real-tools", "--no-progress", "--model", str(model)]
    assert main([*args, "--keep-corpus", str(tmp_path / "corpus")]) == 0
    assert "default model rf-" in capsys.readouterr().out
    report = json.loads((tmp_path / "default.eval.json").read_text())
    assert "generated corpus" in report["source"] and "real tools off" in report["source"]
    assert set(report["rows"]) >= {"benign", "portscan", "c2_beacon", "exfiltration"}
    assert sorted(p.name for p in (tmp_path / "corpus").glob("real_*")) == []
    assert Classifier(model).version == report["model_version"]
