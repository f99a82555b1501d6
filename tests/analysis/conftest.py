"""Analysis fixtures: the generated corpus and the default model, built once per test run."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from netmon.app.analysis.corpus.build import build_default_model
from netmon.app.analysis.training import LabelledFlow
from netmon.storage.contract.events import FlowObserved


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the default model's corpus (pcaps + labelled.jsonl) and model.joblib are kept."""
    root = tmp_path_factory.mktemp("corpus")
    build_default_model(root / "model.joblib", keep=root, progress=False)
    return root


@pytest.fixture(scope="session")
def default_model(corpus_dir: Path) -> Path:
    """The project's default model, built the way `netmon model build-default` builds it."""
    return corpus_dir / "model.joblib"


@pytest.fixture(scope="session")
def labelled_flows(corpus_dir: Path) -> list[LabelledFlow]:
    """Every labelled flow of the corpus (flows metered by the real agent)."""
    decoder = msgspec.json.Decoder(LabelledFlow)
    lines = (corpus_dir / "labelled.jsonl").read_bytes().splitlines()
    return [decoder.decode(line) for line in lines]


@pytest.fixture(scope="session")
def corpus_flows(labelled_flows: list[LabelledFlow]) -> list[FlowObserved]:
    """Just the flows, in corpus order."""
    return [item.flow for item in labelled_flows]
