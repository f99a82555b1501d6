"""The flow classifier: a scikit-learn model (joblib bundle) applied to flows in batches.

The model predicts fine classes ("benign", "portscan", "synflood", ...). The verdict is taken
at the coarse level first: P(attack) is the sum of every attack class, and a flow whose better
of P(benign) and P(attack) is under the threshold is "unknown". Deciding on the coarse level
matters: two attack classes that look alike per flow (a SYN scan and a SYN flood both send one
SYN per flow) split their probability, yet the flow is certainly an attack.

Each flow's features include its source's context in the last minute (app/analysis/context.py):
the Classifier keeps one ContextTracker and feeds it every flow it labels, in the order given,
so it must see the flows in log order (the worker's batches do). That state is transient: a
restarted worker's context refills within one window.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import joblib
import msgspec
import numpy as np

from netmon.app.analysis.context import ContextSettings, ContextTracker
from netmon.app.analysis.features import FEATURE_NAMES, flow_matrix
from netmon.storage.contract.events import FlowClassified, FlowObserved

log = logging.getLogger(__name__)
BENIGN = "benign"


class ModelError(Exception):
    """The model file is missing, unreadable or was built for other features."""


class ModelBundle(msgspec.Struct, frozen=True):
    """What a model file holds besides the estimator (checked on load)."""

    version: str
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    trained_at: float
    source: str
    context: ContextSettings = ContextSettings()  # the window the model was trained with


Verdict = tuple[str, str, float]  # (label, attack_type, score)


def verdicts(proba: np.ndarray, classes: Sequence[str], threshold: float) -> list[Verdict]:
    """Coarse verdicts from fine class probabilities (rows of proba, columns in classes order).

    The better of P(benign) and P(attack) = 1 - P(benign) decides; under the threshold the flow
    is "unknown". Training scores held-out flows with this same function.
    """
    names = np.asarray(classes)
    benign = proba[:, list(classes).index(BENIGN)]
    attack = 1.0 - benign
    top_attack = names[np.where(names != BENIGN, proba, -1.0).argmax(axis=1)]
    results: list[Verdict] = []
    rows = zip(benign.tolist(), attack.tolist(), top_attack.tolist(), strict=True)
    for p_benign, p_attack, kind in rows:
        if p_attack > p_benign:
            label = "attack" if p_attack >= threshold else "unknown"
            results.append((label, str(kind), round(p_attack, 4)))
        else:
            label = BENIGN if p_benign >= threshold else "unknown"
            results.append((label, "", round(p_benign, 4)))
    return results


class Classifier:
    """Loads one model file and labels flows with it, each in its source's context."""

    def __init__(self, model_path: Path, threshold: float = 0.9) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ModelError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.estimator, self.meta = load_model(model_path)
        self._classes = [str(c) for c in self.estimator.classes_]
        if BENIGN not in self._classes:
            raise ModelError(f"{model_path}: the model has no '{BENIGN}' class")
        self.context = ContextTracker(self.meta.context)

    @property
    def version(self) -> str:
        """The model version written into every FlowClassified."""
        return self.meta.version

    def predict(self, flows: Sequence[FlowObserved]) -> list[Verdict]:
        """(label, attack_type, score) per flow, in input order; the flows join the context."""
        if not flows:
            return []
        proba = self.estimator.predict_proba(flow_matrix(flows, self.context))
        return verdicts(proba, self._classes, self.threshold)

    def classify(self, flows: Sequence[FlowObserved], now: float) -> list[FlowClassified]:
        """One FlowClassified per flow (carrying the flow's id, branch and agent)."""
        verdicts = self.predict(flows)
        ids = event_ids(now, len(flows))
        return [
            FlowClassified(
                id=next(ids),
                ts=now,
                branch=flow.branch,
                flow_id=flow.id,
                label=label,  # type: ignore[arg-type]
                score=score,
                model_version=self.meta.version,
                attack_type=kind,
                agent_id=flow.agent_id,
            )
            for flow, (label, kind, score) in zip(flows, verdicts, strict=True)
        ]


def event_ids(now: float, count: int) -> Iterator[str]:
    """count ids in new_event_id's format, drawing the randomness in one call."""
    prefix = f"{int(now * 1000) & 0xFFFF_FFFF_FFFF:012x}"
    noise = os.urandom(10 * count).hex()
    return (prefix + noise[i : i + 20] for i in range(0, 20 * count, 20))


def load_model(path: Path) -> tuple[Any, ModelBundle]:
    """Read a joblib model file written by training.save_model; raise ModelError."""
    try:
        bundle = joblib.load(path)
    except FileNotFoundError:
        raise ModelError(
            f"model file not found: {path} (build it: netmon model build-default)"
        ) from None
    except Exception as error:  # joblib raises many kinds for a corrupt file
        raise ModelError(f"model file {path} cannot be read: {error}") from None
    if not isinstance(bundle, dict) or "estimator" not in bundle or "meta" not in bundle:
        raise ModelError(f"{path} is not a Netmon model file")
    try:
        meta = msgspec.convert(bundle["meta"], ModelBundle)
    except msgspec.ValidationError as error:
        raise ModelError(f"{path} has a damaged description: {error}") from None
    if tuple(meta.feature_names) != FEATURE_NAMES:
        raise ModelError(
            f"{path} was trained on other features ({len(meta.feature_names)} columns, "
            f"this version uses {len(FEATURE_NAMES)}): retrain it with `netmon model train`"
        )
    return bundle["estimator"], meta
