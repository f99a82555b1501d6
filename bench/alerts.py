"""Alert projection benchmark: read latency and fold cost with few and with many alerts stored.

    .venv/bin/python bench/alerts.py                       # 1,000 and 100,000 alerts
    .venv/bin/python bench/alerts.py --alerts 1000 20000 --runs 50

For each size a fresh store (app/projections/alert_store.py) folds a generated alert history
(tests/app/alert_events.py: each alert opened, updated a few times, some acknowledged, assigned,
noted, resolved; two branches) in batches of 1,000 as the live feed
delivers them, then times what the Alerts page and the API ask it (median and p99 of ``--runs``):
the first page of the work queue, the 10th page through cursors, a filtered page, one branch's
page, one alert by id, the counts. Fold cost is per alert event; "flows skipped" is the cost per
flow of a batch of 1,000 flows, which the store passes over by type.

The last column is the ratio of the large store's figure to the small one's: flat cost means a
ratio near 1. Reads never touch the log, so the log's size (10M events or more) does not enter:
what grows is the number of alerts, which is what is measured here.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from netmon.app.projections.alert_queries import AlertQuery  # noqa: E402
from netmon.app.projections.alert_store import AlertStore  # noqa: E402
from tests.app.alert_events import lifecycle, suppressed  # noqa: E402  (the repository root is on the path)
from tests.live.factory import flow  # noqa: E402

START = 1_796_000_000.0
BATCH = 1_000


def build(root: Path, alerts: int) -> tuple[AlertStore, float, float]:
    """A store holding ``alerts`` alerts; (store, µs per alert event folded, ns per flow)."""
    # Suppressions are timed on their own (``suppress_rule``): a rule-wide one touches every
    # unresolved alert of its rule, which a history with one every few alerts would repeat.
    events = lifecycle(START, alerts, branches=("hq", "lab"), suppress_every=0)
    store = AlertStore.open(root / f"alerts-{alerts}.sqlite", root)
    started = time.perf_counter()
    for number, first in enumerate(range(0, len(events), BATCH)):
        store.apply(events[first : first + BATCH], {"bench": number})
    fold_us = (time.perf_counter() - started) / len(events) * 1e6
    flows = [flow(START + i, "hq") for i in range(BATCH)]
    started = time.perf_counter()
    for number in range(200):
        store.apply(flows, {"bench": len(events) + number})
    skip_ns = (time.perf_counter() - started) / (200 * BATCH) * 1e9
    return store, fold_us, skip_ns


def suppress_rule(store: AlertStore, alerts: int) -> tuple[float, int]:
    """(ms, alerts it names) of one suppression of a whole rule in one branch."""
    ts = START + alerts * 7.0
    named = store._read(
        "SELECT COUNT(*) FROM alerts WHERE branch = 'hq' AND rule = 'beaconing' "
        "AND state != 'resolved'"
    ).fetchone()[0]
    started = time.perf_counter()
    store.apply([suppressed(ts, ts + 3600, rule="beaconing", entity="*")], {"bench": -1})
    return (time.perf_counter() - started) * 1000, named


def timed(action: Callable[[], object], runs: int) -> tuple[float, float]:
    """(median, p99) in milliseconds, after two warm-up calls."""
    action()
    action()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def tenth_page(store: AlertStore, now: float) -> object:
    cursor = ""
    for _ in range(10):
        page = store.page(AlertQuery(state="any", sort="last_seen", cursor=cursor), now)
        cursor = page.next_cursor or ""
    return page


def measure(store: AlertStore, alerts: int, runs: int) -> dict[str, tuple[float, float]]:
    now = START + alerts * 7.0 + 60
    rng = random.Random(1)
    queue = AlertQuery(state="unresolved", sort="severity")
    return {
        "work queue, first page": timed(lambda: store.page(queue, now), runs),
        "10th page (cursor)": timed(lambda: tenth_page(store, now), max(5, runs // 10)),
        "rule + severity filter": timed(
            lambda: store.page(AlertQuery(rule="beaconing", min_severity="medium"), now), runs
        ),
        "one branch, by count": timed(
            lambda: store.page(AlertQuery(branches=("lab",), sort="count"), now), runs
        ),
        "one alert by id": timed(lambda: store.get(f"al{rng.randrange(alerts):06d}"), runs),
        "counts": timed(lambda: store.counts(None, now), runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, nargs=2, default=[1_000, 100_000])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    small_n, large_n = args.alerts
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"building {small_n:,} and {large_n:,} alerts ...", flush=True)
        small, small_fold, small_skip = build(root, small_n)
        large, large_fold, large_skip = build(root, large_n)
        size = (root / f"alerts-{large_n}.sqlite").stat().st_size
        print(f"store file with {large_n:,} alerts: {size / 1e6:.1f} MB\n")
        small_times = measure(small, small_n, args.runs)
        large_times = measure(large, large_n, args.runs)
        print(f"{'read':28} {small_n:>9,} p50/p99 ms {large_n:>10,} p50/p99 ms   ratio p50")
        for name, (p50, p99) in small_times.items():
            big50, big99 = large_times[name]
            print(f"{name:28} {p50:9.3f} / {p99:7.3f} {big50:11.3f} / {big99:7.3f}", end="")
            print(f"   {big50 / p50:6.2f}")
        print(f"\n{'write':28} {small_n:>21,} {large_n:>22,}   ratio")
        rows = [
            ("fold, µs per alert event", small_fold, large_fold),
            ("flows skipped, ns per flow", small_skip, large_skip),
        ]
        for name, small_value, large_value in rows:
            ratio = large_value / small_value
            print(f"{name:28} {small_value:21.1f} {large_value:22.1f}   {ratio:5.2f}")
        small_ms, small_named = suppress_rule(small, small_n)
        large_ms, large_named = suppress_rule(large, large_n)
        print(
            f"{'a rule-wide suppression, ms':28} {small_ms:21.1f} {large_ms:22.1f}   "
            f"{large_ms / small_ms:5.2f}   ({small_named:,} and {large_named:,} alerts named)"
        )
        small.close()
        large.close()


if __name__ == "__main__":
    main()
