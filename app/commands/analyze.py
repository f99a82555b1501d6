"""``netmon analyze``: run the analysis worker (classify, window, summarise, alert, notify)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from netmon.app.commands.model import model_path

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``analyze`` command."""
    parser = subparsers.add_parser("analyze", help="run the analysis worker over the event log")
    parser.add_argument("--config", type=Path, help="TOML settings file (or NETMON_CONFIG)")
    parser.add_argument("--model", type=Path, help="model file (default: analysis.model_path)")
    parser.add_argument("--once", action="store_true", help="stop once caught up with the log")
    parser.add_argument(
        "--set-key",
        metavar="PROVIDER",
        choices=("openai", "anthropic"),
        help="store PROVIDER's API key (read from stdin), encrypted with server.secret_key",
    )
    parser.set_defaults(handler=run_analyze)


def run_analyze(args: argparse.Namespace) -> int:
    """Build the worker from the settings and run it until interrupted."""
    # Deferred: the worker loads numpy and joblib, which `netmon --help` must not wait for.
    from netmon.app.analysis.channels import NotifyConfigError, channels_from_settings
    from netmon.app.analysis.classifier import Classifier, ModelError
    from netmon.app.analysis.notify import Notifier, RetryPolicy
    from netmon.app.analysis.summaries import (
        KeyStoreError,
        ProviderKeys,
        Summarizer,
        provider_from_settings,
    )
    from netmon.app.analysis.worker import AnalysisWorker
    from netmon.app.settings import SettingsError, load_settings
    from netmon.storage.outbox import Outbox, outbox_path
    from netmon.storage.segments import StoreError

    try:
        settings = load_settings(args.config)
    except SettingsError as error:
        print(f"netmon analyze: {error}", file=sys.stderr)
        return 2
    analysis = settings.analysis
    keys = None
    try:
        if settings.server.secret_key or args.set_key:
            keys = ProviderKeys(settings.data_dir, settings.server.secret_key)
        if args.set_key:
            assert keys is not None
            keys.set(args.set_key, sys.stdin.readline())
            print(f"netmon analyze: {args.set_key} key stored encrypted in {keys.path}")
            return 0
        provider = provider_from_settings(analysis, keys)
        channels = channels_from_settings(analysis)
    except (KeyStoreError, NotifyConfigError) as error:
        print(f"netmon analyze: {error}", file=sys.stderr)
        return 2

    path = model_path(settings, args.model)
    if not path.exists():
        # Only without a model: the corpus builder loads scapy and runs capture tools.
        from netmon.app.analysis.corpus.build import build_default_model

        log.warning("no model at %s: building the default model from the generated corpus", path)
        build_default_model(path)
    try:
        classifier = Classifier(path, analysis.threshold)
    except ModelError as error:
        print(f"netmon analyze: {error}", file=sys.stderr)
        return 2
    notifier = Notifier(
        channels,
        Outbox(outbox_path(settings.data_dir)),
        policy=RetryPolicy.of(analysis),
        min_severity=analysis.notify_min_severity,
    )
    try:
        worker = AnalysisWorker(
            settings, classifier, Summarizer(provider, analysis.llm_timeout_s), notifier
        )
    except (StoreError, RuntimeError) as error:
        print(f"netmon analyze: {error}", file=sys.stderr)
        return 2
    log.info(
        "analyzing %s with model %s (threshold %.2f)",
        settings.data_dir,
        classifier.version,
        analysis.threshold,
    )
    return asyncio.run(_serve(worker, args.once))


async def _serve(worker: Any, once: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await worker.run(stop, once=once)
    stats = worker.stats
    log.info(
        "phases (wall s): read %.2f, classify %.2f, behaviour %.2f, append %.2f, checkpoint %.2f",
        stats.read_s,
        stats.classify_s,
        stats.behaviour_s,
        stats.append_s,
        stats.checkpoint_s,
    )
    log.info(
        "stopped: %d events read, %d flows classified, %d windows, %d alerts opened, %d updated",
        stats.events_read,
        stats.flows_classified,
        stats.windows_summarized,
        stats.alerts_opened,
        stats.alerts_updated,
    )
    return 0
