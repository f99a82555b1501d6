"""The classifier: verdicts per flow, the unknown threshold, model file errors."""

from __future__ import annotations

from pathlib import Path

import joblib
import msgspec
import pytest

from netmon.app.analysis.classifier import Classifier, ModelError
from netmon.storage.contract.events import FlowFeatures, FlowObserved


def test_flow_classified_carries_the_flow_id_branch_agent_and_model_version(
    default_model: Path, corpus_flows: list[FlowObserved]
) -> None:
    classifier = Classifier(default_model)
    flows = [msgspec.structs.replace(f, branch="paris", agent_id="a-7") for f in corpus_flows[:50]]
    verdicts = classifier.classify(flows, now=1_800_000_000.0)
    assert [v.flow_id for v in verdicts] == [f.id for f in flows]
    assert {v.branch for v in verdicts} == {"paris"}
    assert {v.agent_id for v in verdicts} == {"a-7"}
    assert {v.model_version for v in verdicts} == {classifier.version}
    assert len({v.id for v in verdicts}) == 50
    for verdict in verdicts:
        if verdict.label == "benign":
            assert verdict.attack_type == ""
        if verdict.label == "attack":
            assert verdict.attack_type in classifier.meta.classes


def test_unknown_exactly_when_the_top_probability_is_under_the_threshold(
    default_model: Path, corpus_flows: list[FlowObserved]
) -> None:
    odd = FlowObserved(  # one tiny UDP packet with nothing like it in the corpus
        id="x",
        ts=1.0,
        branch="b",
        agent_id="a",
        first_seen=1.0,
        last_seen=1.0,
        src_ip="10.0.0.1",
        src_port=5,
        dst_ip="10.0.0.2",
        dst_port=7,
        protocol=17,
        src2dst_packets=1,
        src2dst_bytes=43,
        features=FlowFeatures(fwd_pkt_len_max=43.0),
    )
    flows = [*corpus_flows[::7], odd]
    unknown_before: set[int] = set()
    for threshold in (0.5, 0.9, 0.99, 1.0):
        verdicts = Classifier(default_model, threshold=threshold).predict(flows)
        unknown = {i for i, (label, _, score) in enumerate(verdicts) if label == "unknown"}
        assert unknown == {i for i, (_, _, score) in enumerate(verdicts) if score < threshold}
        assert unknown >= unknown_before  # a higher threshold never makes a flow more certain
        unknown_before = unknown
    assert unknown_before, "at threshold 1.0 some flow must be uncertain"


def test_a_batch_is_labelled_like_the_same_flows_one_by_one(
    default_model: Path, corpus_flows: list[FlowObserved]
) -> None:
    # The context carries over from one call to the next, so how the worker cuts its batches
    # does not change a verdict.
    flows = corpus_flows[:300]
    batch = Classifier(default_model).predict(flows)
    one_by_one = Classifier(default_model)
    assert [one_by_one.predict([flow])[0] for flow in flows] == batch


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "model file not found"),
        (b"garbage", "cannot be read"),
        ("dict", "not a Netmon model"),
    ],
)
def test_bad_model_files_are_clear_errors(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "m.joblib"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "dict":
        joblib.dump({"something": 1}, path)
    with pytest.raises(ModelError, match=message):
        Classifier(path)


def test_a_model_for_other_features_is_refused(default_model: Path, tmp_path: Path) -> None:
    bundle = joblib.load(default_model)
    bundle["meta"]["feature_names"] = bundle["meta"]["feature_names"][:-1]
    path = tmp_path / "old.joblib"
    joblib.dump(bundle, path)
    with pytest.raises(ModelError, match="other features"):
        Classifier(path)


def test_threshold_outside_zero_one_is_refused(default_model: Path) -> None:
    with pytest.raises(ModelError, match="threshold"):
        Classifier(default_model, threshold=1.5)
