"""Training: labelled flows (our JSONL or CICFlowMeter / NTLFlowLyzer CSVs) -> a joblib model.

A quarter of the rows (stratified) is held out; the model is scored on it and the evaluation
(per-class precision, recall, F1, confusion matrix, at the fine and at the benign/attack level)
is saved as JSON beside the model. The model file is a dict {"estimator", "meta"} so the
classifier can check it was built for the current feature vector.

Labelled JSONL: one ``LabelledFlow`` per line, ``{"label": "benign", "flow": {FlowObserved}}``
where the label is "benign" or the attack type ("portscan", "ssh_bruteforce", ...).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import joblib
import msgspec
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from netmon.app.analysis.features import FEATURE_NAMES, csv_row_vector, detect_layout, flow_vector
from netmon.storage.contract.events import FlowObserved
from netmon.storage.contract.files import write_atomically

log = logging.getLogger(__name__)
BENIGN = "benign"


class TrainingError(Exception):
    """The training data cannot be used; the message names the file, line and reason."""


class LabelledFlow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One line of a labelled JSONL file."""

    label: str  # "benign" or an attack type
    flow: FlowObserved


_labelled_decoder = msgspec.json.Decoder(LabelledFlow)


def normalise_label(raw: str) -> str:
    """'BENIGN' -> 'benign', 'DoS Hulk' -> 'dos_hulk' (CSV datasets spell labels freely)."""
    label = "_".join(raw.strip().lower().replace("-", " ").split())
    if not label:
        raise ValueError("empty label")
    return label


def load_labelled(paths: Sequence[Path]) -> tuple[np.ndarray, list[str]]:
    """Feature matrix and fine labels from JSONL and CSV files; raise TrainingError."""
    rows: list[list[float]] = []
    labels: list[str] = []
    for path in paths:
        before = len(rows)
        if path.suffix.lower() == ".csv":
            _read_csv(path, rows, labels)
        else:
            _read_jsonl(path, rows, labels)
        log.info("training data: %s rows from %s", len(rows) - before, path)
    if not rows:
        raise TrainingError("no labelled rows in " + ", ".join(map(str, paths)))
    return np.asarray(rows, dtype=np.float32), labels


def _read_jsonl(path: Path, rows: list[list[float]], labels: list[str]) -> None:
    try:
        handle = path.open("rb")
    except OSError as error:
        raise TrainingError(f"{path}: {error.strerror}") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = _labelled_decoder.decode(line)
                label = normalise_label(item.label)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as error:
                log.error("training data %s line %d rejected: %s", path, number, error)
                raise TrainingError(f"{path} line {number}: {error}") from None
            rows.append(flow_vector(item.flow))
            labels.append(label)


def _read_csv(path: Path, rows: list[list[float]], labels: list[str]) -> None:
    try:
        handle = path.open(newline="", encoding="utf-8", errors="replace")
    except OSError as error:
        raise TrainingError(f"{path}: {error.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        try:
            layout = detect_layout(reader.fieldnames or ())
        except ValueError as error:
            log.error("training data %s rejected: %s", path, error)
            raise TrainingError(f"{path}: {error}") from None
        label_column = next(
            (c for c in reader.fieldnames or () if c.strip().lower() == "label"), None
        )
        if label_column is None:
            raise TrainingError(f"{path}: no 'Label' column")
        for number, row in enumerate(reader, 2):
            try:
                labels.append(normalise_label(row[label_column] or ""))
                rows.append(csv_row_vector(row, layout))
            except ValueError as error:
                log.error("training data %s line %d rejected: %s", path, number, error)
                raise TrainingError(f"{path} line {number}: {error}") from None


def train_model(
    features: np.ndarray,
    labels: Sequence[str],
    *,
    trees: int = 60,
    seed: int = 7,
    holdout: float = 0.25,
    progress: bool = True,
) -> tuple[RandomForestClassifier, dict[str, Any]]:
    """Fit a random forest on 1-holdout of the rows and evaluate it on the rest."""
    counts = Counter(labels)
    if BENIGN not in counts or len(counts) < 2:
        raise TrainingError(f"need benign rows and at least one attack class, got {dict(counts)}")
    rare = [label for label, n in counts.items() if n < 2]
    if rare:
        raise TrainingError(f"classes with fewer than 2 rows cannot be held out: {rare}")
    x_train, x_test, y_train, y_test = train_test_split(
        features, np.asarray(labels), test_size=holdout, stratify=labels, random_state=seed
    )
    # Trees are added in steps (warm_start) so the progress bar moves with the real work.
    model = RandomForestClassifier(
        n_estimators=0, warm_start=True, min_samples_leaf=1, n_jobs=1, random_state=seed
    )
    step = max(1, trees // 10)
    with tqdm(total=trees, desc="training trees", disable=not progress, unit="tree") as bar:
        while model.n_estimators < trees:
            model.n_estimators = min(trees, model.n_estimators + step)
            model.fit(x_train, y_train)
            bar.update(model.n_estimators - bar.n)
    return model, evaluate(model, x_test, y_test)


def evaluate(model: Any, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """Per-class precision/recall/F1 and confusion matrices, fine and benign/attack."""
    predicted = model.predict(x_test)
    report = {"test_rows": int(len(y_test)), "fine": _scores(y_test, predicted)}
    coarse_true = np.where(y_test == BENIGN, BENIGN, "attack")
    coarse_pred = np.where(predicted == BENIGN, BENIGN, "attack")
    report["coarse"] = _scores(coarse_true, coarse_pred)
    return report


def _scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    classes = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    return {
        "classes": classes,
        "per_class": {
            name: {
                "precision": round(float(p), 4),
                "recall": round(float(r), 4),
                "f1": round(float(f), 4),
                "support": int(s),
            }
            for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
        "accuracy": round(float((y_true == y_pred).mean()), 4),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }


def save_model(
    model: Any, report: dict[str, Any], path: Path, *, source: str, labels: Iterable[str]
) -> str:
    """Save the model (joblib, atomically) and its evaluation JSON; return the version."""
    digest = hashlib.sha256(joblib.hash(model).encode()).hexdigest()[:10]
    version = f"rf-{time.strftime('%Y%m%d', time.gmtime())}-{digest}"
    meta = {
        "version": version,
        "classes": [str(c) for c in model.classes_],
        "feature_names": list(FEATURE_NAMES),
        "trained_at": time.time(),
        "source": source,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(
        path, lambda handle: joblib.dump({"estimator": model, "meta": meta}, handle, compress=3)
    )
    report = {**report, "model_version": version, "source": source, "rows": dict(Counter(labels))}
    report_path = evaluation_path(path)
    write_atomically(report_path, (json.dumps(report, indent=2) + "\n").encode())
    return version


def evaluation_path(model_path: Path) -> Path:
    """Where the held-out evaluation of a model is saved: model.joblib -> model.eval.json."""
    return model_path.with_suffix(".eval.json")


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of an evaluation, for the CLI."""
    lines: list[str] = []
    for level in ("fine", "coarse"):
        scores = report[level]
        lines.append(f"{level} classes (accuracy {scores['accuracy']:.4f}):")
        lines.append(f"  {'class':<18}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}")
        for name, row in scores["per_class"].items():
            lines.append(
                f"  {name:<18}{row['precision']:>10.3f}{row['recall']:>8.3f}"
                f"{row['f1']:>8.3f}{row['support']:>9}"
            )
        lines.append("  confusion (rows = true, columns = predicted, order as above):")
        lines.extend(
            "    " + " ".join(f"{n:>6}" for n in row) for row in scores["confusion_matrix"]
        )
    return "\n".join(lines)
