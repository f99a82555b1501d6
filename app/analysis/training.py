"""Training: labelled flows (our JSONL or CICFlowMeter / NTLFlowLyzer CSVs) -> a joblib model.

A quarter of the rows (stratified) is held out; the model is scored on it and the evaluation
(per-class precision, recall, F1, confusion matrix, at the fine and at the benign/attack level)
is saved as JSON beside the model. When the rows come from several sources (the generated
corpus, a real capture) the held-out quarter is also scored per source, and a capture never
trained on can be scored as well (``evaluate_flows``): a perfect score on generated traffic is
no evidence, so each is reported apart. The model file is a dict {"estimator", "meta"} so the
classifier can check it was built for the current feature vector.

Labelled JSONL: one ``LabelledFlow`` per line, ``{"label": "benign", "flow": {FlowObserved}}``
where the label is "benign" or the attack type ("portscan", "password_guess", ...). Flows get
their source's context (app/analysis/context.py) as the worker would give it: the flows of each
``capture`` are replayed in ``ts`` order through a fresh tracker.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import joblib
import msgspec
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import precision_recall_fscore_support
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from netmon.app.analysis.classifier import verdicts
from netmon.app.analysis.context import ContextSettings, ContextTracker
from netmon.app.analysis.features import FEATURE_NAMES, csv_row_vector, detect_layout, flow_matrix
from netmon.storage.contract.events import FlowObserved
from netmon.storage.contract.files import write_atomically

log = logging.getLogger(__name__)
BENIGN = "benign"
VERDICT_THRESHOLD = 0.9  # analysis.threshold's default: held-out verdicts are counted at it


class TrainingError(Exception):
    """The training data cannot be used; the message names the file, line and reason."""


class LabelledFlow(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One line of a labelled JSONL file."""

    label: str  # "benign" or an attack type
    flow: FlowObserved
    # The stream the flow was metered in: its context is built from that stream's flows only.
    # "generated/web" and "generated/dns" are two streams of one group, "generated".
    capture: str = ""
    scenario: str = ""  # what produced the flow (a capture's scenario), for per-scenario tables


class Dataset(NamedTuple):
    """Feature rows with their fine label and the group (capture family) each came from."""

    features: np.ndarray
    labels: list[str]
    groups: list[str]


_labelled_decoder = msgspec.json.Decoder(LabelledFlow)


def normalise_label(raw: str) -> str:
    """'BENIGN' -> 'benign', 'DoS Hulk' -> 'dos_hulk' (CSV datasets spell labels freely)."""
    label = "_".join(raw.strip().lower().replace("-", " ").split())
    if not label:
        raise ValueError("empty label")
    return label


def group_of(capture: str) -> str:
    """The group of a capture name: 'generated/web' -> 'generated', 'real-train' -> itself."""
    return capture.partition("/")[0]


def labelled_matrix(
    items: Sequence[LabelledFlow], context: ContextSettings | None = None
) -> np.ndarray:
    """Feature rows of labelled flows (in items order), each with its source's context.

    Every capture is replayed in ts order (stable: equal times keep the file's order) through
    a fresh ContextTracker, which is what the worker's tracker sees in log order.
    """
    settings = context or ContextSettings()
    matrix = np.zeros((len(items), len(FEATURE_NAMES)), dtype=np.float32)
    streams: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        streams[item.capture].append(index)
    for indices in streams.values():
        ordered = sorted(indices, key=lambda i: items[i].flow.ts)
        rows = flow_matrix([items[i].flow for i in ordered], ContextTracker(settings))
        matrix[ordered] = rows
    return matrix


def load_labelled(paths: Sequence[Path], context: ContextSettings | None = None) -> Dataset:
    """Features, fine labels and groups from JSONL and CSV files; raise TrainingError."""
    parts: list[np.ndarray] = []
    labels: list[str] = []
    groups: list[str] = []
    for path in paths:
        if path.suffix.lower() == ".csv":
            rows, file_labels = _read_csv(path)
            parts.append(np.asarray(rows, dtype=np.float32).reshape(-1, len(FEATURE_NAMES)))
            labels += file_labels
            groups += [path.name] * len(file_labels)
        else:
            items = read_labelled_jsonl(path)
            parts.append(labelled_matrix(items, context))
            labels += [item.label for item in items]
            groups += [group_of(item.capture) for item in items]
        log.info("training data: %s rows from %s", len(parts[-1]), path)
    if not labels:
        raise TrainingError("no labelled rows in " + ", ".join(map(str, paths)))
    return Dataset(np.concatenate(parts), labels, groups)


