"""``netmon model ...``: train a flow classifier, build the default one, evaluate one."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``model`` command group."""
    parser = subparsers.add_parser("model", help="the flow classifier's model")
    commands = parser.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")

    train = commands.add_parser(
        "train", help="train from labelled JSONL or CICFlowMeter/NTLFlowLyzer CSV"
    )
    train.add_argument("files", nargs="+", type=Path, help="labelled .jsonl or .csv files")
    _model_options(train)
    train.add_argument("--trees", type=int, default=60, help="trees in the random forest")
    train.add_argument("--seed", type=int, default=7)
    train.set_defaults(handler=run_train)

    build = commands.add_parser(
        "build-default", help="generate the corpus and train the default model"
    )
    _model_options(build)
    build.add_argument("--seed", type=int, default=7)
    build.add_argument("--no-real-tools", action="store_true", help="crafted traffic only")
    build.add_argument(
        "--captures",
        type=Path,
        help="directory of the real captures (train.json, heldout.json and their pcaps; "
        "default: tests/data/real of this source checkout)",
    )
    build.add_argument(
        "--no-captures", action="store_true", help="generated corpus only, no real captures"
    )
    build.add_argument("--keep-corpus", type=Path, help="keep the pcaps and labelled JSONL here")
    build.set_defaults(handler=run_build_default)

    evaluate = commands.add_parser("evaluate", help="score a model on labelled files")
    evaluate.add_argument("files", nargs="+", type=Path)
    _model_options(evaluate)
    evaluate.set_defaults(handler=run_evaluate)


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file (or NETMON_CONFIG)")
    parser.add_argument("--model", type=Path, help="model file (default: analysis.model_path)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def model_path(settings: Any, override: Path | None) -> Path:
    """The model file: --model, else analysis.model_path, else DATA/analysis/model.joblib."""
    if override is not None:
        return override
    if settings.analysis.model_path:
        return Path(settings.analysis.model_path)
    return Path(settings.store.data_dir) / "analysis" / "model.joblib"


def _settings(args: argparse.Namespace) -> Any:
    # Deferred, as in every handler here: keeps `netmon --help` light (app/cli.py).
    from netmon.app.settings import SettingsError, load_settings

    try:
        return load_settings(args.config)
    except SettingsError as error:
        print(f"netmon model: {error}", file=sys.stderr)
        return None


def run_train(args: argparse.Namespace) -> int:
    """Train, evaluate on the held-out quarter, save model and evaluation."""
    # Deferred: training loads scikit-learn and numpy, which `netmon --help` must not wait for.
    from netmon.app.analysis.training import (
        TrainingError,
        evaluation_path,
        format_report,
        load_labelled,
        save_model,
        train_model,
    )

    settings = _settings(args)
    if settings is None:
        return 2
    target = model_path(settings, args.model)
    try:
        data = load_labelled(args.files)
        model, report = train_model(
            data, trees=args.trees, seed=args.seed, progress=not args.no_progress
        )
    except TrainingError as error:
        print(f"netmon model train: {error}", file=sys.stderr)
        return 2
    source = "trained from " + ", ".join(str(f) for f in args.files)
    version = save_model(model, report, target, source=source, labels=data.labels)
    print(format_report(report))
    print(f"model {version} saved to {target}, evaluation in {evaluation_path(target)}")
    return 0


def run_build_default(args: argparse.Namespace) -> int:
    """Build the default model from the generated corpus and the real captures."""
    # Deferred: the corpus builder loads scapy and scikit-learn; `netmon --help` must not wait.
    from netmon.app.analysis.corpus.build import REAL_CAPTURES, build_default_model
    from netmon.app.analysis.training import TrainingError, evaluation_path, format_report

    settings = _settings(args)
    if settings is None:
        return 2
    target = model_path(settings, args.model)
    captures = None if args.no_captures else (args.captures or REAL_CAPTURES)
    try:
        version = build_default_model(
            target,
            seed=args.seed,
            real_tools=not args.no_real_tools,
            real_captures=captures,
            keep=args.keep_corpus,
            progress=not args.no_progress,
        )
    except TrainingError as error:
        print(f"netmon model build-default: {error}", file=sys.stderr)
        return 2
    print(format_report(json.loads(evaluation_path(target).read_text())))
    print(f"default model {version} saved to {target}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Score an existing model on labelled files (all rows are test rows)."""
    import numpy as np

    # Deferred: training loads scikit-learn, which `netmon --help` must not wait for.
    from netmon.app.analysis.classifier import ModelError, load_model
    from netmon.app.analysis.training import TrainingError, evaluate, format_report, load_labelled

    settings = _settings(args)
    if settings is None:
        return 2
    try:
        estimator, meta = load_model(model_path(settings, args.model))
        data = load_labelled(args.files, meta.context)
    except (ModelError, TrainingError) as error:
        print(f"netmon model evaluate: {error}", file=sys.stderr)
        return 2
    print(f"model {meta.version} ({meta.source})")
    print(format_report(evaluate(estimator, data.features, np.asarray(data.labels))))
    return 0