def read_labelled_jsonl(path: Path) -> list[LabelledFlow]:
    """Every LabelledFlow of a JSONL file (labels normalised); raise TrainingError."""
    try:
        handle = path.open("rb")
    except OSError as error:
        raise TrainingError(f"{path}: {error.strerror}") from None
    items: list[LabelledFlow] = []
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
            items.append(
                item if label == item.label else msgspec.structs.replace(item, label=label)
            )
    return items


def _read_csv(path: Path) -> tuple[list[list[float]], list[str]]:
    try:
        handle = path.open(newline="", encoding="utf-8", errors="replace")
    except OSError as error:
        raise TrainingError(f"{path}: {error.strerror}") from None
    rows: list[list[float]] = []
    labels: list[str] = []
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
    return rows, labels


def train_model(
    data: Dataset,
    *,
    trees: int = 60,
    seed: int = 7,
    holdout: float = 0.25,
    progress: bool = True,
    group_titles: Mapping[str, str] | None = None,
) -> tuple[RandomForestClassifier, dict[str, Any]]:
    """Fit a random forest on 1-holdout of the rows and evaluate it on the rest.

    The report's top level scores the whole held-out part; with rows from several groups,
    ``evaluations`` scores each group's share of it apart (titled by ``group_titles``).
    """
    labels = data.labels
    counts = Counter(labels)
    if BENIGN not in counts or len(counts) < 2:
        raise TrainingError(f"need benign rows and at least one attack class, got {dict(counts)}")
    rare = [label for label, n in counts.items() if n < 2]
    if rare:
        raise TrainingError(f"classes with fewer than 2 rows cannot be held out: {rare}")
    x_train, x_test, y_train, y_test, _, g_test = train_test_split(
        data.features,
        np.asarray(labels),
        np.asarray(data.groups),
        test_size=holdout,
        stratify=labels,
        random_state=seed,
    )
    # Trees are added in steps (warm_start) so the progress bar moves with the real work.
    # Half the features at each split rather than sqrt(n): with 60 features, sqrt leaves many
    # splits to incidental ones (a packet length), and on real benign traffic unlike the
    # corpus the trees then disagree: fewer confident verdicts (docs/analysis.md).
    model = RandomForestClassifier(
        n_estimators=0,
        warm_start=True,
        min_samples_leaf=1,
        max_features=0.5,
        n_jobs=1,
        random_state=seed,
    )
    step = max(1, trees // 10)
    with tqdm(total=trees, desc="training trees", disable=not progress, unit="tree") as bar:
        while model.n_estimators < trees:
            model.n_estimators = min(trees, model.n_estimators + step)
            model.fit(x_train, y_train)
            bar.update(model.n_estimators - bar.n)
    report = evaluate(model, x_test, y_test)
    if len(set(g_test.tolist())) > 1:
        titles = group_titles or {}
        report["evaluations"] = [
            {
                "key": group,
                "title": f"{titles.get(group, group)}: held-out quarter",
                "trained_on": True,
                **evaluate(model, x_test[g_test == group], y_test[g_test == group]),
            }
            for group in sorted(set(g_test.tolist()))
        ]
    return model, report


def evaluate(
    model: Any,
    x_test: np.ndarray,
    y_test: np.ndarray,
    scenarios: Sequence[str] | None = None,
    threshold: float = VERDICT_THRESHOLD,
) -> dict[str, Any]:
    """Per-class precision/recall/F1 and confusion matrices, fine and benign/attack; and the
    classifier's verdicts (attack, benign, unknown at ``threshold``) per true class."""
    predicted = model.predict(x_test)
    report: dict[str, Any] = {"test_rows": int(len(y_test)), "fine": _scores(y_test, predicted)}
    coarse_true = np.where(y_test == BENIGN, BENIGN, "attack")
    coarse_pred = np.where(predicted == BENIGN, BENIGN, "attack")
    report["coarse"] = _scores(coarse_true, coarse_pred)
    classes = [str(c) for c in model.classes_]
    if BENIGN in classes and len(y_test):
        found = [label for label, _, _ in verdicts(model.predict_proba(x_test), classes, threshold)]
        truth = y_test.tolist()
        table: dict[str, Any] = {
            "threshold": threshold,
            "by_class": _verdict_table(truth, truth, found),
        }
        if scenarios is not None:
            table["by_scenario"] = _verdict_table(list(scenarios), truth, found)
        report["verdicts"] = table
    return report


def _verdict_table(
    keys: Sequence[str], truth: Sequence[str], found: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per key: the true class, flows, verdict counts and the share labelled right."""
    table: dict[str, dict[str, Any]] = {}
    for key, true, label in zip(keys, truth, found, strict=True):
        row = table.setdefault(
            key, {"truth": true, "flows": 0, "attack": 0, "benign": 0, "unknown": 0}
        )
        row["flows"] += 1
        row[label] += 1
    for row in table.values():
        right = row[BENIGN] if row["truth"] == BENIGN else row["attack"]
        row["right"] = round(right / row["flows"], 4)
    return dict(sorted(table.items()))


def evaluate_flows(
    model: Any,
    items: Sequence[LabelledFlow],
    *,
    key: str,
    title: str,
    context: ContextSettings | None = None,
) -> dict[str, Any]:
    """Score a model on labelled flows it was not trained on (every row is a test row)."""
    x_test = labelled_matrix(items, context)
    y_test = np.asarray([item.label for item in items])
    scenarios = [item.scenario for item in items] if any(i.scenario for i in items) else None
    return {
        "key": key,
        "title": title,
        "trained_on": False,
        **evaluate(model, x_test, y_test, scenarios),
    }


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
        "confusion_matrix": _confusion(y_true, y_pred, classes),
    }


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> list[list[int]]:
    """Rows true, columns predicted (sklearn's confusion_matrix warns on a single class, which
    a held-out capture of one kind legitimately has)."""
    index = {name: i for i, name in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    rows = [index[t] for t in y_true.tolist()]
    columns = [index[p] for p in y_pred.tolist()]
    np.add.at(matrix, (rows, columns), 1)
    return [[int(n) for n in row] for row in matrix]


def save_model(
    model: Any,
    report: dict[str, Any],
    path: Path,
    *,
    source: str,
    labels: Iterable[str],
    context: ContextSettings | None = None,
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
        "context": msgspec.to_builtins(context or ContextSettings()),
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
    """Plain-text tables of an evaluation report, for the CLI: the whole held-out part, then
    each separate evaluation under its title."""
    lines = [f"held-out rows ({report['test_rows']:,}):", *_format_scores(report)]
    for part in report.get("evaluations", ()):
        seen = "trained on the rest of it" if part.get("trained_on") else "never trained on"
        lines += ["", f"{part['title']} ({part['test_rows']:,} rows, {seen}):"]
        lines += _format_scores(part)
    return "\n".join(lines)


def _format_scores(scores_of: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for level in ("fine", "coarse"):
        scores = scores_of[level]
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
    found = scores_of.get("verdicts")
    if found:
        lines += format_verdicts(found)
    return lines


def format_verdicts(found: dict[str, Any]) -> list[str]:
    """The verdict tables (per true class, per scenario when known) as text lines."""
    lines = [f"verdicts at threshold {found['threshold']} (attack / benign / unknown):"]
    for title, table in (("true class", found["by_class"]), ("scenario", found.get("by_scenario"))):
        if not table:
            continue
        lines.append(
            f"  {title:<22}{'truth':<16}{'flows':>6}{'attack':>8}{'benign':>8}{'unknown':>9}"
            f"{'right':>8}"
        )
        lines += [
            f"  {key:<22}{row['truth']:<16}{row['flows']:>6}{row['attack']:>8}{row['benign']:>8}"
            f"{row['unknown']:>9}{row['right']:>8.3f}"
            for key, row in table.items()
        ]
    return lines
